"""The grader's own errors are the grader's: never blamed on the student, always shown to the TA."""

import json
import os
import subprocess
import sys

import pytest

from autograder import rubric
from autograder.sandbox.client import Worker
from autograder.sandbox.errors import GraderError
from autograder.sandbox.limits import Limits
from grading import KIT, REFERENCE

# A grader-side typo injected into the real grading: every rmsnorm request reaches the real
# worker with `scale` misspelt as `scal`.
MISSPELT_KEYWORD = """
import sys
from autograder import cli
from autograder.checks.submission import Submission
send = Submission.call
def misspelt(self, op, what, **args):
    if "scale" in args:
        args["scal"] = args.pop("scale")
    return send(self, op, what, **args)
Submission.call = misspelt
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_misspelt_keyword_is_reported_as_the_graders_error(tmp_path):
    results_path = tmp_path / "results.json"
    command = [sys.executable, "-c", MISSPELT_KEYWORD, "--submission", REFERENCE,
               "--results", str(results_path), "--only", "rmsnorm"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=KIT,
                               env=dict(os.environ, PYTHONPATH=KIT))
    with open(results_path) as file:
        document = json.load(file)
    outputs = [t["output"] for t in document["tests"] if t["tags"] == ["rmsnorm"]]
    assert outputs and all("internal error" in o and "not your fault" in o for o in outputs), outputs
    assert not any("RMSNorm raised" in o or "TypeError" in o for o in outputs), outputs
    assert "INTERNAL ERROR of the grader in" in document["output"], document["output"]
    assert "internal error of the grader in" in completed.stdout  # the TA's view: the run's log
    assert "'scal'" in completed.stdout, completed.stdout[-3000:]


def test_a_request_for_an_unknown_op_is_the_graders_error(tmp_path):
    limits = Limits.sized(rubric.WORKER)
    worker = Worker(REFERENCE, limits, rubric.WORKER.import_timeout,
                    rubric.WORKER.start_timeout)
    worker.begin_check("an unknown op", 30.0)
    try:
        with pytest.raises(GraderError, match="no op for the request"):
            worker.call("rmsnrom", dim=4)
        assert worker.process is not None  # the worker lives on: nothing crashed
    finally:
        worker.stop()
