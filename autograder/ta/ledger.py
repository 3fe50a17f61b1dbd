"""The regrade ledger: whose recorded grade changed between two batch runs, by how much, and why.

A batch run over an OUT that holds earlier results never overwrites them silently:

    OUT/history/<run>/<name>.json  the results.json a regrade replaced (<run>: the run's UTC time)
    OUT/grades.json                each submission's recorded grade after the last run (Grade)
    OUT/ledger.csv                 one row per submission whose recorded total moved, every run
                                   appended: run, submission, student, before, after, the graded
                                   total, each test whose points changed ("3.1: 6 -> 5"), and why
    OUT/overrides.csv              written by the TA, applied on top of every run (Override)

A recorded grade is the grader's results.json, less the tests the TA drops (--drop, totals
recomputed), kept at the earlier grade where a regrade would lower it (--never-lower), then
with the TA's overrides applied. Why a total moved is read from the records themselves: the
submitted backbone.py's hash (results.SUBMISSION_HASH) and the kit's fingerprint
(extra_data.kit) before and after, the tests dropped, the overrides and --never-lower; a move
with none of these is a grading that differs from run to run, which the ledger says.
"""

import csv
import html
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field

from .. import results, rubric
from . import html_report

OVERRIDES_HEADER = ["submission", "test", "points", "note"]
LEDGER_HEADER = ["run", "submission", "student", "before", "after", "graded", "tests", "why"]
UNCHANGED = "same submission and kit: the grading differs from run to run"


def run_stamp() -> str:
    """The name of a run in history/ and ledger.csv: its UTC time, sortable."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@dataclass
class Override:
    """One row of overrides.csv: `test` is a test's number ("3.1"), its rubric name or file
    "::" function, or "total"; `points` replaces that test's points (or the total)."""
    submission: str
    test: str
    points: float
    note: str = ""


@dataclass
class Grade:
    """What the batch records for one submission.

    total:       the recorded total (dropped tests out, --never-lower, overrides applied)
    graded:      the grader's total of this run, less the dropped tests
    tests:       {test number: points} before overrides (after drops and --never-lower)
    submission:  hash of the backbone.py graded ("" if the results do not record it)
    kit:         the kit fingerprint that graded it
    dropped:     test numbers left out of the totals
    adjustments: what made `total` differ from the grader's, in words (kept, overrides)
    """
    total: float
    graded: float
    tests: dict
    submission: str = ""
    kit: str = ""
    dropped: list = field(default_factory=list)
    adjustments: list = field(default_factory=list)


def test_number(test: str) -> str:
    """A test's number from its number, rubric name or "file::function"; "" if none matches."""
    numbering = results.numbers()
    for rule in rubric.RULES:
        if test in (numbering[rule.test], rule.name, rule.test, rule.test.split("::")[-1]):
            return numbering[rule.test]
    return ""


def archive(submissions: list, out: str, run: str) -> str:
    """Copy the results of `submissions` that exist (the ones about to be regraded) into
    OUT/history/<run>/; returns that folder ("" when there was nothing to keep)."""
    folder = os.path.join(out, "history", run)
    kept = [s for s in submissions if os.path.exists(s.results_path(out))]
    for submission in kept:
        os.makedirs(folder, exist_ok=True)
        shutil.copy2(submission.results_path(out), os.path.join(folder, submission.name + ".json"))
    return folder if kept else ""


def read_overrides(path: str, names) -> tuple:
    """(overrides, problems) from the TA's overrides.csv; a row that names no submission of the
    batch, no test, or no number is a problem (printed by the batch), never applied."""
    if not os.path.exists(path):
        return [], []
    found, problems = [], []
    with open(path, newline="", encoding="utf-8") as file:
        for line, row in enumerate(csv.DictReader(file), 2):
            row = {k: (v or "").strip() for k, v in row.items() if k}
            where = f"overrides.csv line {line}"
            test = row.get("test", "")
            number = "total" if test.lower() == "total" else test_number(test)
            try:
                points = float(row.get("points", ""))
            except ValueError:
                problems.append(f"{where}: points {row.get('points')!r} is not a number")
                continue
            if row.get("submission") not in names:
                problems.append(f"{where}: no submission {row.get('submission')!r} in this batch")
            elif not number:
                problems.append(f"{where}: no test {test!r} (a test's number, its name, or total)")
            else:
                found.append(Override(row["submission"], number, points, row.get("note", "")))
    return found, problems


