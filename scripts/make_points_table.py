"""Generate the students' points table (student/README.md) from the rubric.

The table has a row per category with its points and a row per graded test: its points, its
title (the rubric's `Rule.name`, the words the student sees on Gradescope) and when its result
is shown; the sentence under it counts the tests shown only after the due date. Everything in
it comes from autograder/rubric.py, so the README cannot drift from the grading;
tests/test_points_table.py fails if student/README.md does not hold this script's output.
Re-run it after any change of the rubric (weights, titles, visibility, the mastery switch).

    python scripts/make_points_table.py          # rewrite the table in student/README.md
    python scripts/make_points_table.py --check  # exit 1 if it is out of date
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import generated  # noqa: E402  (beside this script)
from autograder import rubric  # noqa: E402  (torch-free)

README = ROOT / "student" / "README.md"
BEGIN = "<!-- points table: generated from autograder/rubric.py by scripts/make_points_table.py; do not edit -->"
END = "<!-- end of the generated points table -->"
SHOWN = {"visible": "at once", rubric.HIDDEN_UNTIL_DUE: "after the due date"}
CONVERGENCE_TEST = "test_convergence.py::test_heldout_loss"


def _points(rule, bonus: dict) -> str:
    if rule.weight:
        return f"{rule.weight:g}"
    if bonus.get(rule.test):
        return f"0 (bonus: {bonus[rule.test]:g} when the course staff turn it on)"
    return "0 (information)"


def _title(rule) -> str:
    if rule.test != CONVERGENCE_TEST:
        return rule.name
    full, *partial = rubric.CONVERGENCE.tiers
    return rule.name + "; " + ", ".join(f"below {loss:g} earns {fraction:.0%} of the points"
                                        for loss, fraction in partial)


def table() -> str:
    """The generated Markdown: the table and the sentence on what is shown after the due date."""
    bonus = {rule.test: rule.weight for rule in rubric.mastery_rules(True)}
    lines = ["| category | points | what the test checks | result shown |", "|---|---|---|---|"]
    for category in rubric.CATEGORIES:
        rules = [rule for rule in rubric.RULES if rule.category == category]
        total = sum(rule.weight for rule in rules)
        if category in rubric.BONUS_CATEGORIES and not total:
            total_text = "bonus"
        else:
            total_text = f"{total:g}" + (" (bonus)" if category in rubric.BONUS_CATEGORIES else "")
        lines.append(f"| **`{category}`** | **{total_text}** | | |")
        lines += [f"| | {_points(rule, bonus)} | {_title(rule)} | {SHOWN[rule.visibility]} |"
                  for rule in rules]
    hidden = [rule for rule in rubric.RULES if rule.visibility != "visible"]
    regular = sum(rule.weight for rule in rubric.RULES if rule.category not in rubric.BONUS_CATEGORIES)
    lines += ["", f"The tests are worth {regular:g} points. Before the due date you see the result "
                  f"of every test except the {len(hidden)} marked \"after the due date\" "
                  f"({sum(rule.weight for rule in hidden):g} points in all)."]
    return "\n".join([BEGIN, *lines, END])


def with_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by table(); raises ValueError when
    the markers are missing."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{README}: the markers of the points table are missing")
    return readme[:start] + table() + readme[end + len(END):]


def main() -> int:
    return generated.main(__doc__.splitlines()[0], README, lambda: with_table(README.read_text()),
                          "python scripts/make_points_table.py")


if __name__ == "__main__":
    sys.exit(main())
