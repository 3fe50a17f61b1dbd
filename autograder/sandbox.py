"""Where student code runs: a worker process behind the trust boundary, and the grader's handle on it.

`Worker` copies the worker package, the submission and the kit's generate_data.py into a fresh
sandbox directory, starts `python -I -B worker/__main__.py` there with a scrubbed environment,
resource limits and (as root) an unprivileged user, and exchanges frames with it (protocol.py).
Every call has a wall-clock deadline; on a timeout, crash or malformed reply the whole process
group is killed, the call raises WorkerFailure, and the next call starts a fresh worker that
imports the submission again. What the student's code prints is captured and truncated.
"""

import functools
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .worker import protocol

KIT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_PACKAGE = os.path.join(KIT_ROOT, "autograder", "worker")
GENERATE_DATA = os.path.join(KIT_ROOT, "student", "generate_data.py")
WORKER_USER = "scratch1-worker"


@dataclass
class Limits:
    memory_bytes: int
    cpu_seconds: int
    file_bytes: int
    processes: int
    output_chars: int


@dataclass
class Reply:
    result: dict
    notes: list = field(default_factory=list)


class WorkerFailure(Exception):
    """The worker did not answer: timeout, crash, memory exhaustion or a malformed frame."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class StudentError(Exception):
    """The worker answered, but the student's code raised: carries the worker's error record."""

    def __init__(self, error: dict, notes: list):
        super().__init__(error.get("message", ""))
        self.error = error
        self.notes = notes


def worker_user():
    """(uid, gid) of the unprivileged worker user when we are root and it exists, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(WORKER_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--"]


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether root may give the worker its own empty network namespace and PID namespace
    (Docker without CAP_SYS_ADMIN, as Gradescope may be, refuses)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(NAMESPACES + ["true"], capture_output=True, timeout=10)
    return probe.returncode == 0


def worker_command(script: str) -> list:
    """The worker's command line. As root: into new network and PID namespaces (no network;
    when the namespace's first process dies the kernel kills every process left in it, so no
    child a submission forks can outlive the worker), then down to the worker user (in that
    order: dropping privileges first would forbid the namespaces)."""
    command = [sys.executable, "-I", "-B", script]
    user = worker_user()
    if user:
        command = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups",
                   "--no-new-privs", "--"] + command
        if namespaces_available():
            command = NAMESPACES + command
    return command


def protections(limits: Limits) -> list:
    """What isolation is active here, in words, for the run's report."""
    active = [
        "separate worker process with a scrubbed environment and an empty working directory",
        f"per-request wall-clock timeouts with a kill of the whole process group",
        f"memory limit {limits.memory_bytes // 2**20} MB, CPU limit {limits.cpu_seconds} s, "
        f"file size limit {limits.file_bytes // 2**20} MB",
        f"worker output captured and cut to {limits.output_chars} characters",
    ]
    if worker_user():
        active.append(f"runs as the unprivileged user {WORKER_USER}, "
                      f"limited to {limits.processes} processes")
    else:
        active.append(f"NOT dropped to an unprivileged user ({WORKER_USER} unavailable or not "
                      "root): the worker can read what this user can read")
    if worker_user() and namespaces_available():
        active.append("network blocked and forked children contained (network and PID "
                      "namespaces)")
    else:
        active.append("network NOT blocked and forked children only killed by process group "
                      "(namespaces need root and a platform that allows them)")
    return active