def grade_of(document: dict, dropped=()) -> Grade:
    """The grade a results.json gives, less the tests numbered in `dropped`."""
    extra = document.get("extra_data") or {}
    tests = {t["number"]: t["score"] for t in document.get("tests", []) if t["number"] not in dropped}
    return Grade(total=round(sum(tests.values()), 4), graded=round(sum(tests.values()), 4), tests=tests,
                 submission=str(extra.get(results.SUBMISSION_HASH) or ""), kit=str(extra.get("kit") or ""),
                 dropped=sorted(set(dropped) & {t["number"] for t in document.get("tests", [])}))


def _kept_higher(grade: Grade, before) -> Grade:
    """--never-lower: the earlier points of the tests graded now (before overrides), when their
    total is higher than the regrade's."""
    if before is None:
        return grade
    tests = {number: before.tests.get(number, points) for number, points in grade.tests.items()}
    if sum(tests.values()) <= grade.total + 1e-9:
        return grade
    return Grade(total=round(sum(tests.values()), 4), graded=grade.graded, tests=tests,
                 submission=grade.submission, kit=grade.kit, dropped=grade.dropped,
                 adjustments=[f"kept {sum(tests.values()):g}: the regrade gave {grade.graded:g} "
                              "(--never-lower)"])


def _overridden(grade: Grade, overrides: list) -> Grade:
    """The recorded total with the TA's overrides: a test's points replaced, then a total."""
    tests, notes = dict(grade.tests), list(grade.adjustments)
    for override in (o for o in overrides if o.test != "total"):
        notes.append(f"override {override.test}: {tests.get(override.test, 0):g} -> {override.points:g}"
                     + (f" ({override.note})" if override.note else ""))
        tests[override.test] = override.points
    total = round(sum(tests.values()), 4)
    for override in (o for o in overrides if o.test == "total"):
        notes.append(f"override total: {total:g} -> {override.points:g}"
                     + (f" ({override.note})" if override.note else ""))
        total = override.points
    return Grade(total=total, graded=grade.graded, tests=grade.tests, submission=grade.submission,
                 kit=grade.kit, dropped=grade.dropped, adjustments=notes)


def why(before: Grade, after: Grade) -> str:
    """The reasons the recorded grade moved from `before` to `after`, in words."""
    reasons = []
    if before.submission and after.submission and before.submission != after.submission:
        reasons.append("submission changed")
    if before.kit != after.kit:
        reasons.append(f"kit fingerprint changed ({before.kit or 'none'} -> {after.kit or 'none'})")
    newly, restored = set(after.dropped) - set(before.dropped), set(before.dropped) - set(after.dropped)
    if newly:
        reasons.append(f"dropped by the TA: {', '.join(sorted(newly))}")
    if restored:
        reasons.append(f"no longer dropped: {', '.join(sorted(restored))}")
    if before.adjustments != after.adjustments:
        reasons.extend(a for a in after.adjustments if a not in before.adjustments)
        reasons.extend(f"no longer: {a}" for a in before.adjustments if a not in after.adjustments)
    return "; ".join(reasons) or UNCHANGED


def changed_tests(before: Grade, after: Grade) -> str:
    """'3.1: 6 -> 5; 3.5: 3 -> 4' for every test whose points differ (a dropped test: 'dropped')."""
    numbering = sorted(set(before.tests) | set(after.tests) | set(after.dropped),
                       key=lambda n: tuple(int(p) for p in n.split(".")))
    moves = []
    for number in numbering:
        old = "dropped" if number in before.dropped else before.tests.get(number)
        new = "dropped" if number in after.dropped else after.tests.get(number)
        if old != new:
            moves.append(f"{number}: {_points(old)} -> {_points(new)}")
    return "; ".join(moves)


def _points(value) -> str:
    return "none" if value is None else value if isinstance(value, str) else f"{value:g}"


def adjusted(grade: Grade) -> str:
    """What makes a recorded grade differ from the grader's results, in words ("" if nothing)."""
    return "; ".join([f"dropped {', '.join(grade.dropped)}"] * bool(grade.dropped) + grade.adjustments)


def read_grades(out: str) -> dict:
    """{name: Grade} recorded by the last run ({} before the first)."""
    try:
        with open(os.path.join(out, "grades.json")) as file:
            return {name: Grade(**data) for name, data in json.load(file).items()}
    except (OSError, ValueError, TypeError):
        return {}


