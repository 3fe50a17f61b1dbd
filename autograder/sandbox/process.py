"""One run of the worker process: its sandbox folder, its start under the isolation of
isolation.py, its end (every process of it killed), why it ended, and what it printed."""

import functools
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading

from . import identity, isolation, memory
from .errors import WorkerFailure
from .limits import Limits

WORKER_PACKAGE = os.path.join(isolation.KIT_ROOT, "autograder", "worker")
GENERATE_DATA = os.path.join(isolation.KIT_ROOT, "student", "generate_data.py")
TEMPLATE = os.path.join(isolation.KIT_ROOT, "student", "backbone.py")
# glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, which then only
# grows: with tensors above 4 MB mapped and unmapped instead, the reference's peak data size in
# the worker drops from ~390 to ~300 MB at no measurable cost in time (bench/CALIBRATION.md#worker).
# A fixed mmap threshold also fixes the trim threshold at 128 kB: each training step's freed
# activations were handed back to the kernel and faulted in again by the next step. Keeping up to
# 32 MB of free heap halves the reference's page faults (130k to 70k), ~0.4 CPU-s per grading,
# for 10 MB more data size after a request and the same peak (bench/SPEED.md).
MALLOC_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20)}


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


class DiskWatch(threading.Thread):
    """Measures every `seconds` the files the worker keeps (its work folder and, without
    bubblewrap's private /tmp, its uid's files in /tmp, /var/tmp, /dev/shm) and calls `over`
    (which kills the worker) once they pass `limit` bytes, keeping what it measured in
    `exceeded`. RLIMIT_FSIZE bounds one file only; this
    bounds them all (the disk of a shared machine, or memory where they are on a tmpfs)."""

    def __init__(self, work: str, limit: int, over, seconds: float = 0.5):
        super().__init__(daemon=True)
        self.work, self.limit, self.over, self.seconds = work, limit, over, seconds
        self.stopping = threading.Event()
        self.exceeded = None  # the bytes measured once above the limit

    def measure(self) -> int:
        """Bytes the worker's files take now."""
        used = identity.tree_bytes(self.work)
        drawn = identity.current()
        if drawn and isolation.namespaces() != "bwrap":
            used += identity.disk_bytes(drawn)
        return used

    def check(self) -> bool:
        """Measure now; True (and `over` called, once) when above the limit."""
        if self.exceeded is None:
            used = self.measure()
            if used > self.limit:
                self.exceeded = used
                self.over()
        return self.exceeded is not None

    def run(self):
        while not self.stopping.wait(self.seconds) and not self.check():
            pass

    def message(self) -> str:
        """The failure for the student, once exceeded."""
        return (f"your code wrote {self.exceeded / 2**20:.0f} MB of files (its working folder, "
                f"/tmp, /var/tmp, /dev/shm), above the {self.limit / 2**20:.0f} MB limit: the "
                "worker was stopped")


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


