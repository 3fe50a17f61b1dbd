"""What held, measured by the worker in its preflight (before the submission is imported, so
these are the kit's own measurements) and judged by the grader (sandbox/confinement.py)."""

import errno
import socket

from . import INSTALLED, view

# The families a submission would reach the network or the host's interfaces with.
FAMILIES = ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET")


def _outcome(error: OSError) -> str:
    return errno.errorcode.get(error.errno, str(error.errno))


def sockets() -> dict:
    """Each family's socket(): "created", or the errno name it failed with."""
    found = {}
    for name in FAMILIES:
        family = getattr(socket, name, None)
        if family is None:
            continue
        kind = socket.SOCK_RAW if name in ("AF_NETLINK", "AF_PACKET") else socket.SOCK_STREAM
        try:
            socket.socket(family, kind).close()
            found[name] = "created"
        except OSError as error:
            found[name] = _outcome(error)
    return found


def read(path: str) -> str:
    """The first 200 characters of `path` (a file the grader planted), or "error: ERRNO"."""
    try:
        with open(path, errors="replace") as file:
            return file.read(200)
    except OSError as error:
        return f"error: {_outcome(error)}"


def report(planted: str) -> dict:
    """{"installed": {part: "" or why not}, "landlock_abi": int or None, "sockets": sockets(),
    "planted": read(planted) or "" when no file was planted}."""
    try:
        abi = view.abi()
    except OSError:
        abi = None
    return {"installed": dict(INSTALLED), "landlock_abi": abi, "sockets": sockets(),
            "planted": read(planted) if planted else ""}
