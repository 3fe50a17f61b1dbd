"""The regrade ledger (autograder/ta/ledger.py), through batch.run with an engine that writes
hand-made results instead of grading: what moved, why, what was kept, drops and overrides."""

import csv
import json
import os

import pytest

from autograder import kit_version, rubric
from autograder.ta import batch, ledger, similarity
from ta_documents import NUMBER, document

CURRENT = kit_version.fingerprint()
OLD = "0" * 16
TRAINING_TARGETS = NUMBER["train_epoch predicts actions[:, 1:] from actions[:, :-1]"]
CLIPPING = NUMBER["train_epoch clips the gradient norm to 1.0"]


def engine(made: dict):
    """A batch engine that 'grades' each pending submission by writing made[name]."""
    def grade(pending, out, only, jobs):
        for submission in pending:
            with open(submission.results_path(out), "w") as file:
                json.dump(made[submission.name], file)
            yield submission
    return grade


@pytest.fixture(autouse=True)
def no_similarity(monkeypatch):
    """The similarity page is not what these tests are about, and is their slowest part."""
    monkeypatch.setattr(similarity, "available", lambda: "not measured in this test")


@pytest.fixture
def folder(tmp_path):
    """Four submissions (their files only name them: nothing is graded)."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in ("full", "no_shift", "no_clip", "template"):
        (folder / f"{name}.py").write_text(f"# {name}\n")
    return folder


def first_run(folder, out, **made):
    """A first grading by an older kit: every test passed except those named per submission."""
    documents = {name: document(failed=made.get(name, ()), kit=OLD, sha=f"sha-{name}")
                 for name in ("full", "no_shift", "no_clip", "template")}
    assert batch.run(str(folder), str(out), 1, engine=engine(documents)) == 0
    return documents


def rows(out) -> list:
    with open(out / "ledger.csv", newline="") as file:
        return list(csv.DictReader(file))


FAILS = dict(no_shift=[TRAINING_TARGETS], no_clip=[CLIPPING], template=[TRAINING_TARGETS, CLIPPING])
TARGETS_POINTS, CLIPPING_POINTS = (rubric.rule_for(f"test_training.py::{name}").weight
                                   for name in ("test_next_token_targets", "test_gradient_norm_clipped"))


def test_a_rubric_weight_change_moves_exactly_the_submissions_and_tests_it_should(folder, tmp_path):
    out = tmp_path / "out"
    before = first_run(folder, out, **FAILS)
    assert rows(out) == []  # a first grading moves nothing
    weights = {TRAINING_TARGETS: TARGETS_POINTS + 1, CLIPPING: CLIPPING_POINTS - 1}  # a point moved
    after = {name: document(failed=FAILS.get(name, ()), kit=CURRENT, sha=f"sha-{name}", weights=weights)
             for name in before}
    assert batch.run(str(folder), str(out), 1, engine=engine(after)) == 0
    moved = {row["submission"]: row for row in rows(out)}
    assert set(moved) == {"no_shift", "no_clip"}  # full and template: the same total
    assert moved["no_shift"]["tests"] == f"{CLIPPING}: {CLIPPING_POINTS:g} -> {CLIPPING_POINTS - 1:g}"
    assert moved["no_clip"]["tests"] == f"{TRAINING_TARGETS}: {TARGETS_POINTS:g} -> {TARGETS_POINTS + 1:g}"
    assert (moved["no_shift"]["before"], moved["no_shift"]["after"]) == (f"{100 - TARGETS_POINTS:g}",
                                                                         f"{99 - TARGETS_POINTS:g}")
    assert (moved["no_clip"]["before"], moved["no_clip"]["after"]) == (f"{100 - CLIPPING_POINTS:g}",
                                                                       f"{101 - CLIPPING_POINTS:g}")
    assert all(row["why"] == f"kit fingerprint changed ({OLD} -> {CURRENT})" for row in moved.values())
    # the earlier results are kept, as the first run wrote them
    (run,) = os.listdir(out / "history")
    assert json.loads((out / "history" / run / "no_shift.json").read_text()) == before["no_shift"]
    page = (out / "report" / "ledger.html").read_text()
    assert "<td>no_shift</td>" in page and f"{CLIPPING}: {CLIPPING_POINTS:g} -&gt;" in page
    assert "<td>full</td>" not in page


@pytest.mark.parametrize("sha, kit, why", [
    ("sha-new", OLD, "submission changed"),
    ("sha-new", CURRENT, f"submission changed; kit fingerprint changed ({OLD} -> {CURRENT})"),
    ("sha-no_shift", OLD, ledger.UNCHANGED),
], ids=["submission", "submission-and-kit", "neither"])
def test_the_ledger_says_why_a_grade_moved(folder, tmp_path, sha, kit, why):
    out = tmp_path / "out"
    before = first_run(folder, out, **FAILS)
    after = dict(before, no_shift=document(failed=[], kit=kit, sha=sha))
    assert batch.run(str(folder), str(out), 1, regrade=True, engine=engine(after)) == 0
    (row,) = rows(out)
    assert (row["submission"], row["before"], row["after"], row["why"]) == (
        "no_shift", f"{100 - TARGETS_POINTS:g}", "100", why)
    assert row["tests"] == f"{TRAINING_TARGETS}: 0 -> {TARGETS_POINTS:g}"


def test_never_lower_keeps_the_higher_grade_and_records_both(folder, tmp_path):
    out = tmp_path / "out"
    before = first_run(folder, out)
    after = dict(before, full=document(failed=[CLIPPING], kit=OLD, sha="sha-full"))
    assert batch.run(str(folder), str(out), 1, regrade=True, never_lower=True, engine=engine(after)) == 0
    (row,) = rows(out)
    lowered = f"{100 - CLIPPING_POINTS:g}"
    assert (row["before"], row["after"], row["graded"]) == ("100", "100", lowered)
    assert f"kept 100: the regrade gave {lowered} (--never-lower)" in row["why"]
    summary = {r["submission"]: r for r in csv.DictReader(open(out / "summary.csv", newline=""))}
    assert (summary["full"]["total"], summary["full"]["graded total"]) == ("100", lowered)
    assert "--never-lower" in summary["full"]["adjusted"]
    # without the flag the next run records the grader's 97, and says why
    assert batch.run(str(folder), str(out), 1, regrade=True, engine=engine(after)) == 0
    last = rows(out)[-1]
    assert (last["before"], last["after"]) == ("100", lowered) and "no longer: kept 100" in last["why"]


def test_overrides_apply_on_top_of_every_regrade_and_show_as_such(folder, tmp_path, capsys):
    out = tmp_path / "out"
    first_run(folder, out, **FAILS)
    (out / "overrides.csv").write_text(
        "submission,test,points,note\n"
        f"no_clip,{CLIPPING},{CLIPPING_POINTS:g},clipping done by the scheduler: accepted\n"
        "template,total,0,no work submitted\n"
        "nobody,total,50,a typo\n"
        f"full,{CLIPPING},lots,not a number\n")
    documents = {name: document(failed=FAILS.get(name, ()), kit=OLD, sha=f"sha-{name}")
                 for name in ("full", "no_shift", "no_clip", "template")}
    for _ in range(2):  # applied again by a regrade, moving nothing the second time
        assert batch.run(str(folder), str(out), 1, regrade=True, engine=engine(documents)) == 0
    moved = {row["submission"]: row for row in rows(out)}
    assert set(moved) == {"no_clip", "template"} and len(rows(out)) == 2
    assert (moved["no_clip"]["before"], moved["no_clip"]["after"]) == (f"{100 - CLIPPING_POINTS:g}", "100")
    assert (f"override {CLIPPING}: 0 -> {CLIPPING_POINTS:g} (clipping done by the scheduler: accepted)"
            in moved["no_clip"]["why"])
    template = 100 - TARGETS_POINTS - CLIPPING_POINTS
    assert moved["template"]["after"] == "0" and f"override total: {template:g} -> 0" in moved["template"]["why"]
    errors = capsys.readouterr().err
    assert "overrides.csv line 4: no submission 'nobody'" in errors
    assert "overrides.csv line 5: points 'lots' is not a number" in errors
    summary = {r["submission"]: r for r in csv.DictReader(open(out / "summary.csv", newline=""))}
    assert summary["no_clip"]["total"] == "100"
    assert summary["no_clip"]["graded total"] == f"{100 - CLIPPING_POINTS:g}"
    assert "override" in summary["no_clip"]["adjusted"]
    page = (out / "report" / "ledger.html").read_text()
    assert "Adjustments in force" in page and "no work submitted" in page


def test_a_dropped_test_recomputes_totals_and_is_recorded(folder, tmp_path, capsys):
    out = tmp_path / "out"
    documents = first_run(folder, out, **FAILS)
    assert batch.run(str(folder), str(out), 1, drop=["test_gradient_norm_clipped"],
                     engine=engine(documents)) == 0
    moved = {row["submission"]: row for row in rows(out)}
    # every total loses the clipping test's 3 points except where it earned none
    assert set(moved) == {"full", "no_shift"}
    assert (moved["full"]["before"], moved["full"]["after"]) == ("100", f"{100 - CLIPPING_POINTS:g}")
    assert moved["full"]["why"] == f"dropped by the TA: {CLIPPING}"
    assert moved["full"]["tests"] == f"{CLIPPING}: {CLIPPING_POINTS:g} -> dropped"
    grades = json.loads((out / "grades.json").read_text())
    assert grades["no_clip"]["dropped"] == [CLIPPING] and grades["no_clip"]["total"] == 100 - CLIPPING_POINTS
    assert batch.run(str(folder), str(out), 1, drop=["no such test"], engine=engine(documents)) == 2
    assert "--drop no such test: no such test" in capsys.readouterr().err


def test_a_grade_that_moves_with_the_same_submission_and_kit_flags_its_tests(folder, tmp_path):
    out = tmp_path / "out"
    before = first_run(folder, out)
    flaky = dict(before, full=document(failed=[CLIPPING], kit=OLD, sha="sha-full"))
    assert batch.run(str(folder), str(out), 1, regrade=True, engine=engine(flaky)) == 0
    (row,) = rows(out)
    assert row["why"] == ledger.UNCHANGED and ledger.unstable([row]) == {CLIPPING: {"full"}}
    flagged = {r["number"]: r for r in csv.DictReader(open(out / "tests.csv", newline=""))}[CLIPPING]
    assert flagged["suspect"] == "yes" and "differed between runs" in flagged["evidence"]
