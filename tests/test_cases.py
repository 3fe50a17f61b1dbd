"""Inputs the grader once got wrong (tests/cases/, from the course staff's shared cases).

Each folder holds `expect.json`: `what` the submission does, `edits` that make it from the
reference (exact (old, new) replacements, as in variants.py; each case was the reference with
one small change), `must_lose`
the categories that must lose points, `must_keep_full` those that must keep every point, and
`messages`, phrases that must appear in the output of the tests named there ("*" for any test),
so a right score with a wrong explanation still fails, and `concurrent_copies`, how many copies
are graded at the same time, each held to the same expectations (one grading's processes must
never count against another's). Each case stands for a kind of fault;
its other members are mutants and alternatives in variants.py.
"""

import concurrent.futures
import json
import os

import pytest

from grading import by_category, grade
from variants import Variant

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
# Cases graded in the default run (CI); the rest run with -m slow.
CORE = {"rope_schedule", "pandas_import", "optimizer_ignored", "threads_at_import"}


def _cases():
    names = sorted(n for n in os.listdir(CASES) if os.path.isfile(os.path.join(CASES, n, "expect.json")))
    return [pytest.param(n, id=n, marks=() if n in CORE else pytest.mark.slow) for n in names]


def _expect(name: str) -> dict:
    with open(os.path.join(CASES, name, "expect.json")) as file:
        return json.load(file)


def case_file(name: str, directory) -> str:
    """The case's backbone.py (the reference with its edits), written into `directory`."""
    path = os.path.join(str(directory), "backbone.py")
    edits = tuple(tuple(edit) for edit in _expect(name)["edits"])
    with open(path, "w") as file:
        file.write(Variant(name, edits).source())
    return path


@pytest.mark.parametrize("name", _cases())
def test_case_loses_only_its_own_categories_and_says_why(name, tmp_path):
    expect = _expect(name)
    if expect.get("box"):
        pytest.skip("graded inside Gradescope's default box: tests/test_box.py")
    folders = [tmp_path / f"copy{n}" for n in range(expect.get("concurrent_copies", 1))]
    for folder in folders:
        folder.mkdir()
    with concurrent.futures.ThreadPoolExecutor(len(folders)) as pool:
        documents = list(pool.map(lambda folder: grade(case_file(name, folder), folder), folders))
    for document in documents:
        _check(name, expect, document)


def _check(name: str, expect: dict, document: dict) -> None:
    totals = by_category(document)
    kept = [c for c in expect["must_lose"] if totals[c][0] >= totals[c][1]]
    lost = {c: totals[c] for c in expect["must_keep_full"] if totals[c][0] < totals[c][1]}
    outputs = {c: [t["output"][:400] for t in document["tests"] if t["tags"] == [c]
                   and t["score"] < t["max_score"]] for c in lost}
    assert not kept, f"{name}: should have lost points in {kept}"
    assert not lost, f"{name}: lost points in {lost}: {outputs}"
    for test_name, phrase in expect.get("messages", {}).items():
        texts = [t["output"] for t in document["tests"] if test_name in ("*", t["name"])]
        texts += [document["output"]] if test_name == "*" else []
        assert any(phrase in text for text in texts), f"{name}: no output of {test_name!r} says {phrase!r}"
