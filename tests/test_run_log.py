"""What a TA reads in a grading's terminal output (the run's log): what the student's code
printed only when it printed something, one traceback per error of the grader (never pytest's
chained ones), and the interpreter chosen with SCRATCH1_GRADER_PYTHON."""

import json
import os
import subprocess
import sys

from grading import KIT, REFERENCE, TEMPLATE

RUN_AUTOGRADER = os.path.join(KIT, "run_autograder")

# A grader bug raised while handling another exception, injected into every rmsnorm request.
CHAINED_GRADER_BUG = """
import sys
from autograder import cli
from autograder.checks.submission import Submission
def broken(self, op, what, **args):
    try:
        {}["no such key"]
    except KeyError:
        raise RuntimeError("a bug of the grader")
Submission.call = broken
sys.exit(cli.main(sys.argv[1:]))
"""


def _run(submission, tmp_path, *extra, **environment):
    results_path = tmp_path / "results.json"
    completed = subprocess.run([RUN_AUTOGRADER, "--submission", str(submission), "--results", str(results_path),
                                "--only", "interface", *extra], capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, **environment))
    return completed, json.loads(results_path.read_text())


def test_what_the_code_printed_is_shown_only_when_it_printed_something(tmp_path):
    completed, _ = _run(TEMPLATE, tmp_path)
    assert "what your code printed" not in completed.stdout and "(cut)" not in completed.stdout
    chatty = tmp_path / "backbone.py"
    with open(TEMPLATE) as file:
        chatty.write_text(file.read() + '\nprint("hello from backbone.py")\n')
    completed, _ = _run(chatty, tmp_path)
    assert "---- what your code printed ----\nhello from backbone.py" in completed.stdout, completed.stdout


def test_a_grader_error_prints_one_traceback_and_no_chain(tmp_path):
    results_path = tmp_path / "results.json"
    completed = subprocess.run([sys.executable, "-c", CHAINED_GRADER_BUG, "--submission", REFERENCE,
                                "--results", str(results_path), "--only", "rmsnorm"],
                               capture_output=True, text=True, timeout=300, cwd=KIT,
                               env=dict(os.environ, PYTHONPATH=KIT))
    log = completed.stdout
    errors = log.count("---- internal error of the grader in")
    assert errors >= 3, log[-3000:]  # one per failing case of the rmsnorm tests
    assert log.count("Traceback (most recent call last)") == errors, log[-3000:]
    assert "During handling of the above exception" not in log, log[-3000:]
    assert log.count("(raised while handling KeyError: 'no such key')") == errors
    assert "_pytest" not in log and "pluggy" not in log  # the check's frames, not pytest's
    document = json.loads(results_path.read_text())
    assert all("internal error" in t["output"] for t in document["tests"])


def test_scratch1_grader_python_chooses_the_graders_interpreter(tmp_path):
    marker = tmp_path / "used"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    completed, document = _run(TEMPLATE, tmp_path, SCRATCH1_GRADER_PYTHON=str(wrapper))
    assert completed.returncode == 0 and marker.exists(), completed.stderr[-3000:]
    assert document["score"] == 5
    missing = subprocess.run([RUN_AUTOGRADER, "--help"], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, SCRATCH1_GRADER_PYTHON=str(tmp_path / "no-python")))
    assert missing.returncode == 2 and "SCRATCH1_GRADER_PYTHON" in missing.stderr