class _OutputTail(threading.Thread):
    """Drains the worker's stderr so it can never block, keeping the first `limit` characters."""

    def __init__(self, stream, limit: int):
        super().__init__(daemon=True)
        self.stream, self.limit = stream, limit
        self.chunks, self.kept, self.dropped = [], 0, 0

    def run(self):
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            room = self.limit - self.kept
            if room > 0:
                self.chunks.append(chunk[:room])
                self.kept += min(room, len(chunk))
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        text = b"".join(self.chunks).decode("utf-8", "replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes of output cut]"
        return text


class Worker:
    def __init__(self, submission_file: str, limits: Limits, import_timeout: float):
        self.submission_file = submission_file
        self.limits = limits
        self.import_timeout = import_timeout
        self.process = None
        self.sandbox = None
        self.output = None
        self.load_reply = None
        self.logs = []
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def _prepare_sandbox(self) -> str:
        sandbox = tempfile.mkdtemp(prefix="scratch1-worker-")
        shutil.copytree(WORKER_PACKAGE, os.path.join(sandbox, "worker"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.makedirs(os.path.join(sandbox, "submission"))
        os.makedirs(os.path.join(sandbox, "work"))
        shutil.copy(self.submission_file, os.path.join(sandbox, "submission", "backbone.py"))
        shutil.copy(GENERATE_DATA, os.path.join(sandbox, "submission", "generate_data.py"))
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

    def start(self) -> None:
        self.sandbox = self._prepare_sandbox()
        work = os.path.join(self.sandbox, "work")
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
            "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        }
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if name in os.environ:
                environment[name] = os.environ[name]
        self.process = subprocess.Popen(
            worker_command(os.path.join(self.sandbox, "worker", "__main__.py")),
            cwd=work, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=self._limit_resources,
        )
        self.output = _OutputTail(self.process.stderr, self.limits.output_chars)
        self.output.start()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        self._kill_stragglers()
        self.output.join(timeout=2)
        self.logs.append(self.output.text())
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()
        shutil.rmtree(self.sandbox, ignore_errors=True)
        self.process = None

    def _kill_stragglers(self) -> None:
        """Children that left the process group (setsid). In a PID namespace the kernel has
        killed them already; without one, as root, every process of the worker user goes
        (which assumes one grading at a time, as on Gradescope)."""
        user = worker_user()
        if user and not namespaces_available():
            subprocess.run(["pkill", "-KILL", "-U", str(user[0])], check=False)

    # -- requests ----------------------------------------------------------------------------

    def _exchange(self, request: dict, timeout: float):
        try:
            self.process.stdin.write(protocol.encode(request))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        deadline = time.monotonic() + timeout
        header = self._read(protocol.HEADER_BYTES, deadline, timeout)
        try:
            length = protocol.decode_length(header)
            return protocol.decode(self._read(length, deadline, timeout))
        except protocol.ProtocolError as error:
            self.stop()
            raise WorkerFailure("protocol", f"the worker sent a malformed reply ({error})")

    def _read(self, count: int, deadline: float, timeout: float) -> bytes:
        fd = self.process.stdout.fileno()
        chunks, remaining = [], count
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.stop()
                    raise WorkerFailure("timeout", f"no answer within {timeout:g} seconds "
                                                   "(an infinite loop, a sleep, or far too slow)")
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    self._died()
                chunks.append(chunk)
                remaining -= len(chunk)
        return b"".join(chunks)

    def _died(self):
        code = self.process.wait()
        self.stop()
        if code < 0:
            name = signal.Signals(-code).name
            hint = {"SIGKILL": " (killed: memory exhausted or a limit hit)",
                    "SIGXCPU": " (CPU time limit exceeded)",
                    "SIGXFSZ": " (file size limit exceeded)"}.get(name, "")
            raise WorkerFailure("crash", f"the worker process was killed by {name}{hint}")
        raise WorkerFailure("crash", f"the worker process ended with status {code}: os._exit "
                                     "in the submission, a crash, or a resource limit (CPU "
                                     f"{self.limits.cpu_seconds} s, memory "
                                     f"{self.limits.memory_bytes // 2**20} MB)")

    def ensure_loaded(self) -> dict:
        """Start the worker if needed and import the submission; returns the load op's reply.

        A failed import is remembered, so a submission that hangs or exits at import costs the
        import timeout once, not once per test.
        """
        if isinstance(self.load_reply, WorkerFailure):
            raise self.load_reply
        if self.process is None:
            if self.load_reply is not None:
                self.restarts += 1
            self.start()
            try:
                self.load_reply = self._exchange({"op": "load", "args": {}}, self.import_timeout)
            except WorkerFailure as failure:
                self.load_reply = failure
                raise
        return self.load_reply

    def call(self, op: str, timeout: float, **args) -> Reply:
        loaded = self.ensure_loaded()
        if not loaded.get("ok"):
            raise StudentError(loaded["error"], loaded.get("notes", []))
        reply = self._exchange({"op": op, "args": args}, timeout)
        if not isinstance(reply, dict) or "ok" not in reply:
            self.stop()
            raise WorkerFailure("protocol", "the worker sent a reply of the wrong shape")
        notes = [str(note)[:500] for note in reply.get("notes", [])][:20]
        if not reply["ok"]:
            raise StudentError(reply.get("error") or {}, notes)
        return Reply(result=reply.get("result") or {}, notes=notes)

    def captured_output(self) -> str:
        current = [self.output.text()] if self.process is not None else []
        return "\n".join(self.logs + current)
