"""The mastery checks (KV-cache) end to end, on the cached reference and its variants
(tests/mastery_variants.py), with the rubric's bonus switch off (the default: 0 points, the
tests' status and messages) and on (bonus points above 100, lost in mastery only)."""

import csv
import json
import os
import subprocess
import sys

import pytest

from autograder import results, rubric
from grading import KIT, REFERENCE, TEMPLATE, by_category, grade, lost
from mastery_variants import CACHED, MASTERY_ALTERNATIVES, MASTERY_MUTANTS

KV_TEST = "KV-cache decoding gives the tokens"
SPEED_TEST = "KV-cache speed-up"
# Runs the grader with the rubric's switch turned on, as an instructor would by setting
# rubric.MASTERY_BONUS = True.
WITH_BONUS = ("import sys; from autograder import rubric, cli; "
              "rubric.RULES = tuple(r for r in rubric.RULES if r.category != 'mastery') "
              "+ rubric.mastery_rules(True); sys.exit(cli.main(sys.argv[1:]))")


def _grade_with_bonus(submission, workdir, only=()) -> dict:
    path = os.path.join(str(workdir), "results.json")
    command = [sys.executable, "-c", WITH_BONUS, "--submission", str(submission), "--results", path]
    for category in only:
        command += ["--only", category]
    environment = dict(os.environ, PYTHONPATH=KIT, PYTHONDONTWRITEBYTECODE="1")
    completed = subprocess.run(command, cwd=KIT, env=environment, capture_output=True, text=True,
                               timeout=600)
    assert os.path.exists(path), completed.stderr[-3000:]
    with open(path) as file:
        return json.load(file)


def _write(variant, directory):
    directory.mkdir(parents=True, exist_ok=True)
    submission = directory / "backbone.py"
    submission.write_text(variant.source())
    return submission


def _test(document, title) -> dict:
    return next(t for t in document["tests"] if t["name"].startswith(title))


def _params(variants):
    return [pytest.param(v, id=v.name, marks=() if v.core else pytest.mark.slow) for v in variants]


def test_rubric_switch_makes_mastery_bonus_points_only():
    off = [rule for rule in rubric.RULES if rule.category == "mastery"]
    on = rubric.mastery_rules(True)
    assert [rule.test for rule in off] == [rule.test for rule in on]
    assert sum(rule.weight for rule in off) == 0 and not rubric.MASTERY_BONUS
    assert sum(rule.weight for rule in on) == rubric.MASTERY_POINTS > 0
    assert rubric.BONUS_CATEGORIES == ("mastery",)
    numbering = results.numbers()
    document = results.document([results.test_entry(rule, numbering[rule.test], 0.0, "x")
                                 for rule in rubric.RULES], "", 1.0)
    bonus = dict(document["tests"][-1], tags=["mastery"], max_score=5, score=5)
    document["tests"].append(bonus)  # 105 in all: the bonus is not counted in the 100
    assert results.problems(document) == []


def test_variant_table_applies_and_compiles():
    variants = [CACHED] + MASTERY_MUTANTS + MASTERY_ALTERNATIVES
    assert len({v.name for v in variants}) == len(variants)
    for variant in variants:
        compile(variant.source(), variant.name, "exec")
    assert all(v.loses == {"mastery"} and not v.may_lose and v.diagnosis for v in MASTERY_MUTANTS)
    assert len(MASTERY_MUTANTS) >= 5 and len(MASTERY_ALTERNATIVES) >= 3


