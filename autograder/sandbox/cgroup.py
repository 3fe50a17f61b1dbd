"""A cgroup of the worker's own, for each grading, where the grader may create one: its memory
limit counts what the worker writes to tmpfs (/dev/shm, a tmpfs /tmp) as well as what it
allocates, which RLIMIT_DATA does not, and its process limit counts threads too.

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
            for name in CONTROLLERS:
                if name in options and name in paths:
                    relative = os.path.relpath(paths[name], mount_root)
                    v1[name] = os.path.normpath(os.path.join(mount_point, relative))
        elif kind == "cgroup2" and "" in paths and set(CONTROLLERS) <= set(memory.controllers(mount_point)):
            v2 = os.path.normpath(os.path.join(mount_point, os.path.relpath(paths[""], mount_root)))
    if set(v1) == set(CONTROLLERS) and all(os.access(folder, os.W_OK) for folder in v1.values()):
        return 1, v1
    if v2 and os.access(v2, os.W_OK):
        return 2, {name: v2 for name in CONTROLLERS}
    return 0, {}


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


class WorkerCgroup:
    """The grading's worker cgroup: `folders` {controller: folder} (one folder for v2)."""

    def __init__(self, version: int, folders: dict):
        self.version, self.folders = version, folders

    @classmethod
    def create(cls, name: str, memory_bytes: int, processes: int) -> Optional["WorkerCgroup"]:
        """A new cgroup `name` limited to memory_bytes + CODE_BYTES and `processes` tasks, or
        None where this platform does not let the grader make one."""
        version, parents = _folders()
        if not version:
            return None
        created = cls(version, {c: os.path.join(folder, name) for c, folder in parents.items()})
        try:
            if version == 2:
                _write(os.path.join(parents["memory"], "cgroup.subtree_control"), "+memory +pids")
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
        return created

    def join(self) -> None:
        """Move the calling process into the cgroup (the worker, between fork and exec)."""
        for folder in set(self.folders.values()):
            _write(os.path.join(folder, "cgroup.procs"), str(os.getpid()))

    def oom_kills(self) -> Optional[int]:
        """How many processes the kernel killed in it for want of memory."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            with open(os.path.join(self.folders["memory"], name)) as file:
                for line in file:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit():
                        return int(value)
        except OSError:
            pass
        return None

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
def supported() -> int:
    """The cgroup version (1 or 2) in which the grader can give the worker a cgroup here, else 0
    (checked by making one)."""
    probe = WorkerCgroup.create(f"scratch1-probe-{os.getpid()}", 2**20, 1)
    if probe is None:
        return 0
    probe.remove()
    return probe.version