def settle(submissions: list, out: str, run: str, earlier: dict, drop=(), never_lower=False) -> list:
    """Record this run's grades: set each graded submission's `.grade`, write grades.json and
    append the moved ones to ledger.csv; returns this run's ledger rows (dicts of
    LEDGER_HEADER). `earlier` holds the results.json each regraded submission had before this
    run ({name: document}, from archive), the grade before when grades.json has none."""
    recorded = read_grades(out)
    dropped = [number for number in (test_number(t) for t in drop) if number]
    overrides, problems = read_overrides(os.path.join(out, "overrides.csv"), {s.name for s in submissions})
    for problem in problems:
        print(f"ignored: {problem}", file=sys.stderr)
    rows = []
    for submission in submissions:
        if not submission.document:  # a grader error keeps the recorded grade
            submission.grade = recorded.get(submission.name)
            continue
        before = recorded.get(submission.name)
        if before is None and submission.name in earlier and not results.internal_error_of(earlier[submission.name]):
            before = grade_of(earlier[submission.name])  # an internal error was never a grade
        grade = grade_of(submission.document, dropped)
        if never_lower:
            grade = _kept_higher(grade, before)
        grade = _overridden(grade, [o for o in overrides if o.submission == submission.name])
        submission.grade = recorded[submission.name] = grade
        if before is not None and (abs(before.total - grade.total) > 1e-9
                                   or abs(before.graded - grade.graded) > 1e-9):
            rows.append({"run": run, "submission": submission.name, "student": submission.student,
                         "before": f"{before.total:g}", "after": f"{grade.total:g}",
                         "graded": f"{grade.graded:g}", "tests": changed_tests(before, grade),
                         "why": why(before, grade)})
    with open(os.path.join(out, "grades.json"), "w") as file:
        json.dump({name: asdict(grade) for name, grade in sorted(recorded.items())}, file, indent=1)
    path = os.path.join(out, "ledger.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as file:
        writer = csv.DictWriter(file, LEDGER_HEADER)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return rows


def unstable(rows: list) -> dict:
    """{test number: submissions} from ledger rows whose grade moved with the same submission and
    kit: the tests that graded them differently run to run (analytics flags them)."""
    found = {}
    for row in rows:
        if row["why"] == UNCHANGED:
            for move in filter(None, row["tests"].split("; ")):
                found.setdefault(move.split(":")[0], set()).add(row["submission"])
    return found


def read_ledger(out: str) -> list:
    """Every row of OUT/ledger.csv, oldest first."""
    try:
        with open(os.path.join(out, "ledger.csv"), newline="") as file:
            return list(csv.DictReader(file))
    except OSError:
        return []


def page(out: str, run: str, submissions: list) -> str:
    """The body of report/ledger.html: every recorded move, this run's first, and the
    adjustments in force."""
    rows = read_ledger(out)
    now = [r for r in rows if r["run"] == run]
    before = [r for r in reversed(rows) if r["run"] != run]

    def cells(row):
        delta = float(row["after"]) - float(row["before"])
        shade = "passed" if delta > 0 else "failed"
        who = row["submission"] + (f" ({row['student']})" if row["student"] else "")
        after = f"<b>{row['after']}</b> <span class={shade}>({delta:+g})</span>" if delta else row["after"]
        return [html.escape(row["run"]), html.escape(who), row["before"], after, row["graded"],
                *("<br>".join(map(html.escape, row[key].split("; "))) for key in ("tests", "why"))]
    header = ["run", "submission", "before", "after", "graded", "tests whose points changed", "why"]
    in_force = [[html.escape(s.name), f"{s.grade.graded:g}", f"<b>{s.grade.total:g}</b>",
                 html.escape(adjusted(s.grade))] for s in submissions if s.grade is not None and adjusted(s.grade)]
    parts = ['<p><a href="index.html">&larr; class overview</a></p><h1>Regrade ledger</h1>',
             "<p class=muted>One row per submission whose recorded grade moved, and why: the submitted "
             "file changed (its hash in results.json), the kit's fingerprint changed (grading code, "
             "rubric, reference), the TA dropped a test, an override in overrides.csv, or "
             "--never-lower kept the earlier grade. The results a regrade replaced are kept in "
             "history/&lt;run&gt;/. Every run's rows are in ledger.csv.</p>",
             f"<h2>This run ({html.escape(run)}): {len(now)} moved</h2>",
             html_report.table(header, [cells(r) for r in now], {2, 3, 4}) if now
             else "<p>No recorded grade moved.</p>"]
    if in_force:
        parts += ["<h2>Adjustments in force</h2><p class=muted>Recorded totals that differ from the "
                  "grader's: dropped tests, --never-lower, overrides.csv (submission, test or total, "
                  "points, note), applied on top of every regrade.</p>",
                  html_report.table(["submission", "graded", "recorded", "how"], in_force, {1, 2})]
    if before:
        parts += [f"<h2>Earlier runs ({len(before)} moves)</h2>",
                  html_report.table(header, [cells(r) for r in before], {2, 3, 4})]
    return "\n".join(parts)
