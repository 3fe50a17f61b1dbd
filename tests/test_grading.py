"""End to end: ./run_autograder on the reference, the template and variants of the reference."""

import pytest

from autograder import results, rubric
from grading import REFERENCE, TEMPLATE, by_category, grade, lost
from variants import ALTERNATIVES, API_VARIANTS, ENVIRONMENT_VARIANTS, MUTANTS, rules_failed_by

# One mutant per kind of check: numerics, causality (perturbation and gradients), spies; the
# first in the default run (the reference's two runs are compared there too), all with -m slow.
DETERMINISM_SAMPLE = ("rmsnorm_eps_outside_sqrt", "causal_mask_after_softmax",
                      "training_clip_after_step")

TODO_OF_CATEGORY = {"rmsnorm": "TODO 1", "causal_mask": "TODO 2", "rope": "TODO 2",
                    "attention": "TODO 2", "training": "TODO 3"}


def test_reference_scores_100_on_two_runs(tmp_path):
    first = grade(REFERENCE, tmp_path / "first")
    second = grade(REFERENCE, tmp_path / "second")
    for document in (first, second):
        assert results.problems(document) == []
        failed = [(t["name"], t["output"]) for t in document["tests"]
                  if t["status"] != "passed" and results.attempted(t)]
        assert failed == [] and document["score"] == 100
    assert [t["score"] for t in first["tests"]] == [t["score"] for t in second["tests"]]


def test_template_scores_only_interface_and_names_each_todo(tmp_path):
    document = grade(TEMPLATE, tmp_path)
    assert results.problems(document) == []
    totals = by_category(document)
    assert totals["interface"][0] == totals["interface"][1]
    hidden_points = sum(t["max_score"] for t in document["tests"] if t["visibility"] != "visible")
    assert f"Score of the tests shown now: 5 / {100 - hidden_points:g}" in document["output"]
    assert f"({hidden_points:g} points) are shown after the due date" in document["output"]
    for category in rubric.CATEGORIES[1:]:
        assert totals[category][0] == 0, f"the template earned points in {category}"
    for test in document["tests"]:
        (category,) = test["tags"]
        if category in TODO_OF_CATEGORY and test["max_score"] > 0:
            assert TODO_OF_CATEGORY[category] in test["output"], (test["name"], test["output"])


def test_variant_table_is_well_formed():
    """Every variant applies to the current reference and compiles; every mutant names the
    categories it loses and the diagnosis it must get; the table has issue 3's minimum sizes."""
    variants = MUTANTS + ALTERNATIVES + API_VARIANTS + ENVIRONMENT_VARIANTS
    assert len({v.name for v in variants}) == len(variants)
    for variant in variants:
        compile(variant.source(), variant.name, "exec")
        assert variant.loses <= set(rubric.CATEGORIES) and variant.may_lose <= set(rubric.CATEGORIES)
    assert all(v.loses and v.diagnosis for v in MUTANTS) and len(MUTANTS) >= 35
    assert not any(v.loses or v.may_lose for v in ALTERNATIVES + API_VARIANTS + ENVIRONMENT_VARIANTS)
    assert len(ALTERNATIVES) >= 10


def _params(variants):
    return [pytest.param(v, id=v.name, marks=() if v.core else pytest.mark.slow) for v in variants]


def _only(variant) -> tuple:
    """The categories to grade: all but convergence when the variant may lose it anyway (no
    assertion is weakened, and convergence is most of a grading's time)."""
    if "convergence" in variant.may_lose:
        return tuple(category for category in rubric.CATEGORIES if category != "convergence")
    return ()


def _grade(variant, directory, only=()):
    directory.mkdir(parents=True, exist_ok=True)
    submission = directory / "backbone.py"
    submission.write_text(variant.source())
    document = grade(submission, directory, only=only)
    problems = results.problems(document)
    if only:  # a partial grading's max scores sum to less than 100 by design
        problems = [problem for problem in problems if not problem.startswith("max scores sum")]
    assert problems == []
    return document


def _outputs(document, categories=None, failed=False):
    return [test["output"] for test in document["tests"]
            if (categories is None or test["tags"][0] in categories)
            and (not failed or test["score"] < test["max_score"])]


@pytest.mark.parametrize("variant", _params(MUTANTS))
def test_mutant_loses_points_only_where_its_bug_is_and_names_it(variant, tmp_path):
    document = _grade(variant, tmp_path, _only(variant))
    lost_categories = lost(document)
    assert variant.loses <= lost_categories, f"should lose {set(variant.loses)}, lost {lost_categories}"
    unexpected = lost_categories - variant.loses - variant.may_lose
    outputs = [(t["name"], t["output"][:300]) for t in document["tests"] if t["tags"][0] in unexpected]
    assert not unexpected, f"lost points in {unexpected}: {outputs}"
    names = {rubric.rule_for(rule).name for rule in rules_failed_by(variant)}
    passed = [t["name"] for t in document["tests"] if t["name"] in names and t["score"] >= t["max_score"]]
    assert not passed, f"should fail (variants.RULE_MUTANTS) but passed: {passed}"
    failures = _outputs(document, variant.loses, failed=True)
    assert any(variant.diagnosis in output for output in failures), (
        f"no failing {'/'.join(sorted(variant.loses))} test names the bug ({variant.diagnosis!r}):\n"
        + "\n---\n".join(failures))


@pytest.mark.parametrize("variant", _params(ALTERNATIVES + API_VARIANTS + ENVIRONMENT_VARIANTS))
def test_correct_alternative_scores_100(variant, tmp_path):
    document = _grade(variant, tmp_path)
    failed = [(t["name"], t["output"]) for t in document["tests"] if t["score"] < t["max_score"]]
    assert failed == [] and document["score"] == 100
    if variant.note:
        assert any(variant.note in output for output in _outputs(document)), (
            f"no test states the adaptation ({variant.note!r})")


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if index == 0 else pytest.mark.slow)
                                  for index, name in enumerate(DETERMINISM_SAMPLE)])
def test_mutant_grades_are_the_same_on_two_runs(name, tmp_path):
    variant = next(v for v in MUTANTS if v.name == name)
    first = _grade(variant, tmp_path / "first", _only(variant))
    second = _grade(variant, tmp_path / "second", _only(variant))
    assert [(t["name"], t["score"]) for t in first["tests"]] == [
        (t["name"], t["score"]) for t in second["tests"]]
