"""A cgroup of the worker's own, for each grading, where the grader may create one: its memory
limit counts what the worker writes to tmpfs (/dev/shm, a tmpfs /tmp) as well as what it
allocates, which RLIMIT_DATA does not, its process limit counts threads too, and, where the cpu
controller is there too, all its processes together get at most rubric.WORKER.cpu_cores of CPU
(a submission that spins up dozens of processes slows no other grading beyond that).

As root on a machine with cgroup v1 (memory and pids hierarchies mounted writable, as on this
kit's development machines) or with a delegated cgroup v2 subtree, the grader makes a child of
its own cgroup for the grading's workers. In Docker without privileges (Gradescope) the cgroup
filesystem is read-only: there is none, the limits of identity.py and isolation.py stand alone,
and the report says what that leaves out.
"""

import functools
import os
import signal
import time
from typing import Optional

from . import memory

CONTROLLERS = ("memory", "pids")
OPTIONAL = ("cpu",)  # used where there, else the worker's CPU is bounded by RLIMIT_CPU alone
PERIOD_MICROSECONDS = 100_000  # the CFS period its CPU quota is counted over
# What the worker's cgroup holds beyond its data (RLIMIT_DATA): the interpreter's code and stacks
# and the pages of its libraries it reads first.
CODE_BYTES = 192 * 2**20


def _own_paths() -> dict:
    """{controller or "": the cgroup path of this process} ("" for cgroup v2)."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as file:
            for line in file:
                hierarchy, names, path = line.rstrip("\n").split(":", 2)
                for name in names.split(",") if names else [""]:
                    paths[name] = path
    except (OSError, ValueError):
        pass
    return paths


def _folders() -> tuple:
    """(version, {controller: the folder of this process's cgroup}) where the grader can make
    children for every controller, else (0, {})."""
    paths, v1, v2 = _own_paths(), {}, None
    for mount_root, mount_point, kind, options in memory.mounts():
        if kind == "cgroup":
            for name in CONTROLLERS + OPTIONAL:
                if name in options and name in paths:
                    relative = os.path.relpath(paths[name], mount_root)
                    v1[name] = os.path.normpath(os.path.join(mount_point, relative))
        elif kind == "cgroup2" and "" in paths and set(CONTROLLERS) <= set(memory.controllers(mount_point)):
            v2 = os.path.normpath(os.path.join(mount_point, os.path.relpath(paths[""], mount_root)))
    v1 = {name: folder for name, folder in v1.items() if os.access(folder, os.W_OK)}
    if set(CONTROLLERS) <= set(v1):
        return 1, v1
    if v2 and os.access(v2, os.W_OK):
        present = set(memory.controllers(v2))
        return 2, {name: v2 for name in CONTROLLERS + OPTIONAL if name in CONTROLLERS or name in present}
    return 0, {}


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


class WorkerCgroup:
    """The grading's worker cgroup: `folders` {controller: folder} (one folder for v2)."""

    def __init__(self, version: int, folders: dict):
        self.version, self.folders = version, folders
        self.cpu_cores = None  # the CPU limit that holds, in cores; None without one

    @classmethod
    def create(cls, name: str, memory_bytes: int, processes: int,
               cpu_cores: Optional[float] = None) -> Optional["WorkerCgroup"]:
        """A new cgroup `name` limited to memory_bytes + CODE_BYTES, `processes` tasks and,
        where the cpu controller is there, `cpu_cores` of CPU; None where this platform does not
        let the grader make one."""
        version, parents = _folders()
        if not version:
            return None
        created = cls(version, {c: os.path.join(folder, name) for c, folder in parents.items()})
        try:
            if version == 2:
                _write(os.path.join(parents["memory"], "cgroup.subtree_control"),
                       " ".join(f"+{c}" for c in created.folders))
            for folder in set(created.folders.values()):
                os.mkdir(folder)
            limit = str(memory_bytes + CODE_BYTES)
            if version == 1:
                _write(os.path.join(created.folders["memory"], "memory.limit_in_bytes"), limit)
            else:
                _write(os.path.join(created.folders["memory"], "memory.max"), limit)
                _write(os.path.join(created.folders["memory"], "memory.swap.max"), "0")
            _write(os.path.join(created.folders["pids"], "pids.max"), str(processes))
        except OSError:
            created.remove()
            return None
        if cpu_cores and "cpu" in created.folders:
            created._limit_cpu(cpu_cores)
        return created

    def _limit_cpu(self, cores: float) -> None:
        """At most `cores` of CPU for all its processes together (CFS bandwidth), where the
        kernel lets us set it; `cpu_cores` says whether it held."""
        quota, folder = int(cores * PERIOD_MICROSECONDS), self.folders["cpu"]
        try:
            if self.version == 1:
                _write(os.path.join(folder, "cpu.cfs_period_us"), str(PERIOD_MICROSECONDS))
                _write(os.path.join(folder, "cpu.cfs_quota_us"), str(quota))
            else:
                _write(os.path.join(folder, "cpu.max"), f"{quota} {PERIOD_MICROSECONDS}")
        except OSError:
            return
        self.cpu_cores = cores

    def join(self) -> None:
        """Move the calling process into the cgroup (the worker, between fork and exec)."""
        for folder in set(self.folders.values()):
            _write(os.path.join(folder, "cgroup.procs"), str(os.getpid()))

    def memory_used(self) -> Optional[int]:
        """Bytes charged to it now (its processes' memory, and tmpfs pages they wrote)."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        try:
            with open(os.path.join(self.folders["memory"], name)) as file:
                return int(file.read())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> Optional[int]:
        """How many processes the kernel killed in it for want of memory."""
        return memory.oom_kill_count(self.folders["memory"], self.version)

    def remove(self) -> None:
        """Kill what is left in it and remove it (its tmpfs pages go to the parent cgroup)."""
        for folder in set(self.folders.values()):
            for _ in range(100):  # killed tasks leave it within milliseconds
                try:
                    with open(os.path.join(folder, "cgroup.procs")) as file:
                        for pid in file.read().split():
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


@functools.lru_cache(maxsize=1)
def _probe() -> tuple:
    """(version, whether a CPU limit holds) of a cgroup made and removed at once, or (0, False)."""
    probe = WorkerCgroup.create(f"scratch1-probe-{os.getpid()}", 2**20, 1, cpu_cores=1.0)
    if probe is None:
        return 0, False
    probe.remove()
    return probe.version, probe.cpu_cores is not None


def supported() -> int:
    """The cgroup version (1 or 2) in which the grader can give the worker a cgroup here, else 0
    (checked by making one)."""
    return _probe()[0]


def cpu_limited() -> bool:
    """Whether the worker's cgroup gets a CPU limit here (checked by making one)."""
    return _probe()[1]
