"""The worker's view of the filesystem without a mount namespace: Landlock (Linux >= 5.13).

The worker restricts itself, for good: it may read and run the interpreter with its packages,
the system's programs and libraries, the few files of /etc the loader and libc read, /proc,
/sys and /dev, and read its sandbox folder; it may write only its `work` folder (its home and
TMPDIR) and /dev/shm (where torch shares tensors between processes). Anything else (/tmp with
other gradings' folders, /home, /srv, the kit itself) is refused with EACCES whatever its
permissions, also to every process it starts.

Landlock's three system calls through ctypes: the one binding on PyPI (`landlock`) is an
alpha pre-release that judges a call by errno instead of its return value. The paths here are
also those bubblewrap binds (sandbox/filesystem.py), so both views are one list.
"""

import ctypes
import errno
import os
import sys

# The system's programs and shared libraries (merged-/usr systems have symlinks for the others).
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader and libc read: the library cache, time zone, user and group names.
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                "/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
# Kernel interfaces torch and the interpreter read (CPU topology, /proc/self/status) and the
# devices (/dev/null, /dev/urandom); bubblewrap gives the worker fresh ones of each. All of /proc:
# Landlock's rules name the files present when they are made, so a rule for the worker's own
# /proc/<pid> would not cover the processes it starts later (DataLoader workers, the submission's
# children), whose /proc/self would be refused. Without namespaces the command lines of other
# processes stay readable (not their environments or memory: another uid); the grader puts no
# secret on its own unless a TA passes --seed.
KERNEL = ("/proc", "/sys")
DEVICES = "/dev"
SHARED_MEMORY = "/dev/shm"

# Same numbers on every architecture: the calls came after the system call tables were unified.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Access rights (include/uapi/linux/landlock.h): ABI 1 has the first 13; ABI 2 adds REFER
# (moving a file to another folder), ABI 3 TRUNCATE. Those a file (not a folder) can carry:
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE = 1 << 13, 1 << 14
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE
READ = EXECUTE | READ_FILE | READ_DIR


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _call(*args) -> int:
    result = _libc.syscall(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def abi() -> int:
    """The kernel's Landlock ABI version; OSError where it has none (ENOSYS: not built in,
    EOPNOTSUPP: disabled at boot, EPERM: refused by the platform's seccomp profile)."""
    return _call(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)


def interpreter_paths() -> list:
    """Folders of the running interpreter: its prefixes (a venv and the Python it was made
    from), the folder of its executable as given and as resolved, and its package folders."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(path for path in sys.path if path.endswith(("site-packages", "dist-packages")))
    return sorted(path for path in paths if path and os.path.isdir(path))


def _rules(sandbox: str, handled: int) -> list:
    """(path, rights) of everything the worker may reach."""
    read = [(path, READ) for path in SYSTEM + KERNEL + tuple(interpreter_paths()) + (sandbox,)]
    read += [(path, READ_FILE) for path in SYSTEM_FILES]
    return read + [(DEVICES, READ_FILE | WRITE_FILE | READ_DIR | TRUNCATE),
                   (SHARED_MEMORY, handled), (os.path.join(sandbox, "work"), handled)]


def install(sandbox: str) -> str:
    """Restrict this process (and what it starts) to the view above; "" once it holds, else why
    not (no Landlock in this kernel, or refused here)."""
    try:
        version = abi()
    except OSError as error:
        why = {errno.ENOSYS: "this kernel has no Landlock", errno.EOPNOTSUPP: "Landlock is disabled "
               "at boot", errno.EPERM: "the platform's seccomp profile refuses Landlock"}
        return why.get(error.errno, f"Landlock unavailable ({error})")
    handled = (1 << 13) - 1 | (REFER if version >= 2 else 0) | (TRUNCATE if version >= 3 else 0)
    try:
        ruleset = _call(_CREATE_RULESET, ctypes.byref(_RulesetAttr(handled)),
                        ctypes.sizeof(_RulesetAttr), 0)
        try:
            for path, rights in _rules(sandbox, handled):
                try:
                    target = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:  # not on this system (/lib32, ...)
                    continue
                try:
                    if not os.path.isdir(path):
                        rights &= FILE_RIGHTS
                    rule = _PathBeneathAttr(rights & handled, target)
                    _call(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
                finally:
                    os.close(target)
            if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
            _call(_RESTRICT_SELF, ruleset, 0)
        finally:
            os.close(ruleset)
    except OSError as error:
        return f"the Landlock rules could not be applied ({error})"
    return ""