def _sandbox_folder(submission_file: str) -> str:
    """A fresh folder holding the worker package, the submission with the kit's
    generate_data.py, and `work`, the only folder the worker may write."""
    sandbox = tempfile.mkdtemp(prefix="scratch1-worker-")
    shutil.copytree(WORKER_PACKAGE, os.path.join(sandbox, "worker"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.makedirs(os.path.join(sandbox, "submission"))
    os.makedirs(os.path.join(sandbox, "work"))
    shutil.copy(submission_file, os.path.join(sandbox, "submission", "backbone.py"))
    shutil.copy(GENERATE_DATA, os.path.join(sandbox, "submission", "generate_data.py"))
    # the template's provided code, for worker/known_good.py (public: students have it)
    shutil.copy(TEMPLATE, os.path.join(sandbox, "worker", "template_backbone.py"))
    for directory, _dirs, files in os.walk(sandbox):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    user = isolation.worker_user()
    if user:
        # Its own group alone may enter: no other grading's worker reads this submission.
        os.chown(sandbox, 0, user[1])
        os.chmod(sandbox, 0o750)
        os.chown(os.path.join(sandbox, "work"), *user)
        os.chmod(os.path.join(sandbox, "work"), 0o700)
    return sandbox


def _in_the_child(limits: Limits, cgroup) -> None:
    """Between fork and exec, as the grader's user: the worker's resource limits and cgroup."""
    isolation.limit_resources(limits)
    if cgroup is not None:
        cgroup.join()


class WorkerProcess:
    """`python -I -B worker/__main__.py`, started at construction in a fresh sandbox folder with
    a scrubbed environment; requests go to `stdin`, replies come from `stdout` (file
    descriptors, stdin non-blocking), what it prints on stderr is kept, cut to
    limits.output_chars. `out_of_memory`: the submission ran out of memory in this process.
    `cgroup`: the grading's worker cgroup it starts in (cgroup.py), if any."""

    def __init__(self, submission_file: str, limits: Limits, cgroup=None):
        self.limits = limits
        self.cgroup = cgroup
        self.out_of_memory = False
        self.output_text = None  # what it printed, once stopped
        self.sandbox = _sandbox_folder(submission_file)
        work = os.path.join(self.sandbox, "work")
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
            # its uid has no passwd entry, where getpass.getuser() would raise
            "USER": "scratch1-worker", "LOGNAME": "scratch1-worker",
            "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **MALLOC_ENVIRONMENT,
        }
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if name in os.environ:
                environment[name] = os.environ[name]
        self.oom_kills = memory.oom_kills()  # the cgroups' OOM-kill counts when it started
        self.own_oom_kills = cgroup.oom_kills() if cgroup else None
        self.popen = subprocess.Popen(
            isolation.worker_command(self.sandbox),
            cwd=work, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=functools.partial(_in_the_child, limits, cgroup),
        )
        self.stdin = self.popen.stdin.fileno()
        self.stdout = self.popen.stdout.fileno()
        os.set_blocking(self.stdin, False)  # writes get deadlines too
        self.output = _OutputTail(self.popen.stderr.fileno(), limits.output_chars)
        self.output.start()
        self.disk = DiskWatch(work, limits.disk_bytes, self._kill)
        self.disk.start()

    def printed(self) -> str:
        """What it printed so far (all of it, cut, once stopped)."""
        return self.output.text() if self.output_text is None else self.output_text

    def stop(self) -> str:
        """Kill every process of the worker, then collect and return its output. Never blocks
        for long: the pipes are closed even if something the submission started still holds
        them. Stopping a stopped process returns the same output."""
        if self.output_text is not None:
            return self.output_text
        self.disk.stopping.set()
        self._kill()
        self.popen.wait()
        self._kill_stragglers()
        self.output.finish()
        self.output_text = self.output.text()
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            try:
                stream.close()
            except OSError:  # a request left half-written in the pipe
                pass
        shutil.rmtree(self.sandbox, ignore_errors=True)
        return self.output_text

    def _kill(self) -> None:
        """SIGKILL the worker's own process first (with namespaces, the init of its PID
        namespace, whose death takes everything in it: it may have left the process group),
        its children, then its process group."""
        if self.popen.poll() is None:
            for pid in [self.popen.pid] + _children(self.popen.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _kill_stragglers() -> None:
        """Children that left the process group (setsid). In a PID namespace the kernel has
        killed them already; without one, as root, every process of this grading's worker uid
        goes (no other grading's: identity.py). Without bubblewrap's private /tmp, every file
        its uid left in the world-writable folders (/tmp, /dev/shm...) goes too: the next worker
        starts from nothing, as under bubblewrap, and memory-backed files stop counting against
        the memory of the next. Without an IPC namespace, its System V shared memory, semaphores
        and queues go too (they outlive every process and count against no limit of its own)."""
        drawn = identity.current()
        if drawn and not isolation.namespaces():
            identity.kill_processes(drawn)
            identity.remove_ipc(drawn)
        if drawn and isolation.namespaces() != "bwrap":
            identity.remove_files(drawn)

    def ended(self) -> WorkerFailure:
        """Why the worker closed its pipes, as the failure to raise; it is stopped."""
        try:
            code = self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:  # it closed its end of the pipes but lives on
            self.stop()
            return WorkerFailure("crash", "the worker process closed its connection to the grader")
        self.stop()
        if self.disk.exceeded is not None:
            return WorkerFailure("disk", self.disk.message())
        kills = memory.oom_kills()
        own = self.cgroup.oom_kills() if self.cgroup else None
        if own is not None and self.own_oom_kills is not None and own > self.own_oom_kills:
            return WorkerFailure("memory", "your code ran out of memory: the kernel's out-of-memory "
                                           "killer stopped the worker when its memory, files it "
                                           "wrote to memory-backed folders (/dev/shm) included, "
                                           f"was used up ({self.limits.memory_text()})")
        if kills is not None and self.oom_kills is not None and kills > self.oom_kills:
            # the kernel's own record: a SIGKILL (seen as such, or as the exit status unshare
            # or setpriv turn it into) while the container's memory was used up
            return WorkerFailure("memory", "your code ran out of memory: the kernel's out-of-memory "
                                           "killer stopped the worker when the container's memory "
                                           f"was used up ({self.limits.memory_text()})")
        if code < 0:
            name = signal.Signals(-code).name
            hint = {"SIGKILL": " (killed: memory exhausted or a limit hit)",
                    "SIGXCPU": " (CPU time limit exceeded)",
                    "SIGXFSZ": " (file size limit exceeded)"}.get(name, "")
            return WorkerFailure("crash", f"the worker process was killed by {name}{hint}")
        return WorkerFailure("crash", f"the worker process ended with status {code}: os._exit "
                                      "or sys.exit in a thread of the submission, a crash, or a "
                                      f"resource limit (CPU {self.limits.cpu_seconds} s, memory "
                                      f"{self.limits.memory_bytes // 2**20} MB)")
