"""The grader's own failures are never the student's (issue 10): a worker that cannot start or
cannot import torch ends the grading as an internal error (no test charged, exit status 1, a
grader error in batch summaries), the isolation line reports what was measured, and
`run_autograder` without arguments refuses to run outside a Gradescope container."""

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from autograder import results
from autograder.sandbox import isolation
from grading import KIT, TEMPLATE

RUN_AUTOGRADER = os.path.join(KIT, "run_autograder")
# A Python that starts but has no torch: the base interpreter of the kit's virtualenv.
BASE_PYTHON = os.path.join(sys.base_prefix, "bin", "python3")


def _environment(**extra) -> dict:
    return dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
                **extra)


def _grade_with_worker_python(python: str, tmp_path):
    """Grade the template's interface with the worker started from `python`."""
    results_path = tmp_path / "results.json"
    completed = subprocess.run([RUN_AUTOGRADER, "--submission", TEMPLATE, "--results", str(results_path),
                                "--only", "interface"], capture_output=True, text=True, timeout=300,
                               env=_environment(SCRATCH1_WORKER_PYTHON=python))
    assert results_path.exists(), completed.stderr[-3000:]
    return completed, json.loads(results_path.read_text())


def _assert_internal_error(completed, document, cause: str):
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert results.problems(document) == []
    assert document["score"] == 0 and document["tests"] == [], "a test was charged to the student"
    assert results.INTERNAL_ERROR in document["output"]
    assert cause in results.internal_error_of(document), results.internal_error_of(document)
    assert "INTERNAL ERROR" in completed.stderr


def _assert_isolation_as_measured(document):
    """The isolation line follows the namespace probe made here, not the worker's failure."""
    output = document["output"]
    if isolation.namespaces():
        assert "network blocked" in output and "hidden from the worker" in output, output
        assert "namespaces refused" not in output and "READABLE" not in output, output


def test_a_worker_interpreter_that_cannot_start_is_an_internal_error(tmp_path):
    completed, document = _grade_with_worker_python(str(tmp_path / "no-such-python"), tmp_path)
    _assert_internal_error(completed, document, "exited before it was ready")
    assert "no-such-python" in results.internal_error_of(document)
    _assert_isolation_as_measured(document)


@pytest.mark.skipif(isolation.worker_user() is None, reason="needs root and the worker user")
def test_an_interpreter_in_a_folder_the_worker_user_cannot_enter_is_an_internal_error(tmp_path):
    """As on a machine whose Python lives under a private home: the worker user's shell cannot
    reach the interpreter (a 0700 folder of root's), while the grader, as root, can."""
    private = tempfile.mkdtemp(prefix="scratch1-private-")  # 0700, root's
    public = tempfile.mkdtemp(prefix="scratch1-public-")
    try:
        os.symlink(os.path.realpath(sys.executable), os.path.join(private, "python3"))
        launcher = os.path.join(public, "python3")
        with open(launcher, "w") as file:
            file.write(f'#!/bin/sh\nexec {os.path.join(private, "python3")} "$@"\n')
        os.chmod(launcher, 0o755)
        os.chmod(public, 0o755)
        completed, document = _grade_with_worker_python(launcher, tmp_path)
    finally:
        shutil.rmtree(private)
        shutil.rmtree(public)
    # Under bubblewrap the worker sees no folder but the interpreter's own and its sandbox, so
    # the launcher is not even there; otherwise the private folder refuses the worker user.
    cause = "No such file or directory" if isolation.namespaces() == "bwrap" else "Permission denied"
    _assert_internal_error(completed, document, cause)
    _assert_isolation_as_measured(document)