def test_cached_reference_scores_105_with_the_bonus_and_100_without(tmp_path):
    submission = _write(CACHED, tmp_path / "variant")
    document = _grade_with_bonus(submission, tmp_path / "on")
    assert results.problems(document) == []
    failed = [(t["name"], t["output"]) for t in document["tests"] if t["score"] < t["max_score"]]
    assert failed == [] and document["score"] == 100 + rubric.MASTERY_POINTS
    speed = _test(document, SPEED_TEST)
    assert speed["extra_data"]["kv_cache_speedup"] > 1.5, speed["output"]
    assert "KV-cache path found: generate(use_cache=True)" in _test(document, KV_TEST)["output"]
    default = grade(submission, tmp_path / "off", only=("mastery",))
    assert [t["status"] for t in default["tests"]] == ["passed", "passed"]
    assert not any("attempted" in t["extra_data"] for t in default["tests"])
    assert "mastery      2 of 2 checks passed" in default["output"]
    assert sum(t["max_score"] for t in default["tests"]) == 0


@pytest.mark.parametrize("submission", [REFERENCE, TEMPLATE], ids=["reference", "template"])
def test_no_cache_costs_nothing_and_says_so(submission, tmp_path):
    document = _grade_with_bonus(submission, tmp_path, only=("mastery",))
    for test in document["tests"]:
        assert test["output"].startswith("not attempted: no KV-cache path found"), test["output"]
        assert test["score"] == 0 and test["extra_data"]["attempted"] is False
    default = grade(submission, tmp_path / "off", only=("mastery",))
    # not attempted is never "passed": Gradescope's status, the summary, the TA's pass rates
    assert all(t["status"] == "failed" and t["max_score"] == 0 and t["extra_data"]["attempted"] is False
               for t in default["tests"])
    assert "mastery      not attempted" in default["output"]


@pytest.mark.parametrize("variant", _params(MASTERY_MUTANTS))
def test_mutant_loses_mastery_bonus_only_and_names_its_bug(variant, tmp_path):
    submission = _write(variant, tmp_path / "variant")
    document = _grade_with_bonus(submission, tmp_path / "on")
    assert results.problems(document) == []
    assert lost(document) == {"mastery"}, by_category(document)
    kv = _test(document, KV_TEST)
    assert kv["status"] == "failed" and variant.diagnosis in kv["output"], kv["output"]
    assert document["score"] == 100
    default = grade(submission, tmp_path / "off", only=("mastery",))
    kv = _test(default, KV_TEST)
    assert kv["status"] == "failed" and kv["max_score"] == 0 and variant.diagnosis in kv["output"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", MASTERY_ALTERNATIVES, ids=lambda v: v.name)
def test_correct_cache_gets_the_bonus(variant, tmp_path):
    document = _grade_with_bonus(_write(variant, tmp_path / "variant"), tmp_path, only=("mastery",))
    failed = [(t["name"], t["output"]) for t in document["tests"] if t["score"] < t["max_score"]]
    assert failed == [] and document["score"] == rubric.MASTERY_POINTS


def test_batch_summary_and_report_show_mastery_and_the_speedup(tmp_path):
    from autograder.ta import batch, html_report

    numbering = results.numbers()
    cached = results.document([results.test_entry(rule, numbering[rule.test], 1.0, "", 0.1,
                                                  {"kv_cache_speedup": 4.75} if "speed-up" in rule.name else None)
                               for rule in rubric.RULES], "", 1.0)
    plain = results.document([results.test_entry(rule, numbering[rule.test], 0.0, "x")
                              for rule in rubric.RULES], "", 1.0)
    submissions = [batch.Submission("cached", "cached.py", document=cached),
                   batch.Submission("plain", "plain.py", document=plain)]
    batch.write_summary(submissions, str(tmp_path / "summary.csv"))
    with open(tmp_path / "summary.csv", newline="") as file:
        rows = {row["submission"]: row for row in csv.DictReader(file)}
    assert rows["cached"]["kv_cache_speedup"] == "4.75" and rows["plain"]["kv_cache_speedup"] == ""
    assert "mastery" in rows["cached"]
    index = open(html_report.build(submissions, str(tmp_path))).read()
    assert "<th class=num>mastery</th>" in index and "KV-cache speed-up" in index and "4.8&times;" in index
