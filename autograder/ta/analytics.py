"""Per-test class analytics: which tests a class fails, why, and which tests look unfair.

    OUT/tests.csv            a row per rubric test: category, points, how many submissions it
                             graded, pass rate, mean points, its most common cause (the verdicts'
                             groups, verdict.Verdict.group), and a suspect flag with its evidence
    OUT/report/tests.html    the same as a page, with a score histogram per category and in total
    OUT/report/histograms.png

A test is **suspect** when the class's own results contradict it: it is passed by the untouched
template (students' work earns points, the template's provided code does not: README, design
section 5; interface is the one category the template earns by design), failed by the
reference solution or by a submission the TA knows to be correct (`correct`, e.g. the kit's
alternatives in scripts/audit.py), or its outcome differs between runs of the same submission
and kit (`unstable`). Weaker evidence is shown without the flag: a test that most of its
failures fail alone (they pass every other test of its category). A mastery test that found
nothing to test records extra_data["attempted"] = False: it is counted as "not attempted",
outside the pass rate.
"""

import collections
import csv
import html
import io
import os
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from .. import kit_version, results, rubric  # noqa: E402
from . import html_report  # noqa: E402

TEMPLATE = os.path.join(kit_version.KIT, "student", "backbone.py")
REFERENCE = os.path.join(kit_version.KIT, "reference", "backbone.py")
TEMPLATE_EARNS = ("interface",)  # the categories the untouched template is meant to pass
HEADER = ["number", "test", "category", "points", "graded", "not attempted", "passed", "pass rate",
          "mean points", "most common cause", "cause count", "suspect", "evidence"]


@dataclass
class TestStats:
    number: str
    name: str
    category: str
    points: float
    graded: int = 0  # submissions whose results hold the test, attempted
    not_attempted: int = 0
    passed: int = 0
    mean_points: float = 0.0
    cause: str = ""
    cause_count: int = 0
    suspect: bool = False
    evidence: list = field(default_factory=list)  # sentences, the `flagging` first
    flagging: int = 0  # how many of the evidence's sentences flag it as suspect

    @property
    def pass_rate(self):
        return self.passed / self.graded if self.graded else None


def _hash(path: str) -> str:
    try:
        return results.file_sha256(path)
    except OSError:
        return ""


def submitted_hash(submission) -> str:
    """The hash of the backbone.py graded, as its results.json records it."""
    return str(((submission.document or {}).get("extra_data") or {}).get(results.SUBMISSION_HASH) or "")


def _names(submissions) -> str:
    names = [s.name for s in submissions]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def attempted(test: dict) -> bool:
    return (test.get("extra_data") or {}).get("attempted", True) is not False


def analyze(submissions: list, correct=(), unstable=None) -> list:
    """A TestStats per rubric test, over the graded submissions. `correct`: names of submissions
    known to be correct; `unstable`: {test number: names of submissions whose outcome of it
    differed between runs}."""
    graded = [s for s in submissions if s.document]
    template, reference = _hash(TEMPLATE), _hash(REFERENCE)
    numbering = results.numbers()
    by_number = {s.name: {t["number"]: t for t in s.document["tests"]} for s in graded}
    found = []
    for rule in rubric.RULES:
        number = numbering[rule.test]
        stats = TestStats(number, rule.name, rule.category, rule.weight)
        entries = [(s, by_number[s.name][number]) for s in graded if number in by_number[s.name]]
        tried = [(s, t) for s, t in entries if attempted(t)]
        stats.graded, stats.not_attempted = len(tried), len(entries) - len(tried)
        stats.passed = sum(t["status"] == "passed" for _, t in tried)
        stats.mean_points = sum(t["score"] for _, t in tried) / len(tried) if tried else 0.0
        failed = [(s, t) for s, t in tried if t["status"] == "failed"]
        causes = collections.Counter(group for _, t in failed
                                     for group in dict.fromkeys(v.group() for v in html_report.verdicts(t)))
        if causes:
            stats.cause, stats.cause_count = causes.most_common(1)[0]
        strong = []
        passed_by_template = [s for s, t in tried if t["status"] == "passed" and submitted_hash(s) == template]
        if passed_by_template and rule.weight and rule.category not in TEMPLATE_EARNS:
            strong.append(f"passed by the untouched template ({_names(passed_by_template)})")
        failed_by_reference = [s for s, _ in failed if submitted_hash(s) == reference]
        if failed_by_reference:
            strong.append(f"failed by the reference solution ({_names(failed_by_reference)})")
        failed_by_correct = [s for s, _ in failed if s.name in correct and s not in failed_by_reference]
        if failed_by_correct:
            strong.append(f"failed by a submission known to be correct ({_names(failed_by_correct)})")
        if unstable and unstable.get(number):
            strong.append(f"its outcome differed between runs of the same submission and kit "
                          f"({', '.join(sorted(unstable[number]))})")
        stats.suspect, stats.evidence, stats.flagging = bool(strong), strong, len(strong)
        alone = [s for s, _ in failed if all(t["status"] == "passed" for n, t in by_number[s.name].items()
                                             if n != number and t["tags"] == [rule.category] and attempted(t))]
        siblings = sum(r.category == rule.category for r in rubric.RULES) > 1
        if siblings and alone and 2 * len(alone) >= len(failed):
            stats.evidence.append(f"{len(alone)} of its {len(failed)} failures pass every other test of "
                                  f"{rule.category} ({_names(alone)}): check that it asks only what "
                                  "the assignment asks")
        found.append(stats)
    return found


