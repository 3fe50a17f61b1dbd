"""The grader's own errors are the grader's: never blamed on the student, always shown to the TA.
Whose fault a failure is, is decided on the grader's side (sandbox/errors.py): what the grader
detects itself (a request of its own that does not fit the protocol, a check that raises) is its
own; a fault of the kit's worker code is only the worker's claim, which the submission's code
could forge: it fails the check in the submission's name and is recorded for the TA, and the
install's self-test (the reference graded in the real sandbox) is what catches a real one."""

import json
import os
import subprocess
import sys
import types

import pytest
import torch

from autograder import rubric
from autograder.checks.submission import CLAIMED_FAULT
from autograder.sandbox.client import Worker
from autograder.sandbox.errors import GraderError
from autograder.sandbox.limits import Limits
from autograder.worker import session as worker
from autograder.worker.ops import rmsnorm
from autograder.worker.protocol import Op
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


def _grade_rmsnorm(tmp_path, script, submission):
    """(the finished process, results.json, the rmsnorm tests' outputs) of grading `submission`
    with `script` (python -c) standing in for run_autograder."""
    results_path = tmp_path / "results.json"
    command = [sys.executable, "-c", script, "--submission", str(submission),
               "--results", str(results_path), "--only", "rmsnorm"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=KIT,
                               env=dict(os.environ, PYTHONPATH=KIT))
    with open(results_path) as file:
        document = json.load(file)
    outputs = [t["output"] for t in document["tests"] if t["tags"] == ["rmsnorm"]]
    return completed, document, outputs


def test_a_misspelt_keyword_is_found_by_the_grader_as_its_own_error(tmp_path):
    completed, document, outputs = _grade_rmsnorm(tmp_path, MISSPELT_KEYWORD, REFERENCE)
    assert outputs and all("internal error" in o and "not your fault" in o for o in outputs), outputs
    assert not any("RMSNorm raised" in o or "TypeError" in o for o in outputs), outputs
    assert "INTERNAL ERROR of the grader in" in document["output"], document["output"]
    assert "internal error of the grader in" in completed.stdout  # the TA's view: the run's log
    assert "'scal'" in completed.stdout and "does not fit the protocol" in completed.stdout, \
        completed.stdout[-3000:]


def test_a_request_for_an_unknown_op_is_the_graders_error(tmp_path):
    limits = Limits.sized(rubric.WORKER)
    worker = Worker(REFERENCE, limits, rubric.WORKER.import_timeout,
                    rubric.WORKER.start_timeout)
    worker.begin_check("an unknown op", 30.0)
    try:
        with pytest.raises(GraderError, match="'rmsnrom' does not fit the protocol: no such op"):
            worker.call("rmsnrom", dim=4)
        assert worker.process is None  # found before anything was sent
    finally:
        worker.close()


# A bug of the kit's own worker code injected into the real grading: the grader runs on a copy
# of the worker package whose rmsnorm op looks RMSNorm's gain up with a KeyError of its own.
KIT_BUG_IN_AN_OP = """
import os, shutil, sys, tempfile
from autograder import cli
from autograder.sandbox import process
copy = os.path.join(tempfile.mkdtemp(), "worker")
shutil.copytree(process.WORKER_PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
with open(os.path.join(copy, "ops", "rmsnorm.py"), "a") as file:
    file.write("\\n\\ndef find_scale(session, norm, dim):  # the injected bug\\n"
               "    return {}['scale']\\n")
process.WORKER_PACKAGE = copy
sys.exit(cli.main(sys.argv[1:]))
"""

# A student's bug that torch reports at a line of the kit: a gain of shape (1,) (its own forward
# broadcasts it), into which the rmsnorm op copies the grader's (dim,) gain.
SCALAR_GAIN = ("self.scale = nn.Parameter(torch.ones(dim))", "self.scale = nn.Parameter(torch.ones(1))")


def test_a_kit_fault_claimed_by_the_worker_is_recorded_for_the_ta_not_taken_on_trust(tmp_path):
    # Before: every rmsnorm test said "internal error of the grader ... not your fault" and the run
    # exited 1, on the worker's word. Now the worker's claim (with the kit's line) fails the checks
    # in the submission's name, says what was claimed, and is kept for the TA; the reference
    # losing its rmsnorm points is what the install's self-test (100 required) stops on.
    completed, document, outputs = _grade_rmsnorm(tmp_path, KIT_BUG_IN_AN_OP, REFERENCE)
    assert outputs and all(CLAIMED_FAULT in o and "tell the course staff" in o for o in outputs), outputs
    assert not any("internal error" in o for o in outputs), outputs
    assert "INTERNAL ERROR" not in document["output"] and completed.returncode == 0, document["output"]
    assert "internal_error" not in document["extra_data"]
    claims = document["extra_data"]["claimed_kit_faults"]
    assert claims["count"] >= 1 and claims["first"][0]["op"] == Op.RMSNORM, claims
    assert "worker/ops/rmsnorm.py" in claims["first"][0]["error"]["message"], claims
    assert "KeyError" in completed.stdout and "worker/ops/rmsnorm.py" in completed.stdout
    assert document["score"] < sum(t["max_score"] for t in document["tests"])


