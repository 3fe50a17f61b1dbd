"""Where student code runs: a worker process behind the trust boundary, and the grader's handle on it.

`Worker` copies the worker package, the submission and the kit's generate_data.py into a fresh
sandbox directory, starts `python -I -B worker/__main__.py` there with a scrubbed environment,
resource limits (memory sized to the container, memory.py), (as root) an unprivileged user and,
where the platform allows, namespaces of its own (bubblewrap's, with a filesystem of its own:
filesystem.py; else unshare's), and exchanges frames with it (protocol.py). A request that
ends with the worker at its memory limit, or an OOM kill, fails with a memory message and a
fresh worker for the next check. Time is bounded three ways: each check has
a wall-clock limit for all of its requests, a grading stops waiting for checks once timeouts
have cost `timeout_budget` seconds, and the worker gets `total_seconds` in all. On a timeout,
crash or malformed reply every process of the worker is killed, the call raises WorkerFailure,
and the next call starts a fresh worker that imports the submission again. What the student's
code prints is captured and truncated.
"""

import functools
import os
import pwd
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from . import filesystem, memory
from .worker import protocol

KIT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_PACKAGE = os.path.join(KIT_ROOT, "autograder", "worker")
GENERATE_DATA = os.path.join(KIT_ROOT, "student", "generate_data.py")
TEMPLATE = os.path.join(KIT_ROOT, "student", "backbone.py")
SECRETS = (os.path.join(KIT_ROOT, "reference", "backbone.py"),
           os.path.join(KIT_ROOT, "autograder", "checks", "test_attention.py"))
WORKER_USER = "scratch1-worker"
# glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, which then only
# grows: with tensors above 4 MB mapped and unmapped instead, the reference's peak data size in
# the worker drops from ~390 to ~300 MB at no measurable cost in time (see rubric.WORKER).
# A fixed mmap threshold also fixes the trim threshold at 128 kB: each training step's freed
# activations were handed back to the kernel and faulted in again by the next step. Keeping up to
# 32 MB of free heap halves the reference's page faults (130k to 70k), ~0.4 CPU-s per grading,
# for 10 MB more data size after a request and the same peak (bench/SPEED.md).
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20)}


@dataclass
class Limits:
    memory_bytes: int
    cpu_seconds: int
    file_bytes: int
    processes: int
    output_chars: int
    reply_bytes: int
    total_seconds: float
    timeout_budget: float
    memory_margin_bytes: int = 0
    memory_source: str = ""  # how memory_bytes was sized, for the report

    @classmethod
    def sized(cls, settings: dict) -> "Limits":
        """rubric.WORKER's limits, the memory limit sized to this container (memory.py)."""
        fields = {name: value for name, value in settings.items() if name in cls.__dataclass_fields__}
        fields["memory_bytes"], fields["memory_source"] = memory.worker_limit(
            settings["memory_bytes"], settings["grader_memory_bytes"])
        return cls(**fields)


@dataclass
class Reply:
    result: dict
    notes: list = field(default_factory=list)


class WorkerFailure(Exception):
    """The worker did not answer: timeout, crash, memory exhaustion, a malformed frame, or the
    time budget was used up before the request was sent ("budget")."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class GraderError(Exception):
    """The worker refused a request as malformed (no such op, arguments that do not fit it): a
    bug of the grader's own checks, never the student's. Carries the worker's error record."""

    def __init__(self, error: dict):
        super().__init__(f"the worker refused the grader's request: {error.get('message', '')}")
        self.error = error


class StudentError(Exception):
    """The worker answered, but the student's code raised: carries the worker's error record."""

    def __init__(self, error: dict, notes: list):
        super().__init__(error.get("message", ""))
        self.error = error
        self.notes = notes


class WorkerStartError(Exception):
    """A fresh worker failed its preflight, before any student code ran: it could not start, or
    could not import torch under its limits. The grader's environment is broken: an internal
    error of the grader for the TA (the whole grading), never the student's fault."""


# -- isolation available on this machine ----------------------------------------------------------

def worker_user():
    """(uid, gid) of the unprivileged worker user when we are root and it exists, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(WORKER_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


# New network (empty: no interface but a down loopback), PID (the worker is its init: when it
# dies the kernel kills every process left in it) and mount namespaces, with a /proc of their
# own (no other process, and so no grader command line, is visible). Not root: in a user
# namespace of our own, where the platform allows unprivileged ones.
ROOT_NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
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
    """setpriv down to the worker user (as root) or to a root without capabilities (in our own
    user namespace), so the worker can neither undo the hiding mounts nor gain privileges."""
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
    may be; no unprivileged user namespaces)."""
    if filesystem.available() and shutil.which("setpriv") and _probe("bwrap"):
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


