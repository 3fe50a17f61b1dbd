"""The worker's own confinement (autograder/worker/confine/), which holds where namespaces are
refused (Gradescope's Docker): its seccomp filter refuses every network family but AF_UNIX, and
Landlock narrows its view to the interpreter, the system, its sandbox and its work folder; what
the preflight measures is judged by the grader (autograder/sandbox/confinement.py).

Each test confines a fresh interpreter (never this one: confinement cannot be undone) and reads
what it measured. Seconds each: no torch.
"""

import errno
import json
import os
import subprocess
import sys

import pytest

from autograder.sandbox import confinement
from autograder.worker.confine import view

AUTOGRADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "autograder")


def _landlock() -> bool:
    try:
        return view.abi() > 0
    except OSError:
        return False


LANDLOCK = pytest.mark.skipif(not _landlock(), reason="this kernel (or its seccomp profile) has no Landlock: "
                              "the worker then runs with the view its permissions allow, and says so")

# Run in the confined interpreter: what a submission's code (and a program it starts) can do.
CONFINED = """
import json, os, socket, subprocess, sys
sandbox, planted = sys.argv[1:3]
sys.path.insert(0, {autograder!r})
from worker.confine import INSTALLED, install, probe  # all loaded before the view narrows
install(sandbox)
found = {{"installed": dict(INSTALLED), "report": probe.report(planted)}}
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
found["sysv"] = [(libc.shmget(0, 4096, 0o600), ctypes.get_errno()), (libc.semget(0, 1, 0o600), ctypes.get_errno()),
                 (libc.msgget(0, 0o600), ctypes.get_errno())]
for (number, _), remove in zip(found["sysv"], ((libc.shmctl, 0, None), (libc.semctl, 0, 0), (libc.msgctl, 0, None))):
    if number >= 0:  # made (the filter failed): never left on the host
        remove[0](number, *remove[1:])
left, right = socket.socketpair(socket.AF_UNIX)
left.sendall(b"unix"); found["unix"] = right.recv(4).decode()
found["child_reads_planted"] = subprocess.run(["cat", planted], capture_output=True).returncode == 0
with open(os.path.join(sandbox, "work", "written"), "w") as file:
    file.write("work is writable")
found["sandbox_readable"] = open(os.path.join(sandbox, "submission.py")).read()
try:
    open(os.path.join(sandbox, "outside"), "w").close()
    found["sandbox_writable"] = True
except OSError:
    found["sandbox_writable"] = False
print(json.dumps(found))
"""


@pytest.fixture
def confined(tmp_path):
    """What a worker confined to a sandbox under `tmp_path` measured, with the file the grader
    planted in /tmp for it (removed afterwards)."""
    sandbox = tmp_path / "sandbox"
    (sandbox / "work").mkdir(parents=True)
    (sandbox / "submission.py").write_text("submitted")
    with confinement.planted_file() as planted:
        completed = subprocess.run([sys.executable, "-I", "-c", CONFINED.format(autograder=AUTOGRADER),
                                    str(sandbox), planted.path], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr[-3000:]
        yield json.loads(completed.stdout), planted, sandbox


def test_network_is_refused_but_for_unix_sockets(confined):
    found, planted, _ = confined
    assert found["installed"]["network"] == "", found["installed"]
    assert found["report"]["sockets"] == {name: "EACCES" for name in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET")}
    assert found["unix"] == "unix"  # torch's DataLoader workers need AF_UNIX
    judged = confinement.judge(found["report"], planted)
    assert judged.network_blocked and "network blocked by a seccomp filter" in confinement.network_sentence(judged)


def test_sysv_ipc_is_refused(confined):
    """Shared memory, semaphores and queues of System V outlive the worker and count against no
    limit of its own (issue 22's tester filled the host's memory with them): refused."""
    found, _, _ = confined
    assert found["installed"]["ipc"] == "", found["installed"]
    assert found["sysv"] == [[-1, errno.EPERM]] * 3


@LANDLOCK
def test_view_is_the_sandbox_and_the_interpreter(confined):
    found, planted, sandbox = confined
    assert found["installed"]["view"] == "", found["installed"]
    assert found["report"]["planted"] == "error: EACCES"
    assert not found["child_reads_planted"]  # what it starts inherits the view
    assert found["sandbox_readable"] == "submitted" and not found["sandbox_writable"]
    assert (sandbox / "work" / "written").read_text() == "work is writable"
    judged = confinement.judge(found["report"], planted)
    assert judged.view_restricted and judged.landlock_abi >= 1
    assert "refused: EACCES" in confinement.view_sentence(judged)


def test_the_grader_judges_the_measurements_not_the_claims():
    with confinement.planted_file() as planted:
        with open(planted.path) as file:
            assert file.read() == planted.token and os.stat(planted.path).st_mode & 0o004
        # a worker that read the token or opened a socket, whatever it says was installed
        report = {"installed": {"network": "", "view": ""}, "landlock_abi": 7,
                  "sockets": {"AF_INET": "created", "AF_INET6": "EACCES"}, "planted": planted.token}
        judged = confinement.judge(report, planted)
        assert not judged.network_blocked and not judged.view_restricted
        assert "network NOT blocked" in confinement.network_sentence(judged)
        assert "readable where its permissions allow" in confinement.view_sentence(judged)
        assert not confinement.judge(None, planted).network_blocked  # no report: nothing held
    assert not os.path.exists(planted.path)