def test_a_student_bug_that_torch_reports_at_a_kit_line_stays_the_students(tmp_path):
    with open(REFERENCE) as file:
        source = file.read()
    assert source.count(SCALAR_GAIN[0]) == 1
    submission = tmp_path / "backbone.py"
    submission.write_text(source.replace(*SCALAR_GAIN))
    completed, document, outputs = _grade_rmsnorm(tmp_path, "import sys\nfrom autograder import cli\n"
                                                  "sys.exit(cli.main(sys.argv[1:]))", submission)
    assert outputs and all("RMSNorm raised RuntimeError" in o for o in outputs), outputs
    assert not any("internal error" in o for o in outputs), outputs
    assert "INTERNAL ERROR" not in document["output"] and completed.returncode == 0, document["output"]


# In-process: the real request loop (worker.handle) and the real ops, on small submissions.
def _session(source: str) -> worker.Session:
    module = types.ModuleType("backbone")
    exec(compile(source, "backbone.py", "exec"), vars(module))
    session = worker.Session()
    session.module = module
    return session


def _rmsnorm_request(dim: int = 4) -> dict:
    x = torch.randn(2, 3, dim)
    return {"op": Op.RMSNORM, "args": dict(dim=dim, eps=1e-6, scale=torch.ones(dim), x=x,
                                           grad_out=torch.ones_like(x))}


def _error(session, request) -> dict:
    reply = worker.handle(session, request)
    assert not reply["ok"], reply
    return reply["error"]


def test_a_kit_line_that_raises_is_internal_and_says_where(monkeypatch):
    with open(REFERENCE) as file:
        session = _session(file.read())
    assert worker.handle(session, _rmsnorm_request())["ok"]
    monkeypatch.setattr(rmsnorm, "detached_copy", None)  # the op's own line now fails
    error = _error(session, _rmsnorm_request())
    assert error["internal"] is True and error["kind"] == "TypeError", error
    assert "worker/ops/rmsnorm.py" in error["message"], error


def test_logits_of_the_wrong_rank_indexed_by_the_kit_are_the_students():
    session = _session("")

    class FlatLogits(torch.nn.Module):  # (batch * seq, vocab): the convergence op indexes [:, -1, :]
        def forward(self, ids):
            return torch.zeros(ids.numel(), 5)

    session.state["trained_model"] = FlatLogits()
    prefixes = torch.zeros(2, 3, dtype=torch.long)
    error = _error(session, {"op": Op.CONVERGENCE_PREDICT, "args": {"prefixes": prefixes}})
    assert error["kind"] == "IndexError" and "internal" not in error, error


def test_a_class_that_does_not_take_the_templates_arguments_is_the_students():
    session = _session("class RotaryPositionalEmbedding:\n    def __init__(self, dim):\n        pass\n")
    q = torch.zeros(1, 2, 4, 8)
    error = _error(session, {"op": Op.ROPE, "args": dict(dim=8, max_seq_len=16, q=q, k=q)})
    assert error["kind"] == "TypeError" and "max_seq_len" in error["message"], error
    assert "internal" not in error, error


def test_a_missing_name_is_the_students():
    error = _error(_session(""), _rmsnorm_request())
    assert error["kind"] == "MissingName" and "internal" not in error, error


# The grader stuck in a check of its own (a hang injected into Submission.call), with the
# watchdog's deadline scaled down from 540 s to 5 s.
STUCK_GRADER = """
import sys, time
from autograder import cli
from autograder.checks.submission import Submission
cli.WRITE_BY_SECONDS = 5.0
Submission.call = lambda self, *args, **kwargs: time.sleep(10**6)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_stuck_grader_still_writes_results_before_gradescope_stops_it(tmp_path):
    # Without the watchdog, pytest-timeout's backstop ends the process after 160 s with no
    # results.json at all; the cause below is the watchdog's, written at 5 s.
    completed, document, outputs = _grade_rmsnorm(tmp_path, STUCK_GRADER, REFERENCE)
    assert completed.returncode == 1 and outputs == [], completed.stderr[-2000:]
    assert "did not finish within 5 s" in document["extra_data"]["internal_error"], document