@pytest.mark.skipif(subprocess.run([BASE_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0,
                    reason="the base interpreter of this Python has torch (no virtualenv)")
def test_a_worker_that_cannot_import_torch_is_an_internal_error(tmp_path):
    completed, document = _grade_with_worker_python(BASE_PYTHON, tmp_path)
    _assert_internal_error(completed, document, "No module named 'torch'")
    _assert_isolation_as_measured(document)


def test_batch_marks_a_grader_error_and_scores_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(TEMPLATE, tmp_path / "in" / "template.py")
    out = tmp_path / "out"
    completed = subprocess.run([RUN_AUTOGRADER, "--batch", str(tmp_path / "in"), "--out", str(out),
                                "--only", "interface"], capture_output=True, text=True, timeout=300,
                               env=_environment(SCRATCH1_WORKER_PYTHON=str(tmp_path / "no-such-python")))
    assert completed.returncode == 1 and "not graded (1): template" in completed.stderr, completed.stderr
    with open(out / "summary.csv", newline="") as file:
        (row,) = list(csv.DictReader(file))
    assert row["error"].startswith("grader error (not the student's)") and row["total"] == "", row


def test_without_arguments_outside_gradescope_it_explains_and_changes_nothing(tmp_path):
    """As on a TA's machine: even a root with an /autograder-like folder (a submission in it)
    gets the local usage, and nothing is created or written."""
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    shutil.copy(TEMPLATE, root / "submission" / "backbone.py")
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    completed = subprocess.run([RUN_AUTOGRADER], cwd=tmp_path, capture_output=True, text=True,
                               timeout=120, env=_environment(SCRATCH1_AUTOGRADER_ROOT=str(root)))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "--submission PATH --results FILE" in completed.stderr
    assert "nothing was changed" in completed.stderr
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("failing, message", [
    ((2,), "the worker process ended with status 0"),
    ((2, 3), "your code's earlier process left the machine without the memory or processes"),
], ids=["fails_once", "fails_twice"])
def test_a_restart_that_fails_to_start_is_never_the_graders_fault(tmp_path, failing, message):
    """As on a machine busy with other gradings, or left without memory by the submission's
    processes (issue 22's tester: SysV shared memory): the worker's second start (a restart
    after the submission's os._exit) fails; the grader starts it once more, and should that
    fail too, charges the submission, which ran in between, with what it measured, instead of
    calling the whole grading its own fault. Without namespaces, so the worker reaches the
    launcher."""
    public = tempfile.mkdtemp(prefix="scratch1-public-")
    try:
        os.chmod(public, 0o755)
        starts = os.path.join(public, "starts")  # ours, so the worker's clean-up leaves it
        with open(starts, "w"):
            os.chmod(starts, 0o666)
        launcher = os.path.join(public, "python3")
        with open(launcher, "w") as file:  # run by the kernel (exec by a shell may be refused)
            file.write(f"#!{sys.executable}\nimport os, runpy, sys\n"
                       f"with open({starts!r}, 'a+') as file:\n"
                       "    file.write('start\\n')\n    file.seek(0)\n    starts = len(file.readlines())\n"
                       f"if starts in {failing!r}:\n    sys.exit(3)\n"
                       "sys.dont_write_bytecode, sys.argv = True, sys.argv[-1:]\n"
                       "runpy.run_path(sys.argv[0], run_name='__main__')\n")
        os.chmod(launcher, 0o755)
        submission = tmp_path / "backbone.py"
        with open(os.path.join(KIT, "reference", "backbone.py")) as file:
            submission.write_text(file.read() + "\n\nimport os as _os\n"
                                  "RMSNorm.forward = lambda self, x: _os._exit(0)\n")
        results_path = tmp_path / "results.json"
        completed = subprocess.run([RUN_AUTOGRADER, "--submission", str(submission), "--results",
                                    str(results_path), "--only", "rmsnorm"], capture_output=True,
                                   text=True, timeout=300,
                                   env=_environment(SCRATCH1_WORKER_PYTHON=launcher, SCRATCH1_NAMESPACES="none"))
    finally:
        shutil.rmtree(public)
    document = json.loads(results_path.read_text())
    assert completed.returncode == 0 and "internal error" not in json.dumps(document), completed.stderr[-3000:]
    assert "a restarted worker failed its preflight, started again" in completed.stdout + completed.stderr
    rmsnorm = [t for t in document["tests"] if t["tags"] == ["rmsnorm"]]
    assert rmsnorm and message in rmsnorm[0]["output"], rmsnorm
    assert all(t["status"] == "failed" for t in rmsnorm), rmsnorm


@pytest.mark.skipif(subprocess.run([BASE_PYTHON, "-c", "import torch"], capture_output=True).returncode == 0,
                    reason="the base interpreter of this Python has torch (no virtualenv)")
@pytest.mark.parametrize("mode", ["submission", "batch"])
def test_without_the_packages_it_says_to_run_setup_and_prints_no_traceback(mode, tmp_path):
    """As before ./setup.sh: the grader's Python has no torch. One message, what to run, exit 2."""
    arguments = (["--submission", TEMPLATE, "--results", str(tmp_path / "results.json")]
                 if mode == "submission" else ["--batch", str(tmp_path), "--out", str(tmp_path / "out")])
    completed = subprocess.run([RUN_AUTOGRADER, *arguments], capture_output=True, text=True, timeout=60,
                               env=_environment(SCRATCH1_GRADER_PYTHON=BASE_PYTHON))
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert "Run ./setup.sh" in completed.stderr and "no module torch" in completed.stderr, output
    assert "Traceback" not in output
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "out").exists()


def test_every_package_the_environment_check_looks_for_is_pinned():
    from autograder import environment
    with open(os.path.join(KIT, "requirements.txt")) as file:
        pinned = {line.split("==")[0].strip() for line in file if "==" in line and not line.startswith("#")}
    assert set(environment.REQUIRED.values()) <= pinned
