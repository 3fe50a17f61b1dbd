"""Each grading's worker has ids of its own (autograder/sandbox/identity.py): drawn unused,
never another grading's, and the clean-up after a grading reaches its processes and files only."""

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from autograder.sandbox import identity, protections

ROOT = os.geteuid() == 0
KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _drawn_in_a_fresh_process() -> int:
    code = "from autograder.sandbox import identity; print(identity.current().uid)"
    return int(subprocess.run([sys.executable, "-c", code], cwd=KIT, capture_output=True, text=True,
                              check=True).stdout)


@pytest.mark.skipif(not ROOT, reason="only root switches to the worker's ids")
def test_every_grading_draws_unused_ids_of_its_own():
    drawn = [_drawn_in_a_fresh_process() for _ in range(3)]
    assert len(set(drawn)) == 3, drawn
    for uid in drawn:
        assert uid in identity.IDS
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
    assert identity.current() == identity.current()  # one per grading, its restarts included


def _as(ids: identity.Identity, *command) -> subprocess.Popen:
    return subprocess.Popen(["setpriv", f"--reuid={ids.uid}", f"--regid={ids.gid}", "--clear-groups",
                             "--", *command], start_new_session=True)


@pytest.mark.skipif(not ROOT, reason="only root switches to the worker's ids")
def test_cleanup_reaches_only_its_own_processes_and_files():
    mine, other = identity.Identity(0x7FFFFF00, 0x7FFFFF00), identity.Identity(0x7FFFFF01, 0x7FFFFF01)
    shared = tempfile.mkdtemp(prefix="scratch1-shared-")  # as /tmp is: anyone may write
    os.chmod(shared, 0o1777)
    sleepers = {ids: _as(ids, "sh", "-c", f"mkdir {shared}/d{ids.uid} && touch {shared}/f{ids.uid} "
                                          f"{shared}/d{ids.uid}/inner && exec sleep 600")
                for ids in (mine, other)}
    try:
        deadline = time.monotonic() + 10
        while len(os.listdir(shared)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        identity.kill_processes(mine)
        sleepers[mine].wait(timeout=10)
        assert sleepers[other].poll() is None  # another grading's worker lives on
        removed = identity.remove_files(mine, roots=(str(shared),))
        assert sorted(removed) == [f"{shared}/d{mine.uid}", f"{shared}/f{mine.uid}"]
        assert sorted(os.listdir(shared)) == [f"d{other.uid}", f"f{other.uid}"]
    finally:
        for process in sleepers.values():
            process.kill()
            process.wait()
        shutil.rmtree(shared)


def test_a_batch_without_namespaces_warns_when_the_worker_can_read_the_kit(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(os.path.join(KIT, "student", "backbone.py"), tmp_path / "in" / "template.py")
    environment = dict(os.environ, SCRATCH1_NAMESPACES="none",
                       PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    completed = subprocess.run([os.path.join(KIT, "run_autograder"), "--batch", str(tmp_path / "in"),
                                "--out", str(tmp_path / "out"), "--only", "interface"],
                               capture_output=True, text=True, timeout=300, env=environment)
    reference = os.path.join(KIT, "reference", "backbone.py")
    readable = protections.readable_by_others(reference) if ROOT else os.access(reference, os.R_OK)
    warned = "WARNING: the worker can read the reference solution" in completed.stderr
    assert warned == readable, completed.stderr[-3000:]
    if readable:  # before the grading starts and again after the score table
        assert completed.stderr.count(f"    {os.path.realpath(KIT)}\n") == 2, completed.stderr[-3000:]