def write(submissions: list, path: str, correct=(), unstable=None) -> list:
    """tests.csv (HEADER) for the batch; returns the TestStats."""
    found = analyze(submissions, correct, unstable)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for s in found:
            writer.writerow([s.number, s.name, s.category, f"{s.points:g}", s.graded, s.not_attempted,
                             s.passed, "" if s.pass_rate is None else f"{s.pass_rate:.3f}",
                             f"{s.mean_points:.3g}", s.cause, s.cause_count, "yes" if s.suspect else "",
                             " | ".join(s.evidence)])
    return found


def histograms(submissions: list) -> bytes:
    """One PNG: the distribution of the recorded total and of each graded category's score."""
    graded = [s for s in submissions if s.document]
    categories = [c for c in rubric.CATEGORIES
                  if sum(r.weight for r in rubric.RULES if r.category == c)
                  and any(t["tags"] == [c] for s in graded for t in s.document["tests"])]
    panels = [("total", [s.grade.total if s.grade else s.document["score"] for s in graded], 100.0)]
    for category in categories:
        top = sum(r.weight for r in rubric.RULES if r.category == category)
        panels.append((category, [sum(t["score"] for t in s.document["tests"] if t["tags"] == [category])
                                  for s in graded], top))
    columns = 4
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.1 * columns, 2.3 * rows))
    for index, (title, scores, top) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        top = max([top, *scores]) or 1.0
        axes.hist(scores, bins=min(20, max(5, int(top))), range=(0, top), color="C0" if index else "C1",
                  edgecolor="white")
        axes.set_title(f"{title} (out of {top:g})", fontsize=10)
        axes.set_xlim(0, top)
        axes.yaxis.get_major_locator().set_params(integer=True)
        axes.tick_params(labelsize=8)
    figure.supylabel("submissions", fontsize=9)
    # fixed spacing: tight_layout draws the figure twice, doubling its cost
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.1 / rows, top=1 - 0.12 / rows, wspace=0.25,
                           hspace=0.5)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def page(found: list, submissions: list) -> str:
    """The body of report/tests.html."""
    dropped = sorted({n for s in submissions if s.grade for n in s.grade.dropped})
    suspects = [s for s in found if s.suspect]
    rows = []
    for s in found:
        rate = s.pass_rate
        name = html.escape(s.name) + (" <b>(dropped by the TA)</b>" if s.number in dropped else "")
        evidence = "".join(f"<div class={'failed' if i < s.flagging else 'muted'}>"
                           f"&rarr; {html.escape(e)}</div>" for i, e in enumerate(s.evidence))
        rows.append([s.number, name + evidence, s.category, f"{s.points:g}",
                     f"{s.graded}" + (f" <span class=muted>(+{s.not_attempted} not attempted)</span>"
                                      if s.not_attempted else ""),
                     (f"{rate:.0%} <span class=bar style=\"width:{40 * rate:.0f}px\"></span>", f"{rate:.4f}")
                     if rate is not None else ("&ndash;", None),
                     f"{s.mean_points:.3g}",
                     html.escape(s.cause) + (f" <span class=muted>({s.cause_count})</span>" if s.cause else ""),
                     ("<b class=failed>suspect</b>", "1") if s.suspect else ("", "0")])
    summary = (f"<p><b>{len(suspects)} suspect test{'s' * (len(suspects) != 1)}</b>"
               + (": " + ", ".join(f"{s.number} {html.escape(s.name)}" for s in suspects) if suspects else "")
               + ".</p>")
    return ("<p><a href=\"index.html\">&larr; class overview</a></p><h1>Tests: class analytics</h1>"
            "<p class=muted>Per rubric test, over the graded submissions. Pass rates leave out "
            "submissions for which a test found nothing to test (not attempted). <b>Suspect</b>: the "
            "class's results contradict the test (passed by the untouched template outside "
            "interface, failed by the reference or a known-correct submission, or different between "
            "runs); the evidence says which submissions. A TA can leave a test out of every total with "
            "<code>--drop NUMBER</code> (recorded in the ledger). Click a header to sort.</p>"
            + summary
            + html_report.table(["#", "test (evidence below it)", "category", "points", "graded", "pass rate",
                                 "mean points", "most common cause (failures)", "suspect"],
                                rows, {0, 3, 4, 5, 6}, sortable=True)
            + "<h2>Score distributions</h2>"
              '<img src="histograms.png" alt="histograms of the total and of each category\'s score">')


def write_pages(found: list, submissions: list, report: str) -> None:
    """report/tests.html and report/histograms.png."""
    if any(s.document for s in submissions):
        with open(os.path.join(report, "histograms.png"), "wb") as file:
            file.write(histograms(submissions))
    html_report.write_page(os.path.join(report, "tests.html"), "Tests: class analytics",
                           page(found, submissions), script=True)
