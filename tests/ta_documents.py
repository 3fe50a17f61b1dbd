"""Hand-made results.json documents for the tests of the TA's tools (no grading)."""

import dataclasses
import json
import os

from autograder import results, rubric
from autograder.checks import margin
from autograder.verdict import Verdict

NUMBERS = results.numbers()
NUMBER = {rule.name: NUMBERS[rule.test] for rule in rubric.RULES}


def document(failed=(), kit="kit-a", sha="sha-a", causes=None, extra=None, weights=None) -> dict:
    """A results.json in which the tests numbered in `failed` failed (0 points) and every other
    passed. causes: {number: a Verdict cause}; extra: {number: extra_data}; weights: {number:
    points}, a rubric weight changed."""
    entries = []
    for rule in rubric.RULES:
        number = NUMBERS[rule.test]
        if weights and number in weights:
            rule = dataclasses.replace(rule, weight=weights[number])
        verdicts = {}
        if number in failed:
            verdicts = {"verdicts": [Verdict(measured=f"test {number}", kind="property",
                                             cause=(causes or {}).get(number, "")).as_dict()]}
        entries.append(results.test_entry(rule, number, 0.0 if number in failed else 1.0,
                                          f"test {number}", extra={**verdicts, **(extra or {}).get(number, {})}))
    made = results.document(entries, "made by hand", 1.0)
    made["extra_data"] = {"kit": kit, results.SUBMISSION_HASH: sha}
    return made


def with_margin(measured: float, threshold: float = 1.0, kind: str = "error <= atol") -> dict:
    return {margin.KEY: margin.at_most(measured, threshold, kind)}


def write(folder, name: str, made: dict) -> str:
    path = os.path.join(str(folder), name + ".json")
    with open(path, "w") as file:
        json.dump(made, file)
    return path
