"""End to end: ./run_autograder on the reference, the template and variants of the reference."""

import pytest

from autograder import results, rubric
from grading import REFERENCE, TEMPLATE, by_category, grade, lost
from variants import VARIANTS

TODO_OF_CATEGORY = {"rmsnorm": "TODO 1", "causal_mask": "TODO 2", "rope": "TODO 2",
                    "attention": "TODO 2", "training": "TODO 3"}


def test_reference_scores_100_on_two_runs(tmp_path):
    first = grade(REFERENCE, tmp_path / "first")
    second = grade(REFERENCE, tmp_path / "second")
    for document in (first, second):
        assert results.problems(document) == []
        failed = [(t["name"], t["output"]) for t in document["tests"] if t["status"] != "passed"]
        assert failed == [] and document["score"] == 100
    assert [t["score"] for t in first["tests"]] == [t["score"] for t in second["tests"]]


def test_template_scores_only_interface_and_names_each_todo(tmp_path):
    document = grade(TEMPLATE, tmp_path)
    assert results.problems(document) == []
    totals = by_category(document)
    assert totals["interface"][0] == totals["interface"][1]
    for category in rubric.CATEGORIES[1:]:
        assert totals[category][0] == 0, f"the template earned points in {category}"
    for test in document["tests"]:
        (category,) = test["tags"]
        if category in TODO_OF_CATEGORY and test["max_score"] > 0:
            assert TODO_OF_CATEGORY[category] in test["output"], (test["name"], test["output"])


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_variant_loses_points_only_where_its_bug_is(variant, tmp_path):
    submission = tmp_path / "backbone.py"
    submission.write_text(variant.source())
    document = grade(submission, tmp_path)
    assert results.problems(document) == []
    lost_categories = lost(document)
    assert variant.loses <= lost_categories, f"should lose {set(variant.loses)}, lost {lost_categories}"
    unexpected = lost_categories - variant.loses - variant.may_lose
    outputs = [(t["name"], t["output"][:300]) for t in document["tests"] if t["tags"][0] in unexpected]
    assert not unexpected, f"lost points in {unexpected}: {outputs}"
