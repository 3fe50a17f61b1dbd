"""Cases graded inside a container of Gradescope's default memory (tests/cases/*/expect.json with
"box": true): the grading runs in a fresh cgroup v1 memory cgroup of 768 MB, swap included, as
../shared/tools/gsbox.sh makes (without its 0.5 vCPU quota, which only makes the run slower).
The grader must size its worker to that container (autograder/sandbox/memory.py), so a submission that
fills memory fails only the checks that ran it, with a message that says so, and the kernel's
OOM killer never has to act.
"""

import json
import os
import subprocess
import sys

import pytest

from autograder import results, rubric
from autograder.sandbox import memory
from grading import KIT, by_category
from test_cases import CASES, _expect, case_file

BOX_MB = 768  # Gradescope's default machine
CGROUP_V1_MEMORY = "/sys/fs/cgroup/memory"


def _why_no_box() -> str:
    if os.geteuid() != 0:
        return "making a memory cgroup needs root"
    if not os.access(os.path.join(CGROUP_V1_MEMORY, "cgroup.procs"), os.W_OK):
        return f"no writable cgroup v1 memory controller at {CGROUP_V1_MEMORY}"
    return ""


def _box_cases() -> list:
    names = sorted(n for n in os.listdir(CASES) if os.path.isfile(os.path.join(CASES, n, "expect.json")))
    return [n for n in names if _expect(n).get("box")]


@pytest.fixture
def box():
    """A fresh memory cgroup of BOX_MB (memory and memory+swap): its folder."""
    folder = os.path.join(CGROUP_V1_MEMORY, f"scratch1-test-box-{os.getpid()}")
    os.mkdir(folder)
    try:
        with open(os.path.join(folder, "memory.limit_in_bytes"), "w") as file:
            file.write(str(BOX_MB * 2**20))
        swap = os.path.join(folder, "memory.memsw.limit_in_bytes")
        if os.path.exists(swap):
            with open(swap, "w") as file:
                file.write(str(BOX_MB * 2**20))
        yield folder
    finally:
        os.rmdir(folder)  # every process in it has ended with the grading


def _oom_kills(folder: str) -> int:
    with open(os.path.join(folder, "memory.oom_control")) as file:
        return next((int(line.split()[1]) for line in file if line.startswith("oom_kill ")), 0)


def test_worker_limit_is_what_the_container_leaves_the_grader(monkeypatch):
    cap, grader = rubric.WORKER.memory_bytes, rubric.WORKER.grader_memory_bytes
    monkeypatch.setattr(memory, "container_limit", lambda: (BOX_MB * 2**20, "cgroup v1 memory.limit_in_bytes"))
    limit, text = memory.worker_limit(cap, grader)
    assert limit == BOX_MB * 2**20 - grader < cap and f"the container's {BOX_MB} MB" in text
    monkeypatch.setattr(memory, "container_limit", lambda: (16 * 2**30, "physical memory"))
    assert memory.worker_limit(cap, grader) == (cap, f"{cap // 2**20} MB")


@pytest.mark.slow  # ~60-110 s: every check that runs the attention restarts the worker
@pytest.mark.skipif(bool(_why_no_box()), reason=_why_no_box() or "box available")
@pytest.mark.parametrize("name", _box_cases())
def test_case_in_gradescope_sized_box(name, box, tmp_path):
    expect = _expect(name)
    results_path = str(tmp_path / "results.json")
    # the shell joins the cgroup, then becomes the grader: every process it starts is counted
    command = ["sh", "-c", f'echo $$ > {box}/cgroup.procs && exec "$@"', "sh",
               os.path.join(KIT, "run_autograder"), "--submission",
               case_file(name, tmp_path), "--results", results_path]
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    assert os.path.exists(results_path), completed.stdout[-3000:] + completed.stderr[-3000:]
    with open(results_path) as file:
        document = json.load(file)
    assert results.problems(document) == []
    # sized to the box, as the TA's view of the isolation says (results.json's extra_data)
    assert f"the container's {BOX_MB} MB" in "; ".join(document["extra_data"]["isolation"])
    assert _oom_kills(box) == 0, "the worker's limit should have stopped it before the kernel had to"
    totals = by_category(document)
    kept = [c for c in expect["must_lose"] if totals[c][0] >= totals[c][1]]
    lost = {c: [t["output"][:300] for t in document["tests"] if t["tags"] == [c] and t["score"] < t["max_score"]]
            for c in expect["must_keep_full"] if totals[c][0] < totals[c][1]}
    assert not kept, f"{name}: should have lost points in {kept}"
    assert not lost, f"{name}: lost points in {lost}"
    for test_name, phrase in expect.get("messages", {}).items():
        texts = [t["output"] for t in document["tests"] if test_name in ("*", t["name"])]
        assert any(phrase in text for text in texts), f"{name}: no output of {test_name!r} says {phrase!r}"