def _readable_by_others(path: str) -> bool:
    """Whether a user outside the file's owner and group can read `path` (the worker user's
    view of a root-owned kit)."""
    parts = os.path.abspath(path).split(os.sep)
    try:
        for depth in range(2, len(parts)):
            if not os.stat(os.sep.join(parts[:depth])).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def protections(limits: Limits) -> list:
    """What isolation is active here, in words, for the run's report (checked, not assumed)."""
    user, spaces = worker_user(), namespaces()
    active = [
        "separate worker process with a scrubbed environment and an empty working directory",
        f"time limits: each check's requests (per the rubric), {limits.total_seconds:g} s for "
        f"the worker in all, remaining checks skipped after {limits.timeout_budget:g} s lost to "
        "timeouts; every process of the worker killed on a timeout",
        f"memory limit {limits.memory_source or f'{limits.memory_bytes // 2**20} MB'}, "
        f"CPU limit {limits.cpu_seconds} s, "
        f"file size limit {limits.file_bytes // 2**20} MB, replies above "
        f"{limits.reply_bytes // 2**20} MB refused",
        f"worker output captured and cut to {limits.output_chars} characters",
        "results.json written only by the grader, after every worker process is gone",
    ]
    if user:
        active.append(f"runs as the unprivileged user {WORKER_USER}, "
                      f"limited to {limits.processes} processes")
    else:
        active.append(f"NOT dropped to an unprivileged user ({WORKER_USER} unavailable or not "
                      "root): the worker can write what this user can write")
    if spaces:
        active.append("network blocked, forked children contained and /proc private "
                      f"(network, PID and mount namespaces{', by bubblewrap' if spaces == 'bwrap' else ''}"
                      + ("" if user else ", in a user namespace") + ")")
    elif user:
        active.append("network NOT blocked (namespaces refused by the platform); forked "
                      f"children killed with every process of {WORKER_USER}")
    else:
        active.append("network NOT blocked and forked children only killed by process group "
                      "(no namespaces available without root here)")
    if spaces == "bwrap":
        active.append("the kit (reference, grader, hidden tests) hidden from the worker, and the "
                      "rest of the filesystem too: it sees only the interpreter and its libraries "
                      "(read-only), its sandbox folder and a private /tmp (checked: a "
                      "world-readable file planted in /tmp is out of its reach)")
    elif spaces:
        active.append("the kit (reference, grader, hidden tests) hidden from the worker; the "
                      "rest of the filesystem (/tmp, /home...) readable where its permissions "
                      "allow (bubblewrap unavailable or refused here)")
    elif user and not any(_readable_by_others(path) for path in SECRETS):
        active.append(f"the kit (reference, grader, hidden tests) unreadable to {WORKER_USER}")
    else:
        active.append("the kit's reference and hidden tests are READABLE by the worker")
    return active


# -- the worker process ---------------------------------------------------------------------------

