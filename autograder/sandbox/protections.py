"""The isolation active on this machine, in words, for the run's report: checked, not assumed."""

import os
import stat
import subprocess

from . import cgroup
from .confinement import Judged, network_sentence, view_sentence
from .isolation import KIT_ROOT, namespaces, worker_user
from .limits import Limits

# What the worker must never read: the reference solution and a hidden check.
SECRETS = (os.path.join(KIT_ROOT, "reference", "backbone.py"),
           os.path.join(KIT_ROOT, "autograder", "checks", "test_attention.py"))


def readable_by_others(path: str) -> bool:
    """Whether a user outside the file's owner and group can read `path` (the view of the
    worker's ids, which own nothing and belong to no group, of a root-owned kit)."""
    parts = os.path.abspath(path).split(os.sep)
    try:
        for depth in range(2, len(parts)):
            if not os.stat(os.sep.join(parts[:depth])).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def _checkouts() -> list:
    """This kit and the other checkouts of it a TA's machine is likely to hold: its git
    worktrees and the folders beside it that hold a reference solution."""
    found = [KIT_ROOT]
    try:
        listing = subprocess.run(["git", "-C", KIT_ROOT, "worktree", "list", "--porcelain"],
                                 capture_output=True, text=True, timeout=10).stdout
        found += [line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("worktree ")]
    except (OSError, subprocess.TimeoutExpired):
        pass
    parent = os.path.dirname(KIT_ROOT)
    try:
        found += [os.path.join(parent, name) for name in sorted(os.listdir(parent))]
    except OSError:
        pass
    return [path for path in dict.fromkeys(os.path.realpath(p) for p in found)
            if os.path.isfile(os.path.join(path, "reference", "backbone.py"))]


def readable_checkouts() -> list:
    """The checkouts of the kit (this one, its worktrees, its neighbours) whose reference
    solution the worker could read: none under bubblewrap (it sees no folder of ours); without
    it, those its file permissions leave open to the worker's ids (unshare hides this kit only)."""
    spaces = namespaces()
    if spaces == "bwrap":
        return []
    exposed = []
    for path in _checkouts():
        if spaces and path == os.path.realpath(KIT_ROOT):
            continue
        secret = os.path.join(path, "reference", "backbone.py")
        if readable_by_others(secret) if worker_user() else os.access(secret, os.R_OK):
            exposed.append(path)
    return exposed


def describe(limits: Limits, judged: "Judged | None" = None) -> list:
    """What isolation is active here, one sentence each, for the run's report; `judged` is what
    the worker's own confinement was found to hold in its preflight (confinement.py), None
    when no worker started."""
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
        active.append("runs under an unprivileged uid and gid of its own, drawn for this grading "
                      f"(no other grading shares them), limited to {limits.processes} processes")
    else:
        active.append("NOT dropped to an unprivileged user (the grader is not root, or found no free "
                      "ids): the worker "
                      "can write what this user can write")
    version = cgroup.supported() if user else 0
    if version:
        active.append(f"a cgroup v{version} of its own: its memory limit counts the files it writes "
                      "to memory-backed folders (/dev/shm, a tmpfs /tmp), its process limit its "
                      "threads")
    elif spaces == "bwrap":
        active.append("/dev/shm not writable; its private /tmp is memory-backed and NOT counted in "
                      "its memory limit (no cgroup of its own here)")
    elif user:
        active.append("files it writes to /dev/shm NOT counted in its memory limit (no cgroup of "
                      "its own here), only removed when each worker stops")
    if version and cgroup.cpu_limited():
        active.append(f"all its processes together get at most {limits.cpu_cores:g} CPU core "
                      "(its cgroup's cpu controller): spinning processes slow no other grading "
                      "beyond that")
    else:
        active.append("its CPU use NOT limited beyond its CPU time (no cgroup with a cpu "
                      "controller here): its processes can slow other gradings on this machine")
    active.append(f"all its files together limited to {limits.disk_bytes // 2**20} MB (its work "
                  "folder" + ("" if spaces == "bwrap" else ", and its files in /tmp, /var/tmp, "
                              "/dev/shm") + "; measured while it runs)")
    if not spaces:
        active.append("its System V shared memory, semaphores and queues refused (seccomp)"
                      if judged is not None and judged.ipc_problem == "" else
                      "System V IPC NOT refused" + (f" ({judged.ipc_problem})" if judged else ""))
        active.append("every System V IPC object of its uid removed whenever a worker stops")
    else:
        active.append("System V IPC private to the worker (an IPC namespace) and refused (seccomp)"
                      if judged is not None and judged.ipc_problem == "" else
                      "System V IPC private to the worker (an IPC namespace)")
    if spaces:
        active.append("network blocked, forked children contained and /proc private "
                      f"(network, PID and mount namespaces{', by bubblewrap' if spaces == 'bwrap' else ''}"
                      + ("" if user else ", in a user namespace") + ")")
    else:
        active.append("forked children killed with every process of this grading's worker uid "
                      "(namespaces refused by the platform)" if user else "forked children only "
                      "killed by process group (no namespaces available without root here)")
    if judged is not None and (judged.network_blocked or not spaces):
        active.append(network_sentence(judged))
    elif not spaces:
        active.append("network NOT blocked (namespaces refused by the platform)")
    landlock = judged is not None and judged.view_restricted and not judged.landlock_problem
    if spaces == "bwrap":
        active.append("the kit (reference, grader, hidden tests) hidden from the worker, and the "
                      "rest of the filesystem too: it sees only the interpreter and its libraries "
                      "(read-only), its sandbox folder and a private /tmp (checked: a "
                      "world-readable file planted in /tmp is out of its reach)"
                      + (f"; Landlock (ABI {judged.landlock_abi}) too" if landlock else ""))
    elif spaces or landlock:
        active.append("the kit (reference, grader, hidden tests) hidden from the worker"
                      + (" (an empty mount over each of its folders)" if spaces else " (outside its Landlock view)"))
    elif user and not any(readable_by_others(path) for path in SECRETS):
        active.append("the kit (reference, grader, hidden tests) unreadable to the worker's uid")
    else:
        active.append("the kit's reference and hidden tests are READABLE by the worker")
    if spaces != "bwrap":
        active.append(view_sentence(judged) if judged is not None else
                      "the rest of the filesystem (/tmp, /home...) readable where its permissions allow")
    return active
