"""The audit of the kit's own tests (autograder/ta/audit.py, scripts/audit.py): the smallest
headroom of correct code per test, correct code that failed, and run-to-run differences; and
CI's small sample of it, graded for real."""

import csv
import json
import os
import subprocess
import sys

import pytest

from autograder import results
from autograder.checks import margin
from autograder.ta import audit
from grading import KIT, REFERENCE
from ta_documents import NUMBER, document, with_margin

FORWARD = NUMBER["RMSNorm output matches the definition (several shapes, eps and scale values)"]
CLIPPING = NUMBER["train_epoch clips the gradient norm to 1.0"]


def by_number(found) -> dict:
    return {a.number: a for a in found}


def test_the_smallest_headroom_of_correct_code_and_who_measured_it():
    runs = [{"reference": document(extra={FORWARD: with_margin(0.2)}),
             "alternative": document(extra={FORWARD: with_margin(0.7)}),
             "mutant": document(failed=[FORWARD], extra={FORWARD: with_margin(40.0)})},
            {"reference": document(extra={FORWARD: with_margin(0.2)}),
             "alternative": document(extra={FORWARD: with_margin(0.9)}),
             "mutant": document(failed=[FORWARD], extra={FORWARD: with_margin(40.0)})}]
    forward = by_number(audit.audit(runs, correct={"reference", "alternative"}))[FORWARD]
    assert forward.headroom == pytest.approx(1 - 0.9) and forward.measured == 0.9  # the mutant's 40 is not correct code
    assert forward.closest == "alternative (run 2)" and forward.kind == "error <= atol"
    assert forward.spread == pytest.approx(0.9 - 0.7) and forward.spread_of == "alternative"
    assert forward.unstable == [] and forward.correct_failed == [] and forward.submissions == 3


def test_correct_code_that_failed_and_outcomes_that_differ_between_runs_are_named():
    runs = [{"reference": document(), "alternative": document(failed=[CLIPPING])},
            {"reference": document(failed=[FORWARD]), "alternative": document(failed=[CLIPPING])}]
    found = by_number(audit.audit(runs, correct={"reference", "alternative"}))
    assert found[FORWARD].unstable == ["reference"] and found[FORWARD].correct_failed == ["reference (run 2)"]
    assert found[CLIPPING].unstable == []  # failed both times: not a difference between runs
    assert found[CLIPPING].correct_failed == ["alternative (run 1)", "alternative (run 2)"]
    assert found[CLIPPING].headroom is None  # no margin recorded
    assert "no margin recorded" in audit.page(list(found.values()), {"reference"})


def test_headroom_reads_both_directions():
    assert margin.headroom(margin.at_most(0.25, 1.0, "a <= b")) == 0.75
    assert margin.headroom(margin.at_least(0.4, 0.1, "a >= b")) == pytest.approx(0.75)
    assert margin.headroom(margin.at_most(2.0, 1.0, "a <= b")) == -1.0  # past the threshold
    first, second = margin.at_most(0.5, 1.0, "a <= b"), margin.at_most(0.9, 1.0, "a <= b")
    assert margin.tighter(first, second) is second and margin.tighter(None, first) is first


def test_ci_sample_grades_correct_code_twice_and_reports_its_margins(tmp_path):
    """scripts/audit.py --quick: the reference and one alternative, rmsnorm only, two runs."""
    out = tmp_path / "audit"
    completed = subprocess.run([sys.executable, os.path.join(KIT, "scripts", "audit.py"), "--quick",
                                "--jobs", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    rows = {row["number"]: row for row in csv.DictReader(open(out / "audit.csv", newline=""))}
    assert set(rows) == {n for n in rows if n.startswith("2.")} and FORWARD in rows
    forward = rows[FORWARD]
    assert 0 < float(forward["smallest headroom"]) <= 1 and forward["runs"] == "2"
    assert forward["submissions"] == "2" and forward["outcome differs"] == "" and forward["correct failed"] == ""
    assert forward["kind"] == "|error| / (atol + rtol |expected|) <= 1"
    assert "Audit of the kit" in (out / "audit.html").read_text()
    # each graded results.json records the hash of the file it graded
    graded = json.loads((out / "run1" / "results" / "reference.json").read_text())
    assert graded["extra_data"][results.SUBMISSION_HASH] == results.file_sha256(REFERENCE)
