"""The memory this container really has, and what the kernel's OOM killer did in it.

Gradescope runs the grader in a Docker container whose memory cgroup holds the limit (768 MB by
default): cgroup v2 `memory.max` or cgroup v1 `memory.limit_in_bytes` of the cgroup this process
belongs to, or of an ancestor, whichever is lowest; without one, the machine's physical memory.
The worker's memory limit is sized from it (see `worker_limit`), and a worker killed with SIGKILL
while the cgroup's OOM-kill count went up ran out of memory (see `oom_kills`).
"""

import os
from dataclasses import dataclass

UNLIMITED = 2**60  # cgroup v1 writes "unlimited" as 9223372036854771712


@dataclass(frozen=True)
class Cgroup:
    directory: str  # the cgroup's folder under the mounted hierarchy
    root: str  # the hierarchy's mount point (the walk up stops there)
    version: int


def mounts() -> list:
    """(mount root within the hierarchy, mount point, fs type, super options) per cgroup mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as file:
            for line in file:
                before, _, after = line.partition(" - ")
                fields, tail = before.split(), after.split()
                if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                    found.append((fields[3], fields[4], tail[0], tail[2].split(",")))
    except OSError:
        pass
    return found


def controllers(mount_point: str) -> list:
    try:
        with open(os.path.join(mount_point, "cgroup.controllers")) as file:
            return file.read().split()
    except OSError:
        return []


def memory_cgroup(pid="self"):
    """The memory cgroup of a process (v2 preferred, else v1), or None where there is none."""
    try:
        with open(f"/proc/{pid}/cgroup") as file:
            lines = [line.rstrip("\n").split(":", 2) for line in file]
    except OSError:
        return None
    paths = {}
    for hierarchy, controllers, path in (parts for parts in lines if len(parts) == 3):
        if hierarchy == "0" and controllers == "":
            paths[2] = path
        elif "memory" in controllers.split(","):
            paths[1] = path
    for mount_root, mount_point, kind, options in mounts():
        version = 2 if kind == "cgroup2" else 1
        if version == 1 and "memory" not in options:
            continue
        path = paths.get(version)
        if path is None or (version == 2 and "memory" not in controllers(mount_point)):
            continue  # a hybrid system's v2 hierarchy without the memory controller
        relative = os.path.relpath(path, mount_root) if path.startswith(mount_root) else "."
        directory = os.path.normpath(os.path.join(mount_point, relative))
        if not os.path.isdir(directory):  # a cgroup namespace that the mount does not show
            directory = mount_point
        return Cgroup(directory, mount_point, version)
    return None


def _read_number(path: str):
    try:
        with open(path) as file:
            text = file.read().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    return int(text) if text.isdigit() else None


def container_limit() -> tuple:
    """(bytes, where the figure comes from): the lowest memory limit on this process's cgroup
    and its ancestors, or the physical memory if there is none (or it is higher)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    group = memory_cgroup()
    if group is not None:
        name = "memory.max" if group.version == 2 else "memory.limit_in_bytes"
        lowest, directory = None, group.directory
        while True:
            value = _read_number(os.path.join(directory, name))
            if value is not None and (lowest is None or value < lowest[0]):
                lowest = (value, directory)
            if directory == group.root or len(directory) <= len(group.root):
                break
            directory = os.path.dirname(directory)
        if lowest is not None and lowest[0] < min(physical, UNLIMITED):
            return lowest[0], f"cgroup v{group.version} {name}"
    return physical, "physical memory"


def available_bytes():
    """Bytes of memory this container has left: its limit less what its cgroup is charged, or
    the kernel's MemAvailable without a cgroup; None where neither can be read."""
    group = memory_cgroup()
    if group is not None:
        used = _read_number(os.path.join(group.directory, "memory.current" if group.version == 2
                                          else "memory.usage_in_bytes"))
        if used is not None:
            return max(0, container_limit()[0] - used)
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def oom_kills():
    """How many processes the kernel's OOM killer has killed in this process's memory cgroup
    (cgroup v2 memory.events, v1 memory.oom_control), or None where the count is not exposed."""
    group = memory_cgroup()
    if group is None:
        return None
    return oom_kill_count(group.directory, group.version)


def oom_kill_count(directory: str, version: int):
    """The oom_kill count of the memory cgroup at `directory` (cgroup v2 memory.events, v1
    memory.oom_control), or None where it is not exposed."""
    name = "memory.events" if version == 2 else "memory.oom_control"
    try:
        with open(os.path.join(directory, name)) as file:
            for line in file:
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
    except OSError:
        pass
    return None


def worker_limit(cap: int, grader_bytes: int) -> tuple:
    """(bytes, explanation) for the worker's RLIMIT_DATA: what the container leaves once the
    grader has what it needs (`grader_bytes`, measured), at most `cap`."""
    total, source = container_limit()
    left = total - grader_bytes
    if left >= cap:
        return cap, f"{cap // 2**20} MB"
    return max(left, 0), (f"{max(left, 0) // 2**20} MB (the container's {total // 2**20} MB, "
                          f"from its {source}, less {grader_bytes // 2**20} MB for the grader)")
