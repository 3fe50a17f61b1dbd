"""No network without a network namespace: a seccomp filter the worker installs on itself.

socket() fails with EACCES for every address family but AF_UNIX (IP, IPv6, netlink, packet,
vsock, ...): no connection out, no listening port, no view of the interfaces. AF_UNIX stays
because torch's DataLoader worker processes pass tensors' file descriptors over it. io_uring is
refused too, since its IORING_OP_SOCKET makes sockets without the socket() system call. The rest
of the system calls are left alone (Docker's own profile already filters them).

The filter is built with libseccomp through pyseccomp (requirements.txt: its ctypes binding,
installable into any interpreter, unlike Debian's python3-seccomp, which serves only the system
python). libseccomp refuses the calls of foreign ABIs (i386, x32) by itself.
"""

import errno
import socket

DENIED = errno.EACCES


def install() -> str:
    """Load the filter on this process and its future threads and children; "" once it holds,
    else why not (pyseccomp or libseccomp missing, seccomp refused by the platform)."""
    return load_filter(lambda seccomp: [
        (seccomp.ERRNO(DENIED), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX)),
        (seccomp.ERRNO(DENIED), "io_uring_setup")])


def load_filter(rules_of) -> str:
    """Load a seccomp filter that allows every call but the rules rules_of(pyseccomp) lists, as
    (action, call, *argument conditions), on this process, its threads (TSYNC, should one exist
    already) and its future children; "" once it holds, else why not."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, AttributeError, TypeError) as error:  # no libseccomp.so.2: ctypes fails
        return f"pyseccomp cannot load libseccomp ({type(error).__name__}: {error})"
    try:
        rules = seccomp.SyscallFilter(seccomp.ALLOW)
        rules.set_attr(seccomp.Attr.CTL_TSYNC, 1)
        for action, call, *conditions in rules_of(seccomp):
            rules.add_rule(action, call, *conditions)
        rules.load()
    except OSError as error:
        return f"the seccomp filter could not be loaded ({error})"
    return ""
