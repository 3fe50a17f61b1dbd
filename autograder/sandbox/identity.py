"""The worker's identity: a uid and gid of its own, drawn for each grading, and what becomes
of that identity's processes and files when the grading ends.

A shared worker user (one uid for every grading on a machine, or on a host: a container's uid 999
is the host's uid 999) makes gradings interfere: RLIMIT_NPROC counts every process and thread of
the uid on the whole kernel, and killing "every process of the worker user" kills other gradings'
workers. So each grading draws its ids at random from IDS, a range no passwd file, systemd
(dynamic users below 65536, containers' ranges up to 0x6FFFFFFF) or subuid allocation uses, and
checked to be unused (no passwd or group entry, no process). setpriv takes numeric ids without a
passwd entry. Two gradings on one machine, or in two containers on one host, then never share a
uid: the process limit, the kill-all and the clean-up of the worker's files are this grading's
alone.
"""

import ctypes
import functools
import grp
import os
import pwd
import secrets
import shutil
import signal
import stat
from dataclasses import dataclass

# Below 2**31: some tools still read uids as signed 32-bit numbers.
IDS = range(0x70000000, 0x7FFFFFFF)
# Where a process without a folder of its own can leave files: the world-writable folders (and,
# below them, any world-writable folder or one of its own).
WRITABLE_ROOTS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")
# The System V IPC objects of this IPC namespace, per kind: (its /proc/sysvipc table, the column
# of its id, the libc call that removes one by id).
SYSV_IPC = (("shm", "shmid", "shmctl"), ("sem", "semid", "semctl"), ("msg", "msqid", "msgctl"))
IPC_RMID = 0


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int


def _mapped_ranges() -> list:
    """The uids this process can switch to: all of them, unless it runs in a user namespace
    (a container with user-namespace remapping maps fewer, often 65536)."""
    try:
        with open("/proc/self/uid_map") as file:
            rows = [tuple(int(n) for n in line.split()) for line in file if line.strip()]
    except (OSError, ValueError):
        return [IDS]
    return [range(inside, inside + count) for inside, _outside, count in rows]


def _candidates() -> range:
    """IDS where this process can use them, else the highest mapped block above the system's
    ids (a remapped container)."""
    mapped = _mapped_ranges()
    for block in mapped:
        if block.start <= IDS.start and block.stop >= IDS.stop:
            return IDS
    best = max(mapped, key=lambda block: block.stop, default=range(0))
    return range(max(best.start, 10000), min(best.stop, 2**31 - 1) - 2)  # not 65534 nobody's top


def _in_use(number: int) -> bool:
    """A passwd or group entry, or a process, already has this id."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(number)
            return True
        except KeyError:
            pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == number:
                    return True
            except OSError:
                continue
    return False


@functools.lru_cache(maxsize=1)
def current():
    """This grading's worker Identity (drawn once per grader process), or None when the grader
    is not root and cannot switch ids."""
    if os.geteuid() != 0:
        return None
    ids = _candidates()
    if len(ids) <= 0:
        return None
    for _ in range(20):
        number = ids[secrets.randbelow(len(ids))]
        if not _in_use(number):
            return Identity(number, number)
    return None


def kill_processes(identity: Identity) -> None:
    """kill(-1) as the identity: one system call that reaches all its processes, even ones a
    fork bomb is creating, and works when it is at its process limit (no exec needed). The
    identity is this grading's alone, so no other grading's worker is touched."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(identity.gid)
            os.setuid(identity.uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _scan(pending: list, descend):
    """(entry, stat) of every entry below the folders in `pending` (symlinks not followed),
    descending into a folder when descend(info) says so; unreadable entries are skipped."""
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield entry, info
            if stat.S_ISDIR(info.st_mode) and descend(info):
                pending.append(entry.path)


def tree_bytes(path: str) -> int:
    """The disk (or memory, on a tmpfs) the files under `path` take, itself included."""
    return sum(info.st_blocks * 512 for _, info in _scan([path], lambda _info: True))


def _own_entries(identity: Identity, roots):
    """(path, stat) of each file or folder the identity owns in the world-writable folders,
    found as remove_files finds them (not below its own folders)."""
    pending = [root for root in roots if os.path.isdir(root) and not os.path.islink(root)]
    for entry, info in _scan(pending, lambda info: info.st_uid != identity.uid
                             and bool(info.st_mode & stat.S_IWOTH)):
        if info.st_uid == identity.uid:
            yield entry.path, info


def disk_bytes(identity: Identity, roots=WRITABLE_ROOTS) -> int:
    """Bytes of disk (or memory, on a tmpfs) that the identity's files in the world-writable
    folders take, its folders' whole contents included."""
    return sum(info.st_blocks * 512 + (tree_bytes(path) if stat.S_ISDIR(info.st_mode) else 0)
               for path, info in _own_entries(identity, roots))


def remove_files(identity: Identity, roots=WRITABLE_ROOTS) -> list:
    """Remove what the identity left in the world-writable folders (a file, or a folder with all
    it holds) and return the paths removed. Only folders it could write into are searched: the
    world-writable ones and, removed whole, its own. Call it once its processes are gone."""
    removed = []
    for path, info in list(_own_entries(identity, roots)):
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                continue
        removed.append(path)
    return removed


def _ipc_rows(kind: str, id_column: str) -> list:
    """(id, uid, creator's uid) of every object in /proc/sysvipc/<kind>."""
    try:
        with open(f"/proc/sysvipc/{kind}") as file:
            header, *lines = file.read().splitlines()
    except (OSError, ValueError):
        return []
    columns = header.split()
    rows = []
    for line in lines:
        fields = dict(zip(columns, line.split()))
        try:
            rows.append((int(fields[id_column]), int(fields["uid"]), int(fields["cuid"])))
        except (KeyError, ValueError):
            continue
    return rows


def remove_ipc(identity: Identity) -> list:
    """Remove every System V shared memory segment, semaphore set and message queue the identity
    owns or created, and return them as "shm 123". They outlive every process (a detached segment
    holds its memory, counted by no limit of the worker's) until someone removes them; the worker
    refuses to make them (worker/confine/ipc.py), this is for a platform where it cannot. Call it
    once its processes are gone: a segment still attached is freed only at its last detach."""
    libc = ctypes.CDLL(None, use_errno=True)
    removed = []
    for kind, id_column, call in SYSV_IPC:
        remove = getattr(libc, call)
        for number, uid, creator in _ipc_rows(kind, id_column):
            if identity.uid in (uid, creator):
                # shmctl(id, cmd, buffer), msgctl(id, cmd, buffer), semctl(id, semnum, cmd)
                arguments = (number, 0, IPC_RMID) if kind == "sem" else (number, IPC_RMID, None)
                if remove(*arguments) == 0:
                    removed.append(f"{kind} {number}")
    return removed
