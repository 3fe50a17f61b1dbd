"""The worker's view of the filesystem under bubblewrap: the interpreter and its libraries
read-only, its sandbox folder, a private /tmp, and nothing else.

bubblewrap (`bwrap`, Debian package `bubblewrap`, the sandbox Flatpak runs applications in)
starts the worker in new mount, PID, network, IPC and UTS namespaces whose root is an empty
tmpfs, and binds into it only the paths listed here. A file planted anywhere else (/tmp, /home,
/srv, another checkout of the kit, the grader's own folder) does not exist for the worker,
whatever its permissions. As root, bwrap creates the namespaces itself and the worker then drops
to the unprivileged user (isolation.py); otherwise it needs unprivileged user namespaces. Docker's
default seccomp profile refuses both to a container without CAP_SYS_ADMIN, which is why
isolation.py keeps the unshare path and, below it, permissions alone.
"""

import os
import shutil

# One list for both views: what bubblewrap binds is what Landlock lets the worker read.
from ..worker.confine.view import SYSTEM, SYSTEM_FILES, interpreter_paths


def available() -> bool:
    return shutil.which("bwrap") is not None


def _inside(path: str, folders) -> bool:
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)


def _folders_above(path: str, made: set) -> list:
    """--dir for each folder above `path` not made yet: bwrap would make them 0700, which the
    worker user could not enter (--dir makes them 0755)."""
    arguments, parts = [], path.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:depth])
        if folder not in made:
            made.add(folder)
            arguments += ["--dir", folder]
    return arguments


def _read_only_binds(made: set) -> list:
    """--ro-bind pairs for the interpreter's folders that the system folders do not cover,
    each bound at its resolved path and, when that differs, at the path sys shows (a venv
    reached through a symlink)."""
    arguments, bound = [], [path for path in SYSTEM if os.path.isdir(path) and not os.path.islink(path)]
    for path in interpreter_paths():
        real = os.path.realpath(path)
        for target in dict.fromkeys((real, os.path.abspath(path))):
            if not _inside(target, bound):
                arguments += _folders_above(target, made) + ["--ro-bind", real, target]
                bound.append(target)
    return arguments


def bwrap_prefix(sandbox: str, as_root: bool) -> list:
    """The bwrap command line that runs a program with only the interpreter, `sandbox` (read-only
    but for its `work` folder, the working directory) and an empty private /tmp visible. Not as
    root, in a user namespace of its own (bwrap then drops every capability itself)."""
    work = os.path.join(sandbox, "work")
    arguments = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--die-with-parent"]
    if not as_root:
        arguments.append("--unshare-user")
    for path in SYSTEM:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    arguments += ["--dir", "/etc"]
    for path in SYSTEM_FILES:
        arguments += ["--ro-bind-try", path, path]
    arguments += ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--tmpfs", "/tmp"]
    made = {"/tmp", "/usr", "/etc"}
    arguments += _read_only_binds(made)
    arguments += _folders_above(sandbox, made)
    arguments += ["--ro-bind", sandbox, sandbox, "--bind", work, work, "--chdir", work, "--"]
    return arguments