class _OutputTail(threading.Thread):
    """Drains the worker's stderr so it can never block, keeping the first `limit` characters.
    It polls, so that `finish` ends it even while a stray process still holds the pipe open."""

    def __init__(self, fd: int, limit: int):
        super().__init__(daemon=True)
        self.fd, self.limit = fd, limit
        self.chunks, self.kept, self.dropped = [], 0, 0
        self.finishing = threading.Event()

    def run(self):
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            while True:
                if not selector.select(0.1):
                    if self.finishing.is_set():
                        return
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return
                room = self.limit - self.kept
                if room > 0:
                    self.chunks.append(chunk[:room])
                    self.kept += min(room, len(chunk))
                self.dropped += max(0, len(chunk) - max(room, 0))

    def finish(self) -> None:
        self.finishing.set()
        self.join(timeout=5)

    def text(self) -> str:
        text = b"".join(self.chunks).decode("utf-8", "replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes of output cut]"
        return text


def _children(pid: int) -> list:
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _kill_every_process_of(uid: int, gid: int) -> None:
    """kill(-1) as the worker user: one system call that reaches all its processes, even ones a
    fork bomb is creating, and works when the user is at its process limit (no exec needed)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


class Worker:
    def __init__(self, submission_file: str, limits: Limits, import_timeout: float,
                 start_timeout: float):
        self.submission_file = submission_file
        self.limits = limits
        self.import_timeout = import_timeout
        self.start_timeout = start_timeout
        self.start_error = None  # a WorkerStartError once a worker failed its preflight
        self.ready = None  # the first preflight's reply: python, torch, its build (for the TA)
        self.process = None
        self.sandbox = None
        self.output = None
        self.load_reply = None
        self.logs = []
        self.restarts = 0
        self.deadline = time.monotonic() + limits.total_seconds
        self.check = None  # the running check (a rubric rule), its time limit, when its clock started
        self.check_seconds = None
        self.check_start = None
        self.timeouts = 0  # checks that ran out of time, and the seconds they cost
        self.timed_out_seconds = 0.0
        self.oom_kills = None  # the cgroup's OOM-kill count when the worker started
        self.out_of_memory = False  # the submission ran out of memory in the running worker

    # -- lifecycle ---------------------------------------------------------------------------

    def _prepare_sandbox(self) -> str:
        sandbox = tempfile.mkdtemp(prefix="scratch1-worker-")
        shutil.copytree(WORKER_PACKAGE, os.path.join(sandbox, "worker"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.makedirs(os.path.join(sandbox, "submission"))
        os.makedirs(os.path.join(sandbox, "work"))
        shutil.copy(self.submission_file, os.path.join(sandbox, "submission", "backbone.py"))
        shutil.copy(GENERATE_DATA, os.path.join(sandbox, "submission", "generate_data.py"))
        # the template's provided code, for worker/known_good.py (public: students have it)
        shutil.copy(TEMPLATE, os.path.join(sandbox, "worker", "template_backbone.py"))
        user = worker_user()
        for directory, _dirs, files in os.walk(sandbox):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        if user:
            os.chown(os.path.join(sandbox, "work"), *user)
        return sandbox

    def _limit_resources(self):
        """Runs in the child between fork and exec, still as the grader's user; the limits
        survive the exec of unshare/setpriv and bind the worker user afterwards."""
        limits = self.limits
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

    def start(self) -> None:
        self.sandbox = self._prepare_sandbox()
        work = os.path.join(self.sandbox, "work")
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
            "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **MALLOC_ENVIRONMENT,
        }
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if name in os.environ:
                environment[name] = os.environ[name]
        self.oom_kills = memory.oom_kills()
        self.process = subprocess.Popen(
            worker_command(self.sandbox),
            cwd=work, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=self._limit_resources,
        )
        os.set_blocking(self.process.stdin.fileno(), False)  # writes get deadlines too
        self.output = _OutputTail(self.process.stderr.fileno(), self.limits.output_chars)
        self.output.start()

    def stop(self) -> None:
        """Kill every process of the worker, then collect its output. Never blocks for long:
        the pipes are closed even if something the submission started still holds them."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # The worker's own process first (with namespaces, the init of its PID namespace,
            # whose death takes everything in it): it may have left the process group.
            for pid in [self.process.pid] + _children(self.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self._kill_stragglers()
        self.output.finish()
        self.logs.append(self.output.text())
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:  # a request left half-written in the pipe
                pass
        shutil.rmtree(self.sandbox, ignore_errors=True)
        self.process = None
        self.out_of_memory = False

    def _kill_stragglers(self) -> None:
        """Children that left the process group (setsid). In a PID namespace the kernel has
        killed them already; without one, as root, every process of the worker user goes
        (which assumes one grading at a time, as on Gradescope)."""
        user = worker_user()
        if user and not namespaces():
            _kill_every_process_of(*user)

    # -- time ----------------------------------------------------------------------------------

    def begin_check(self, name: str, seconds: float) -> None:
        """A check (one rubric rule: the cases of a parametrized test run one after the other)
        starts or goes on: all its requests share `seconds`, counted from its first request.
        The first check of another component ("file::" of the name) gets a fresh worker when the
        submission ran out of memory in this one: it may still hold what it allocated (in a
        global), which must not fail the checks of another category."""
        if name != self.check:
            if self.out_of_memory and str(name).split("::")[0] != str(self.check).split("::")[0]:
                self.stop()
            self.check, self.check_seconds, self.check_start = name, seconds, None

    def _refuse_when_out_of_time(self) -> None:
        if self.timed_out_seconds >= self.limits.timeout_budget:
            raise WorkerFailure(
                "budget", f"not run: your code exceeded the time limit in {self.timeouts} earlier "
                f"checks ({self.timed_out_seconds:.0f} s in all), so the remaining checks are "
                "skipped to finish grading in time; fix the endless or far too slow code first")
        if time.monotonic() >= self.deadline:
            raise WorkerFailure(
                "budget", f"not run: your code used up the {self.limits.total_seconds:g} s it "
                f"gets for the whole grading ({self.timeouts} checks timed out); the remaining "
                "checks are skipped")

    def _request_limit(self, timeout: float):
        """(seconds to wait, what the limit is) for the next request of the running check."""
        now = time.monotonic()
        if self.check_seconds is None:  # a request outside any check (tools, tests)
            limit, what = timeout, f"the time limit of {timeout:g} s"
        else:
            if self.check_start is None:
                self.check_start = now
            limit = self.check_start + self.check_seconds - now
            what = f"this check's time limit of {self.check_seconds:g} s"
            if limit <= 0:
                raise WorkerFailure("budget", f"not run: the earlier cases of this check used up "
                                              f"its time limit of {self.check_seconds:g} s")
        allowance = self.limits.timeout_budget - self.timed_out_seconds
        if self.timeouts and allowance < limit:
            limit, what = allowance, (f"the {allowance:.0f} s left of the grading's "
                                      f"{self.limits.timeout_budget:g} s allowance for timeouts "
                                      f"({self.timeouts} earlier checks timed out)")
        if self.deadline - now < limit:
            limit, what = self.deadline - now, (f"the {self.limits.total_seconds:g} s your code "
                                                "gets for the whole grading")
        return max(limit, 0.0), what

    # -- requests ----------------------------------------------------------------------------

    def _exchange(self, request: dict, timeout: float, what: str):
        started = time.monotonic()
        deadline = started + timeout
        self._write(protocol.encode(request), deadline, started, what)
        header = self._read(protocol.HEADER_BYTES, deadline, started, what)
        try:
            length = protocol.decode_length(header)
            if length > self.limits.reply_bytes:
                raise protocol.ProtocolError(f"a reply of {length / 2**20:.0f} MB, above the "
                                             f"{self.limits.reply_bytes // 2**20} MB limit")
            return protocol.decode(self._read(length, deadline, started, what))
        except protocol.ProtocolError as error:
            self.stop()
            raise WorkerFailure("protocol", f"the worker sent a malformed reply ({error})")

    def _timed_out(self, started: float, what: str):
        self.stop()
        self.timeouts += 1
        self.timed_out_seconds += time.monotonic() - started
        raise WorkerFailure("timeout", f"no answer within {what} (an infinite loop, a sleep, or "
                                       "far too slow code)")

    def _write(self, data: bytes, deadline: float, started: float, what: str) -> None:
        fd = self.process.stdin.fileno()
        view = memoryview(data)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_WRITE)
            while view:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self._timed_out(started, what)  # the worker stopped reading its requests
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except OSError:  # the worker is gone (EPIPE)
                    self._died()

    def _read(self, count: int, deadline: float, started: float, what: str) -> bytes:
        fd = self.process.stdout.fileno()
        chunks, remaining = [], count
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self._timed_out(started, what)
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    self._died()
                chunks.append(chunk)
                remaining -= len(chunk)
        return b"".join(chunks)

    def _memory_limit_text(self) -> str:
        return (f"while it is graded, your code may use at most {self.limits.memory_bytes // 2**20} "
                "MB of memory, torch's own ~250 MB included")

    def _died(self):
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:  # it closed its end of the pipes but lives on
            self.stop()
            raise WorkerFailure("crash", "the worker process closed its connection to the grader")
        self.stop()
        kills = memory.oom_kills()
        if kills is not None and self.oom_kills is not None and kills > self.oom_kills:
            # the kernel's own record: a SIGKILL (seen as such, or as the exit status unshare
            # or setpriv turn it into) while the container's memory was used up
            raise WorkerFailure("memory", "your code ran out of memory: the kernel's out-of-memory "
                                          "killer stopped the worker when the container's memory "
                                          f"was used up ({self._memory_limit_text()})")
        if code < 0:
            name = signal.Signals(-code).name
            hint = {"SIGKILL": " (killed: memory exhausted or a limit hit)",
                    "SIGXCPU": " (CPU time limit exceeded)",
                    "SIGXFSZ": " (file size limit exceeded)"}.get(name, "")
            raise WorkerFailure("crash", f"the worker process was killed by {name}{hint}")
        raise WorkerFailure("crash", f"the worker process ended with status {code}: os._exit "
                                     "or sys.exit in a thread of the submission, a crash, or a "
                                     f"resource limit (CPU {self.limits.cpu_seconds} s, memory "
                                     f"{self.limits.memory_bytes // 2**20} MB)")

    def ensure_loaded(self) -> dict:
        """Start the worker if needed and import the submission; returns the load op's reply.

        A failed import is remembered, so a submission that hangs or exits at import costs the
        import timeout once, not once per test.
        """
        if self.start_error is not None:
            raise self.start_error
        if isinstance(self.load_reply, WorkerFailure):
            raise self.load_reply
        if self.process is None:
            self._refuse_when_out_of_time()
            if self.load_reply is not None:
                self.restarts += 1
            self.start()
            self._preflight()
            timeout, what = self.import_timeout, f"the import time limit of {self.import_timeout:g} s"
            if self.deadline - time.monotonic() < timeout:
                timeout, what = self.deadline - time.monotonic(), (
                    f"the {self.limits.total_seconds:g} s your code gets for the whole grading")
            try:
                self.load_reply = self._exchange({"op": protocol.Op.LOAD, "args": {}}, max(timeout, 0.0), what)
            except WorkerFailure as failure:
                self.load_reply = failure
                raise
        return self.load_reply

    def _preflight(self) -> None:
        """Before the submission is imported, the fresh worker must answer `preflight`: proof
        that its interpreter starts and imports torch under the worker's limits. Nothing of the
        student's has run yet (the submission is only copied), so a failure here is the grader's:
        it raises WorkerStartError, remembered so that every later check reports the same cause."""
        python = worker_python()
        try:
            reply = self._exchange({"op": protocol.Op.PREFLIGHT, "args": {}}, self.start_timeout,
                                   f"the worker's start time limit of {self.start_timeout:g} s")
        except WorkerFailure as failure:
            what = {"timeout": f"did not become ready within {self.start_timeout:g} s",
                    "protocol": "sent a malformed reply to the preflight"}.get(
                        failure.kind, "exited before it was ready")
            output = self.logs[-1].strip() if self.logs else ""
            self.start_error = WorkerStartError(
                f"the worker process ({python}) {what}: it could not start and import torch under "
                f"its limits (memory {self.limits.memory_bytes // 2**20} MB); what it printed: "
                f"{output[-1500:] or '(nothing)'}")
            raise self.start_error
        if not (isinstance(reply, dict) and reply.get("ok")):
            error = reply.get("error") if isinstance(reply, dict) else None
            self.stop()
            self.start_error = WorkerStartError(
                f"the worker process ({python}) started but failed its preflight: "
                f"{error or reply!r:.1500}")
            raise self.start_error
        if self.ready is None:
            self.ready = reply.get("result") or {}

    def call(self, op: str, timeout: float, **args) -> Reply:
        if self.start_error is not None:
            raise self.start_error
        if self.process is None and not isinstance(self.load_reply, WorkerFailure):
            self._refuse_when_out_of_time()  # before a restart, which costs an import
            if self.check_start is not None:
                self._request_limit(timeout)
        loaded = self.ensure_loaded()
        if not loaded.get("ok"):
            raise StudentError(loaded["error"], loaded.get("notes", []))
        self._refuse_when_out_of_time()
        reply = self._exchange({"op": op, "args": args}, *self._request_limit(timeout))
        if not isinstance(reply, dict) or "ok" not in reply:
            self.stop()
            raise WorkerFailure("protocol", "the worker sent a reply of the wrong shape")
        notes = [str(note)[:500] for note in reply.get("notes", [])][:20]
        if self._memory_used_up(reply.get("memory")):
            self.stop()  # the next check gets a fresh worker with all its memory
            if reply["ok"]:
                raise WorkerFailure("memory", f"your code used up its memory: when the request "
                                              f"ended it held {reply['memory'] // 2**20} MB and "
                                              "could not go on (" + self._memory_limit_text() +
                                              "); memory kept alive between calls, such as "
                                              "tensors appended to a global list, is the usual cause")
            notes.append("your code used up its memory in this request (" + self._memory_limit_text() + ")")
        if not reply["ok"]:
            error = reply.get("error") or {}
            if isinstance(error, dict) and error.get("internal") is True:
                raise GraderError(error)
            message = str(error.get("message"))
            if error.get("kind") == "MemoryError" or "can't allocate memory" in message:
                self.out_of_memory = True  # see begin_check
            raise StudentError(error, notes)
        return Reply(result=reply.get("result") or {}, notes=notes)

    def _memory_used_up(self, used) -> bool:
        """Whether the worker's data size after a request (its own report, a number of bytes)
        is within the rubric's margin of its limit."""
        return (isinstance(used, int) and not isinstance(used, bool)
                and used >= self.limits.memory_bytes - self.limits.memory_margin_bytes)

    def captured_output(self) -> str:
        current = [self.output.text()] if self.process is not None else []
        return "\n".join(self.logs + current)
