"""Every rubric rule worth points is proven able to fail: a mutant of the reference declared to
fail it (variants.RULE_MUTANTS, checked when test_grading.py grades that mutant), or, for the
rules no one-bug variant can fail, a named kit test. Fast: nothing is graded here."""

import ast
import os

from autograder import rubric
from grading import KIT
from variants import MUTANTS, RULE_MUTANTS, RULES_FAILED_ELSEWHERE


def _kit_tests(file: str) -> set:
    with open(os.path.join(KIT, "tests", file)) as handle:
        tree = ast.parse(handle.read())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_rule_worth_points_has_a_mutant_that_must_fail_it():
    worth_points = {rule.test for rule in rubric.RULES if rule.weight > 0}
    uncovered = sorted(worth_points - set(RULE_MUTANTS) - set(RULES_FAILED_ELSEWHERE))
    assert not uncovered, (f"rules worth points with no mutant that fails them: {uncovered}; add one "
                           "to tests/variants.py (MUTANTS and RULE_MUTANTS), see README 'Adding a check'")


def test_the_declared_mutants_exist_and_lose_the_rules_category():
    mutants = {variant.name: variant for variant in MUTANTS}
    for test, names in RULE_MUTANTS.items():
        category = rubric.rule_for(test).category  # KeyError: a rule that is no longer in the rubric
        for name in names:
            assert name in mutants, f"{test}: no mutant named {name}"
            assert category in mutants[name].loses, f"{name} must lose {category} to fail {test}"


def test_the_kit_tests_named_for_the_other_rules_exist():
    for test, kit_test in RULES_FAILED_ELSEWHERE.items():
        rubric.rule_for(test)
        file, _, function = kit_test.partition("::")
        assert function in _kit_tests(file), f"{test}: tests/{kit_test} does not exist"
