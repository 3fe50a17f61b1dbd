"""The worker confines itself, where namespaces are refused (Docker's default seccomp profile, as
on Gradescope) and as a second wall where they are not: installed at its start, before torch and
long before the submission is imported, inherited by every thread and process it starts, and
never undone (both need no privilege, only no_new_privs, which they set).

    network.py   a seccomp filter: socket() refused for every address family but AF_UNIX
    ipc.py       a second one: no System V shared memory, semaphores or message queues
    view.py      Landlock: the files it may read (interpreter, system, its sandbox folder) and
                 write (its work folder)
    probe.py     what held, measured in the preflight for the grader to judge

`install` records why a part did not hold (a kernel without Landlock, a platform that refuses
seccomp filters); the worker runs on without it and the grader's report says so.
"""

from . import ipc, network, view

INSTALLED = {}  # part -> "" once installed, else why not (probe.py reports it)


def install(sandbox: str) -> None:
    """Block the network and SysV IPC, then restrict the filesystem view to `sandbox` and the
    interpreter."""
    INSTALLED["network"] = network.install()
    INSTALLED["ipc"] = ipc.install()
    INSTALLED["view"] = view.install(sandbox)
