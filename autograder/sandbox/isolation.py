"""How the worker is fenced in on this machine: the unprivileged ids it runs as (when the grader
is root: a uid and gid of its own for each grading, identity.py), the namespaces it gets
(bubblewrap's, with a filesystem of its own: filesystem.py; else unshare's, with the kit hidden;
else none), the command line that sets both up, and the resource limits it starts under."""

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile

from . import filesystem, identity
from .limits import Limits

KIT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker_user():
    """(uid, gid) this grading's worker runs as when we are root (identity.py), else None."""
    drawn = identity.current()
    return (drawn.uid, drawn.gid) if drawn else None


# New network (empty: no interface but a down loopback), IPC (its System V shared memory,
# semaphores and queues die with it), PID (the worker is its init: when it dies the kernel kills
# every process left in it) and mount namespaces, with a /proc of their
# own (no other process, and so no grader command line, is visible). Not root: in a user
# namespace of our own, where the platform allows unprivileged ones.
ROOT_NAMESPACES = ["unshare", "--net", "--ipc", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
USER_NAMESPACES = ["unshare", "--user", "--map-root-user"] + ROOT_NAMESPACES[1:]

# Runs as root of the new namespaces, before privileges are dropped: an empty read-only tmpfs
# over each hidden directory and /dev/null over each hidden file, then exec the rest of argv.
HIDE = ('while [ "$1" != -- ]; do '
        'if [ -d "$1" ]; then mount -t tmpfs -o ro,size=4k,mode=0555 scratch1-hidden "$1" || exit 97; '
        'else mount --bind /dev/null "$1" || exit 97; fi; shift; done; shift; exec "$@"')


def hidden_paths() -> list:
    """Every top-level entry of the kit (reference, grader, hidden tests, data, .git...) except
    those holding the interpreter or its packages when they live inside the kit (a .venv)."""
    needed = [sys.prefix] + [path for path in sys.path if path.endswith(("site-packages", "dist-packages"))]
    keep = {os.path.relpath(path, KIT_ROOT).split(os.sep)[0] for path in needed}
    return [os.path.join(KIT_ROOT, name) for name in sorted(os.listdir(KIT_ROOT))
            if name not in keep and not os.path.islink(os.path.join(KIT_ROOT, name))]


def _privilege_drop() -> list:
    """setpriv down to this grading's worker ids (as root) or to a root without capabilities (in
    our own user namespace), so the worker can neither undo the hiding mounts nor gain privileges."""
    command = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"]
    user = worker_user()
    if user:
        command += [f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups"]
    return command + ["--"]


def _command(program: list, mode: str, sandbox: str) -> list:
    if mode == "bwrap":
        as_root = os.geteuid() == 0  # else bwrap itself leaves the worker no capability
        return filesystem.bwrap_prefix(sandbox, as_root) + (_privilege_drop() if as_root else []) + program
    if mode == "unshare":
        prefix = ROOT_NAMESPACES if os.geteuid() == 0 else USER_NAMESPACES
        return prefix + ["sh", "-c", HIDE, "sh"] + hidden_paths() + ["--"] + _privilege_drop() + program
    if worker_user():
        return _privilege_drop() + program
    return program


# Run by the probe of each mode under it: exit 0 only if the planted file ($1) is unreadable. A
# shell, not python: an interpreter the worker cannot start is the preflight's finding
# (Worker.ensure_loaded), not a platform that refuses namespaces.
PLANTED_UNREADABLE = ["/bin/sh", "-c", '! test -r "$1"', "sh"]


def _probe(mode: str) -> bool:
    """Whether the worker can start under `mode` here, and under bwrap whether a world-readable
    file planted in /tmp is out of its reach (checked, not assumed)."""
    sandbox = tempfile.mkdtemp(prefix="scratch1-probe-")
    planted = tempfile.NamedTemporaryFile(prefix="scratch1-planted-", dir="/tmp")
    try:
        os.makedirs(os.path.join(sandbox, "work"))
        os.chmod(sandbox, 0o755)
        os.chmod(planted.name, 0o644)
        program = PLANTED_UNREADABLE + [planted.name] if mode == "bwrap" else [shutil.which("true") or "/bin/true"]
        probe = subprocess.run(_command(program, mode, sandbox), capture_output=True, timeout=20,
                               cwd=sandbox)
        return probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        planted.close()
        shutil.rmtree(sandbox, ignore_errors=True)


def worker_python() -> str:
    """The worker's interpreter: the grader's own, unless SCRATCH1_WORKER_PYTHON names another
    (the kit's tests use it to simulate a broken worker environment)."""
    return os.environ.get("SCRATCH1_WORKER_PYTHON") or sys.executable


@functools.lru_cache(maxsize=1)
def namespaces() -> str:
    """How the worker is isolated here, the first that works: "bwrap" (bubblewrap: a filesystem
    of its own, see filesystem.py, plus network, PID and mount namespaces), "unshare" (network,
    PID and mount namespaces, the kit hidden, the rest of the filesystem as its permissions
    say), or "" where the platform refuses both (Docker without CAP_SYS_ADMIN, as Gradescope
    may be; no unprivileged user namespaces). SCRATCH1_NAMESPACES=unshare or =none caps it (the
    kit's tests simulate such a platform with it)."""
    cap = os.environ.get("SCRATCH1_NAMESPACES", "bwrap")
    if cap not in ("bwrap", "unshare", "none"):
        raise ValueError(f"SCRATCH1_NAMESPACES must be bwrap, unshare or none (got {cap!r})")
    if cap == "none":
        return ""
    if cap == "bwrap" and filesystem.available() and shutil.which("setpriv") and _probe("bwrap"):
        return "bwrap"
    if shutil.which("unshare") and shutil.which("setpriv") and shutil.which("mount") and _probe("unshare"):
        return "unshare"
    return ""


def worker_command(sandbox: str) -> list:
    """The worker's command line for a sandbox folder: namespaces (and the mounts that make its
    view of the filesystem), dropping privileges, python (in that order: dropping privileges
    first would forbid the namespaces and the mounts)."""
    return _command([worker_python(), "-I", "-B", os.path.join(sandbox, "worker", "__main__.py")],
                    namespaces(), sandbox)


def limit_resources(limits: Limits) -> None:
    """Runs in the child between fork and exec, still as the grader's user; the limits
    survive the exec of unshare/setpriv and bind the worker's ids afterwards (RLIMIT_NPROC
    counts the processes of its uid, this grading's alone)."""
    resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if worker_user():
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    # Should the container run out of memory all the same, the kernel kills the worker
    # first, never the grader (raising one's own score needs no privilege).
    try:
        with open("/proc/self/oom_score_adj", "w") as file:
            file.write("1000")
    except OSError:
        pass
