"""The TA's HTML report of a batch run: OUT/report/, a folder that opens offline.

    report/index.html                  class overview: score histogram, pass rate per test, the
                                       most common diagnoses, clusters of submissions that fail
                                       the same tests, and every submission's scores
    report/histogram.png
    report/submissions/<name>/index.html   one submission: every test's output and diagnosis,
    report/submissions/<name>/*.png        its loss curve and attention maps (figures.py)

Plain HTML with inline CSS and relative links only: no script, no CDN. Everything taken from a
submission (file names, messages, the student's output) is escaped.
"""

import collections
import html
import io
import os
import re
import statistics
import time
import urllib.parse

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from .. import figures, results, rubric  # noqa: E402

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 3px 10px; text-align: left;
        vertical-align: top; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; white-space: nowrap; } a { overflow-wrap: anywhere; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { display: inline-block; height: 0.8em; background: #4a7ebb; vertical-align: middle; }
.passed { color: #1a7f37; } .failed { color: #c62828; } .muted { color: #777; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.6em; white-space: pre-wrap;
      word-break: break-word; font-size: 13px; margin: 0.3em 0; }
.test { margin: 1em 0 1.4em; } .test h3 { font-size: 1.05em; margin: 0; }
.diagnosis { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.3em 0.6em; }
img { max-width: 100%; border: 1px solid #eee; }
"""

# Each ends at its sentence's end: a period before a space or the line's end ("torch.tril" stays).
CAUSE = re.compile(r"Likely cause: (.+?)(?:\.\s|\.?$)", re.MULTILINE)
MATCHES = re.compile(r"((?:your (?:output|attention)|It) matches .+?)(?:\.\s|\.?$)", re.MULTILINE)
RAISED = re.compile(r"(\b[\w.]+ raised \w+)")
NOT_GRADED = re.compile(r"^(not graded: [^(;\n]+)")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def figures_dir(out: str, name: str) -> str:
    return os.path.join(out, "report", "submissions", name)


def diagnosis(output: str, grouping: bool = False) -> str:
    """The sentence that names the likely bug in a failure message; failing that, its first line,
    with the numbers masked as # when grouping the class's failures (so that failures that differ
    only in numbers group together), and as written on a submission's own page."""
    for pattern in (CAUSE, MATCHES, RAISED, NOT_GRADED):
        found = pattern.search(output)
        if found:
            return found.group(1).strip()
    first = output.strip().split("\n")[0]
    if grouping:
        first = NUMBER.sub("#", first)
    return first if len(first) <= 200 else first[:199] + "\u2026"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _link(submission, prefix: str = "") -> str:
    href = f"{prefix}submissions/{urllib.parse.quote(submission.name)}/index.html"
    label = submission.name + (f" ({submission.student})" if submission.student else "")
    return f'<a href="{href}">{html.escape(label)}</a>'


def _histogram(scores: list, top: float) -> bytes:
    figure = Figure(figsize=(7, 2.8))
    axes = figure.subplots()
    axes.hist(scores, bins=20, range=(0, top), color="C0", edgecolor="white")
    axes.set_xlim(0, top)
    axes.set_xlabel("score")
    axes.set_ylabel("submissions")
    axes.yaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _failed(submission) -> list:
    return [t for t in submission.document["tests"] if t["status"] == "failed"]


def _index(graded: list, broken: list) -> str:
    parts = [f"<h1>Scratch-1: batch report</h1><p class=muted>{len(graded) + len(broken)} submissions, "
             f"generated {time.strftime('%Y-%m-%d %H:%M')}</p>"]
    if graded:
        scores = [s.document["score"] for s in graded]
        parts.append(f"<p>Mean {statistics.mean(scores):.1f}, median {statistics.median(scores):g}, "
                     f"{sum(s == _maximum(g) for s, g in zip(scores, graded))} of {len(scores)} with "
                     'full marks.</p><img src="histogram.png" alt="score histogram" width="700">')
    if broken:
        parts.append("<h2>Not graded</h2>" + _table(["submission", "why"], [
            [html.escape(s.name), html.escape(s.error)] for s in broken]))
    parts += [_pass_rates(graded), _diagnoses(graded), _clusters(graded), _scores(graded)]
    return _page("Scratch-1 batch report", "\n".join(parts))


def _table(header: list, rows: list, numeric=()) -> str:
    """Cells are HTML already; the columns numbered in `numeric` are right-aligned numbers."""
    def cell(tag, index, text):
        return f"<{tag} class=num>{text}</{tag}>" if index in numeric else f"<{tag}>{text}</{tag}>"
    head = "".join(cell("th", i, text) for i, text in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, text) for i, text in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pass_rates(graded: list) -> str:
    numbering, rows = results.numbers(), []
    for rule in rubric.RULES:
        entries = [t for s in graded for t in s.document["tests"] if t["number"] == numbering[rule.test]]
        if entries:
            rate = sum(t["status"] == "passed" for t in entries) / len(entries)
            rows.append([numbering[rule.test], html.escape(rule.name), rule.category, f"{rule.weight:g}",
                         f"{rate:.0%}", f'<span class=bar style="width:{150 * rate:.0f}px"></span>'])
    return "<h2>Pass rate per test</h2>" + _table(["#", "test", "category", "points", "passed", ""], rows, {0, 3, 4})


def _diagnoses(graded: list) -> str:
    causes = collections.defaultdict(dict)  # diagnosis -> {submission: [test numbers]}
    for submission in graded:
        for test in _failed(submission):
            cause = diagnosis(results.plain_output(test), grouping=True) or "(no message)"
            causes[cause].setdefault(submission, []).append(test["number"])
    ranked = sorted(causes.items(), key=lambda item: (-len(item[1]), item[0]))[:30]
    rows = [[str(len(who)), html.escape(cause),
             ", ".join(sorted({n for numbers in who.values() for n in numbers}, key=_number_key)),
             ", ".join(_link(s) for s in who)] for cause, who in ranked]
    return ("<h2>Most common diagnoses</h2><p class=muted>The sentence naming the likely bug in each "
            "failure message (else the message's first line, numbers shown as #), by the number of "
            "submissions it appears in.</p>"
            + _table(["count", "diagnosis", "in tests", "who"], rows, {0}))


def _clusters(graded: list) -> str:
    clusters = collections.defaultdict(list)
    for submission in graded:
        clusters[tuple(t["number"] for t in _failed(submission))].append(submission)
    rows = [[str(len(members)), ", ".join(failed) or "none (full marks)",
             ", ".join(_link(s) for s in members)]
            for failed, members in sorted(clusters.items(), key=lambda item: (-len(item[1]), item[0]))]
    return "<h2>Submissions that fail the same tests</h2>" + _table(["count", "failed tests", "who"], rows, {0})


def _scores(graded: list) -> str:
    rows = [[_link(s), f"<b>{s.document['score']:g}</b>", *(_category(s, c) for c in rubric.CATEGORIES),
             _speedup(s)] for s in graded]
    return "<h2>Submissions</h2>" + _table(["submission", "total", *rubric.CATEGORIES, "KV-cache speed-up"],
                                           rows, set(range(1, 3 + len(rubric.CATEGORIES))))


def _speedup(submission) -> str:
    """The measured speed-up of its KV cache (mastery), or a dash without one."""
    ratio = results.extra_value(submission.document, "kv_cache_speedup")
    return f"{ratio:.1f}&times;" if isinstance(ratio, (int, float)) else "&ndash;"


def _number_key(number: str) -> tuple:
    return tuple(int(part) for part in number.split("."))


def _maximum(submission) -> float:
    return sum(t["max_score"] for t in submission.document["tests"])


def _category(submission, category: str) -> str:
    tests = [t for t in submission.document["tests"] if t["tags"] == [category]]
    return f"{sum(t['score'] for t in tests):g}" if tests else "&ndash;"


def _submission_page(submission, folder: str, log_tail: str) -> str:
    document = submission.document
    title = submission.name + (f" ({submission.student})" if submission.student else "")
    parts = ['<p><a href="../../index.html">&larr; class overview</a></p>',
             f"<h1>{html.escape(title)}: {document['score']:g} / {_maximum(submission):g}</h1>",
             f"<pre>{html.escape(document.get('output', ''))}</pre>"]
    failed = [(t, diagnosis(results.plain_output(t))) for t in document["tests"] if t["status"] == "failed"]
    if failed:
        parts.append("<h2>Failed</h2><ul>" + "".join(
            f'<li><a href="#test-{t["number"]}">{t["number"]} {html.escape(t["name"])}</a>: '
            f'{t["score"]:g} / {t["max_score"]:g}{" &mdash; " + html.escape(cause) if cause else ""}</li>'
            for t, cause in failed) + "</ul>")
    images = [name for name in figures.DRAWINGS if os.path.exists(os.path.join(folder, name))]
    if images:
        parts.append("<h2>Figures</h2>" + "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in images))
    parts.append("<h2>Tests</h2>")
    for test in document["tests"]:
        output = results.plain_output(test)
        cause = diagnosis(output) if test["status"] == "failed" else ""
        parts.append(f'<div class=test id="test-{test["number"]}"><h3>'
                     f'<span class={test["status"]}>{test["status"]}</span> {test["number"]} '
                     f'{html.escape(test["name"])}: {test["score"]:g} / {test["max_score"]:g}'
                     f' <span class=muted>({test["tags"][0]}, {test["visibility"]})</span></h3>'
                     + (f"<p class=diagnosis>Diagnosis: {html.escape(cause)}</p>" if cause else "")
                     + (f"<pre>{html.escape(output)}</pre>" if output else "") + "</div>")
    if log_tail:
        parts.append(f"<h2>Grader log</h2><details><summary>last lines</summary><pre>{html.escape(log_tail)}"
                     "</pre></details>")
    return _page(title, "\n".join(parts))


def _tail(path: str, characters: int = 20_000) -> str:
    try:
        with open(path, errors="replace") as file:
            return file.read()[-characters:]
    except OSError:
        return ""


def build(submissions: list, out: str) -> str:
    """Write the report for the batch's submissions (with .document or .error); returns index.html."""
    report = os.path.join(out, "report")
    os.makedirs(report, exist_ok=True)
    graded = [s for s in submissions if s.document]
    broken = [s for s in submissions if not s.document]
    if graded:
        with open(os.path.join(report, "histogram.png"), "wb") as file:
            file.write(_histogram([s.document["score"] for s in graded], max(map(_maximum, graded))))
    for submission in graded:
        folder = figures_dir(out, submission.name)
        os.makedirs(folder, exist_ok=True)
        page = _submission_page(submission, folder, _tail(submission.log_path(out)))
        with open(os.path.join(folder, "index.html"), "w", encoding="utf-8") as file:
            file.write(page)
    index = os.path.join(report, "index.html")
    with open(index, "w", encoding="utf-8") as file:
        file.write(_index(graded, broken))
    return index
