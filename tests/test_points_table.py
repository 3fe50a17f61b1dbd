"""The students' points table (student/README.md) is generated from the rubric, never copied."""

import dataclasses
import os
import sys

import pytest

from grading import KIT

sys.path.insert(0, os.path.join(KIT, "scripts"))
import make_points_table  # noqa: E402


def test_student_readme_holds_the_table_of_the_current_rubric():
    readme = make_points_table.README.read_text()
    assert readme == make_points_table.with_table(readme), (
        "student/README.md's points table is stale: run python scripts/make_points_table.py")


def test_a_changed_weight_makes_the_table_stale(monkeypatch):
    """The check can fail: moving a point between two tests changes the generated table."""
    before = make_points_table.table()
    rules = list(make_points_table.rubric.RULES)
    first, second = [i for i, rule in enumerate(rules) if rule.category == "attention" and rule.weight][:2]
    rules[first] = dataclasses.replace(rules[first], weight=rules[first].weight + 1)
    rules[second] = dataclasses.replace(rules[second], weight=rules[second].weight - 1)
    monkeypatch.setattr(make_points_table.rubric, "RULES", tuple(rules))
    assert make_points_table.table() != before


def test_check_mode_detects_a_hand_edit(tmp_path, monkeypatch):
    stale = tmp_path / "README.md"
    stale.write_text(make_points_table.README.read_text().replace("| 6 |", "| 8 |", 1))
    monkeypatch.setattr(make_points_table, "README", stale)
    monkeypatch.setattr(sys, "argv", ["make_points_table.py", "--check"])
    assert make_points_table.main() == 1


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError):
        make_points_table.with_table("# README without a table\n")
