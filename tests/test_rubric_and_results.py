"""The rubric is complete and consistent, and every results document meets Gradescope's schema."""

import ast
import glob
import json
import os

import pytest

from autograder import results, rubric
from grading import KIT


def _check_functions():
    found = set()
    for path in glob.glob(os.path.join(KIT, "autograder", "checks", "test_*.py")):
        tree = ast.parse(open(path).read())
        found |= {f"{os.path.basename(path)}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    return found


def test_weights_sum_to_100_and_categories_are_known():
    assert sum(rule.weight for rule in rubric.RULES) == 100
    assert {rule.category for rule in rubric.RULES} == set(rubric.CATEGORIES)
    assert all(rule.visibility in results.VISIBILITIES for rule in rubric.RULES)


def test_every_check_has_a_rule_and_every_rule_a_check():
    assert _check_functions() == {rule.test for rule in rubric.RULES}


def _graded(fraction: float = 0.0) -> dict:
    numbering = results.numbers()
    tests = [results.test_entry(rule, numbering[rule.test], fraction, "") for rule in rubric.RULES]
    return results.document(tests, "summary", 1.0)


def test_internal_error_document_charges_no_test_and_names_the_cause():
    document = results.internal_error("the worker could not import torch", 2.0)
    assert results.problems(document) == []
    assert document["score"] == 0 and document["tests"] == []
    assert results.INTERNAL_ERROR in document["output"] and "import torch" in document["output"]
    assert results.internal_error_of(document) == "the worker could not import torch"
    assert results.internal_error_of(_graded()) == ""
    assert results.problems(dict(document, score=5)) == ["an internal-error document must score 0"]
    assert results.problems(dict(document, extra_data={})) == ["`tests` must be a non-empty list"]


@pytest.mark.parametrize("breakage, expected", [
    (lambda d: d["tests"][0].update(tags=["rmsnorm", "rope"]), "exactly one category tag"),
    (lambda d: d["tests"][0].update(tags=["style"]), "exactly one category tag"),
    (lambda d: d["tests"][0].update(status="ok"), "status"),
    (lambda d: d["tests"][0].update(score=99), "outside"),
    (lambda d: d["tests"].pop(0), "sum to"),
    (lambda d: d.pop("execution_time"), "execution_time"),
])
def test_schema_check_rejects_broken_documents(breakage, expected):
    document = _graded()
    assert results.problems(document) == []
    breakage(document)
    assert any(expected in problem for problem in results.problems(document))


def test_write_is_atomic_json(tmp_path):
    path = tmp_path / "nested" / "results.json"
    results.write(_graded(), str(path))
    assert json.loads(path.read_text())["tests"]
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_written_results_are_bounded_whatever_the_texts(tmp_path):
    # Error text a submission controls reaches verdicts (extra_data) and outputs: 8 MB of it per
    # test, control characters included (6 characters each in JSON), must still give a file
    # under the bound, schema-valid, its outputs cut where they say so.
    document = _graded()
    for test in document["tests"]:
        test["output"] = "\x00" * 10**5
        test["extra_data"]["verdicts"] = [{"measured": "E" * 10**6, "found": "\x01" * 10**5}] * 8
    document["extra_data"] = {"claimed_kit_faults": {"first": [{"error": {"message": "M" * 10**6}}] * 20}}
    path = tmp_path / "results.json"
    written = results.write(document, str(path))
    assert path.stat().st_size <= results.MAX_RESULTS_BYTES
    assert json.loads(path.read_text()) == written and results.problems(written) == []
    assert all(test["output"].endswith(results.CUT) for test in written["tests"])


def test_visibility_policy_keeps_every_category_partly_visible():
    hidden = [rule for rule in rubric.RULES if rule.visibility != "visible"]
    assert hidden and all(rule.visibility == "after_due_date" for rule in hidden)
    for category in set(rubric.CATEGORIES) - set(rubric.BONUS_CATEGORIES):
        assert any(rule.visibility == "visible" and rule.weight > 0
                   for rule in rubric.RULES if rule.category == category), category


def test_the_students_summary_explains_the_sum_shown_now_against_the_recorded_total():
    """One score: Gradescope records the total of every test; the summary, visible at once,
    sums the tests shown now, says the recorded total is out of 100 and when it is shown, and
    never gives a hidden test's result away."""
    from autograder import cli, intake

    numbering = results.numbers()
    entries = [results.test_entry(rule, numbering[rule.test], 1.0 if rule.visibility == "visible" else 0.0, "")
               for rule in rubric.RULES]
    summary = cli._summary(intake.Intake(file="backbone.py"), None, entries, [])
    hidden = [e for e in entries if e["visibility"] != "visible"]
    shown = sum(e["max_score"] for e in entries if e["visibility"] == "visible")
    assert hidden and f"Score of the tests shown now: {shown:g} / {shown:g}" in summary
    assert (f"{len(hidden)} more tests ({sum(e['max_score'] for e in hidden):g} points) are shown after "
            "the due date. Your score, the one Gradescope records, is the total of every test, "
            "out of 100") in summary, summary
    assert "Isolation" not in summary and "preflight" not in summary
    mastery = [line for line in summary.splitlines() if line.strip().startswith("mastery")]
    # a 0-point category is no score line, only what was attempted and passed
    assert rubric.MASTERY_BONUS or mastery == ["  mastery      2 of 2 checks passed (information only, no points)"]


FORGED_NOTE = ("the grader hit an internal error in this check (KeyError at oracle.py line 88)\n"
               "This is not your fault: please tell the course staff.\u2028Points restored")


def test_the_workers_notes_read_as_its_claims_after_the_graders_words():
    # Before: a worker's note was a line of the output like the grader's own, verbatim.
    from autograder.grading_plugin import REPORTED, REPORTED_PREFIX, ResultsPlugin
    from autograder.ta.html_report import _test_html
    from autograder.verdict import Verdict

    plugin = ResultsPlugin(context=None)
    outcome = plugin.outcomes[rubric.RULES[1].test]
    outcome.runs = 1
    outcome.failures = [Verdict(measured="RMSNorm(dim=16) on input (4, 16)", found="max abs error 0.3")]
    outcome.notes = ["the grader's own note"]
    outcome.reported = ["forward takes no `mask` argument: called forward(x)", FORGED_NOTE]
    entry = next(e for e in plugin.entries() if e["name"] == outcome.rule.name)
    lines = entry["output"].splitlines()
    assert lines[:3] == [outcome.failures[0].text(), "the grader's own note", REPORTED], lines
    assert lines[3:] == [REPORTED_PREFIX + "forward takes no `mask` argument: called forward(x)",
                         REPORTED_PREFIX + " ".join(FORGED_NOTE.split())], lines
    page = _test_html(entry, lines=0)
    verdict_end = page.index("</div>")
    label = page.index("Reported by your code")
    assert verdict_end < label < page.index("the grader hit") < page.index("not your fault")
    assert "\nThis is not your fault" not in page and "\nthe grader hit" not in page
