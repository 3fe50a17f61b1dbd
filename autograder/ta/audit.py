"""An audit of the kit's own tests: how close correct code comes to failing, and what varies run to run.

Input: several gradings of the same submissions ({name: results.json} per run, e.g. the folders
scripts/audit.py writes, or a batch's history/<run>/ and results/), and the names of the ones
known to be correct (the reference and the kit's correct alternatives, tests/variants.py).
Per rubric test, from the margins the checks record (checks/margin.py: measured, threshold,
kind):

    smallest headroom   over every correct submission and run: the fraction of the threshold
                        left unused (1: far from it, 0: at it, < 0: past it), with who and the
                        value measured; a correct submission that failed the test is listed
    run-to-run          the largest spread of a submission's measured value over the runs, and
                        the submissions whose outcome (passed, the fraction of the points)
                        differed between runs: a test that can fail by chance

A test whose check records no margin shows only its outcomes. Written as audit.csv and
audit.html (the report's style), and printed as a table.
"""

import csv
import html
import math
from dataclasses import dataclass, field

from .. import results, rubric
from ..checks import margin
from . import html_report

HEADER = ["number", "test", "category", "kind", "threshold", "smallest headroom", "measured",
          "closest", "correct failed", "largest run-to-run spread", "outcome differs", "runs", "submissions"]


@dataclass
class TestAudit:
    number: str
    name: str
    category: str
    kind: str = ""  # the margin's kind, "" when the check records none
    threshold: float = None
    headroom: float = None  # the smallest over correct submissions and runs
    measured: float = None  # the value measured there
    closest: str = ""  # the submission and run it was measured on
    correct_failed: list = field(default_factory=list)  # "name (run i)"
    spread: float = None  # largest max - min of one submission's measured value over the runs
    spread_of: str = ""
    unstable: list = field(default_factory=list)  # submissions whose outcome differs between runs
    runs: int = 0
    submissions: int = 0


def _outcome(test: dict) -> tuple:
    fraction = test["score"] / test["max_score"] if test["max_score"] else 0.0
    return test["status"], round(fraction, 4)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def audit(runs: list, correct) -> list:
    """A TestAudit per rubric test graded in the runs. `runs`: [{name: results.json}], one dict per grading of the
    same submissions; `correct`: the names known to be correct."""
    numbering = results.numbers()
    found = []
    for rule in rubric.RULES:
        number = numbering[rule.test]
        entry = TestAudit(number, rule.name, rule.category, runs=len(runs))
        measured, outcomes = {}, {}  # name -> [values], [outcomes] over the runs
        for index, documents in enumerate(runs, 1):
            for name, document in documents.items():
                test = next((t for t in document.get("tests", []) if t["number"] == number), None)
                if test is None:
                    continue
                outcomes.setdefault(name, []).append(_outcome(test))
                record = (test.get("extra_data") or {}).get(margin.KEY)
                if record and _finite(record.get("measured")):
                    entry.kind, entry.threshold = record["kind"], record["threshold"]
                    measured.setdefault(name, []).append(record["measured"])
                    room = margin.headroom(record)
                    if name in correct and room == room and (entry.headroom is None or room < entry.headroom):
                        entry.headroom, entry.measured = room, record["measured"]
                        entry.closest = f"{name} (run {index})"
                if name in correct and test["status"] == "failed":
                    entry.correct_failed.append(f"{name} (run {index})")
        if not outcomes:  # not graded in these runs (--only)
            continue
        entry.submissions = len(outcomes)
        entry.unstable = sorted(name for name, seen in outcomes.items() if len(set(seen)) > 1)
        spreads = [(max(values) - min(values), name) for name, values in measured.items() if len(values) > 1]
        if spreads:
            entry.spread, entry.spread_of = max(spreads)
        found.append(entry)
    return found


def _number(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def write_csv(found: list, path: str) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for a in found:
            writer.writerow([a.number, a.name, a.category, a.kind, _number(a.threshold), _number(a.headroom),
                             _number(a.measured), a.closest, "; ".join(a.correct_failed),
                             _number(a.spread), "; ".join(a.unstable), a.runs, a.submissions])


def table(found: list) -> str:
    """A plain-text table: per test its smallest headroom and run-to-run differences."""
    rows = [["test", "smallest headroom", "measured / threshold", "closest", "spread", "differs"]]
    for a in found:
        rows.append([a.number, "none recorded" if a.headroom is None else f"{a.headroom:.3f}",
                     "" if a.measured is None else f"{a.measured:.3g} / {a.threshold:g}", a.closest,
                     _number(a.spread, 2), ", ".join(a.unstable) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def page(found: list, correct) -> str:
    """The body of audit.html."""
    rows = []
    for a in found:
        if a.headroom is None:
            room = ("<span class=muted>no margin recorded</span>", "")
        else:
            shade = "failed" if a.headroom < 0.1 else "partial" if a.headroom < 0.5 else "passed"
            room = (f"<b class={shade}>{a.headroom:.1%}</b>", f"{a.headroom:.6f}")
        kind = f"<div class=muted>margin: {html.escape(a.kind)}</div>" if a.kind else ""
        measured = "" if a.measured is None else (f"{a.measured:.3g} / {a.threshold:g}"
                                                  f"<div class=muted>{html.escape(a.closest)}</div>")
        spread = _number(a.spread, 2) + (f"<div class=muted>{html.escape(a.spread_of)}</div>" if a.spread else "")
        problems = ([f"correct but failed: {f}" for f in a.correct_failed]
                    + [f"outcome differs between runs: {name}" for name in a.unstable])
        rows.append([a.number, html.escape(a.name) + kind, room, measured, spread,
                     "<br>".join(f"<b class=failed>{html.escape(p)}</b>" for p in problems) or "none"])
    runs = max((a.runs for a in found), default=0)
    return ("<h1>Audit of the kit's tests</h1>"
            f"<p class=muted>{runs} run{'s' * (runs != 1)} of {max((a.submissions for a in found), default=0)} "
            f"submissions, {len(correct)} of them known to be correct. Headroom: the fraction of a test's "
            "threshold that correct code left unused, the smallest over every correct submission and run "
            "(under 10% in red: correct code comes close to failing). Spread: the largest difference of "
            "one submission's measured value between runs. Problems: correct code that failed the test, "
            "and submissions whose outcome of it was not the same on every run.</p>"
            + html_report.table(["#", "test (what its margin measures)", "smallest headroom",
                                 "measured / threshold (where)", "run-to-run spread", "problems"],
                                rows, {0, 2, 3, 4}, sortable=True))
