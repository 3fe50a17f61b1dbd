"""The TA's HTML report of a batch run: OUT/report/, a folder that opens offline.

    report/index.html        read top-down: every submission's total and per-category scores
                             (a sortable table, each name linking to its page), the score
                             histogram, the most common failures grouped by cause, the pass rate
                             per test, clusters of submissions that fail the same tests, and the
                             grading environment (isolation, Python, torch), once for the batch
    report/histogram.png
    report/submissions/<name>/index.html   one submission: its scores per category, every
                             failure with its likely cause, each test's output, its figures and
                             its code, line-numbered, the lines that messages name marked
    report/submissions/<name>/*.png        its loss curve and attention maps (figures.py)

The index links, at its top, to the batch's other pages (`pages`: written by ledger.py,
analytics.py and similarity.py with this file's `page`, `table` and `write_page`). Totals are the
recorded grades (`recorded_total`: the ledger's drops, --never-lower and overrides applied),
marked with a * where they differ from the grader's.

Plain HTML with inline CSS, relative links and one small inline script (sorting a table by a
click on its header; the page reads the same without it): no CDN, nothing fetched. Everything
taken from a submission (names, messages, code, output) is escaped. Failures are grouped by the
Verdicts the checks recorded (extra_data["verdicts"], see verdict.py), never by reading their
messages back.
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

from .. import figures, intake, results, rubric  # noqa: E402
from ..verdict import Verdict, from_message  # noqa: E402

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1220px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 3px 8px; text-align: left;
        vertical-align: top; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; white-space: nowrap; }
a.name { white-space: nowrap; }  /* a submission's name never breaks */
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { display: inline-block; height: 0.8em; background: #4a7ebb; vertical-align: middle; }
.passed { color: #1a7f37; } .failed { color: #c62828; } .muted { color: #777; }
.full { color: #1a7f37; } .partial { color: #b26a00; } .zero { color: #c62828; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.6em; white-space: pre-wrap;
      overflow-wrap: break-word; font-size: 13px; margin: 0.3em 0; }
.test { margin: 1em 0 1.4em; } .test h3 { font-size: 1.05em; margin: 0 0 0.2em; }
.verdict { margin: 0.3em 0; } .headline { font-family: ui-monospace, monospace; font-size: 13px; }
.cause { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.3em 0.6em; margin: 0.3em 0; }
.hint { color: #444; margin: 0.2em 0; }
img { max-width: 100%; border: 1px solid #eee; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 0.7em; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; font-size: 0.7em; }
pre.code { white-space: pre; overflow-x: auto; padding: 0.4em 0; line-height: 1.35; }
pre.code .line { display: block; padding-right: 1em; }
pre.code .ln { display: inline-block; width: 3.2em; margin-right: 1em; text-align: right; color: #999;
               text-decoration: none; user-select: none; }
pre.code .named { background: #ffe8e8; } pre.code .line:target { background: #fff3a8; }
pre.code mark { background: #ffd28a; }
nav.pages { margin: 0.3em 0 0.8em; } nav.pages a { margin-right: 1.2em; }
.sidebyside { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.sidebyside > div { min-width: 0; } .sidebyside h2 { font-size: 1.05em; }
"""

# Sorts a table.sortable by the column whose header was clicked (again: the other way). A cell's
# data-sort, if any, is its key; numeric columns (class num) sort as numbers, blanks last.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (header, column) {
    header.title = "sort by this column";
    header.addEventListener("click", function () {
      var numeric = header.classList.contains("num");
      var current = header.getAttribute("aria-sort");  // a first click: numbers high to low
      var ascending = current ? current === "descending" : !numeric;
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column], text = cell ? (cell.getAttribute("data-sort") || cell.textContent) : "";
        if (!numeric) return text.toLowerCase();
        var value = parseFloat(text);
        return isNaN(value) ? null : value;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        return (x < y ? -1 : 1) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

# A line of the submission named in a message: "backbone.py line 41", "at line 12". Used only to
# link the message to the code below it; failures are grouped by their Verdicts.
LINE_REFERENCE = re.compile(r"\b(line )(\d+)\b")


def figures_dir(out: str, name: str) -> str:
    return os.path.join(out, "report", "submissions", name)


def verdicts(test: dict) -> list:
    """A test's failures, as the check recorded them (extra_data["verdicts"]). A failed test
    without one (partial credit, a check that did not run) gets one made of its output."""
    found = []
    for data in (test.get("extra_data") or {}).get("verdicts") or []:
        try:
            found.append(Verdict.from_dict(data))
        except (TypeError, ValueError, AttributeError):  # a record this kit cannot read
            continue
    if found or test["status"] != "failed":
        return found
    return [from_message(results.plain_output(test).strip() or "(no message)")]


def _group(test: dict, verdict: Verdict) -> tuple:
    """What failures that belong together share: a likely cause (in any test), or else the
    kind of failure within one test."""
    return (verdict.group(), "" if verdict.cause else test["number"])


def page(title: str, body: str, script: bool = False) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{STYLE}</style></head><body>\n{body}\n"
            + (f"<script>{SCRIPT}</script>\n" if script else "") + "</body></html>\n")


def write_page(path: str, title: str, body: str, script: bool = False) -> None:
    """One page of the report at `path` (its folder made if needed)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(page(title, body, script))


def recorded_total(submission) -> float:
    """The submission's recorded total (ledger.Grade: drops, --never-lower, overrides), else its
    results' score."""
    grade = getattr(submission, "grade", None)
    return grade.total if grade is not None else submission.document["score"]


def _adjustments(submission) -> str:
    grade = getattr(submission, "grade", None)
    if grade is None:
        return ""
    return "; ".join([f"dropped {', '.join(grade.dropped)}"] * bool(grade.dropped) + grade.adjustments)


def _adjusted_mark(submission) -> str:
    """A mark after a total the TA's adjustments changed, its title saying how."""
    adjusted = _adjustments(submission)
    return f' <span class=partial title="{html.escape(adjusted)}">*</span>' if adjusted else ""


def _label(submission) -> str:
    return submission.name + (f" ({submission.student})" if submission.student else "")


def _link(submission) -> str:
    """A link from the class overview to the submission's page."""
    href = f"submissions/{urllib.parse.quote(submission.name)}/index.html"
    return f'<a class=name href="{href}">{html.escape(_label(submission))}</a>'


def _histogram(scores: list, top: float) -> bytes:
    figure = Figure(figsize=(7, 2.6))
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
    """The failed tests, less the optional ones that found nothing to grade (results.attempted):
    a submission without a KV-cache does not fail the mastery tests, it did not attempt them."""
    return [t for t in submission.document["tests"] if t["status"] == "failed" and results.attempted(t)]


def table(header: list, rows: list, numeric=(), sortable: bool = False) -> str:
    """Cells are HTML already (a cell may be (html, sort key)); the columns numbered in
    `numeric` are right-aligned numbers."""
    def cell(tag, index, content):
        content, key = content if isinstance(content, tuple) else (content, None)
        attributes = (" class=num" if index in numeric else "") + (f' data-sort="{key}"' if key is not None else "")
        return f"<{tag}{attributes}>{content}</{tag}>"
    head = "".join(cell("th", i, text) for i, text in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, text) for i, text in enumerate(row)) + "</tr>" for row in rows)
    return f"<table{' class=sortable' if sortable else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _maximum(submission) -> float:
    return sum(t["max_score"] for t in submission.document["tests"]
               if t["tags"][0] not in rubric.BONUS_CATEGORIES)


def _categories(graded: list) -> list:
    """The categories graded in this batch (a run with --only grades fewer)."""
    return [c for c in rubric.CATEGORIES if any(t["tags"] == [c] for s in graded for t in s.document["tests"])]


def _category_cell(submission, category: str) -> tuple:
    """(the category's score as HTML, coloured by how much of it was earned; its sort key)."""
    totals = results.by_category(submission.document["tests"])
    if category not in totals:
        return "&ndash;", None
    score, top = totals[category]
    shade = "full" if score >= top else "zero" if score == 0 else "partial"
    return (f"<span class={shade}>{score:g}</span>" if top else f"{score:g}"), f"{score:g}"


def _speedup(submission):
    """The measured speed-up of its KV cache (mastery), or a dash without one."""
    ratio = results.extra_value(submission.document, "kv_cache_speedup")
    return (f"{ratio:.1f}&times;", f"{ratio:g}") if isinstance(ratio, (int, float)) else "&ndash;"


def _number_key(number: str) -> tuple:
    return tuple(int(part) for part in number.split("."))


# -- the class overview -----------------------------------------------------------------------

def _scores(graded: list, broken: list) -> str:
    categories = _categories(graded)
    speedups = any(results.extra_value(s.document, "kv_cache_speedup") is not None for s in graded)
    rows = [[_link(s), (f"<b>{recorded_total(s):g}</b>" + _adjusted_mark(s), f"{recorded_total(s):g}"),
             *(_category_cell(s, c) for c in categories), *[_speedup(s)] * speedups, str(len(_failed(s)))]
            for s in graded]
    rows += [[html.escape(_label(s)), "<span class=failed>grader error</span>",
              *("" for _ in categories), *[""] * speedups, ""] for s in broken]
    maxima = {c: sum(r.weight for r in rubric.RULES if r.category == c) for c in categories}
    header = ["submission", "total", *categories, *["KV-cache speed-up"] * speedups, "failed"]
    note = ("<p class=muted>Out of: " + ", ".join(f"{c} {maxima[c]:g}" for c in categories)
            + ". Click a column's header to sort by it.</p>")
    return ("<h2>Submissions</h2>" + note
            + table(header, rows, set(range(1, len(header))), sortable=True))


def _summary_line(graded: list, broken: list) -> str:
    total = len(graded) + len(broken)
    line = f"{total} submission{'s' * (total != 1)}, generated {time.strftime('%Y-%m-%d %H:%M')}"
    if graded:
        scores = [recorded_total(s) for s in graded]
        line += (f". Mean score {statistics.mean(scores):.1f}, median {statistics.median(scores):g}, "
                 f"{sum(recorded_total(s) >= _maximum(s) for s in graded)} of {len(graded)} with full marks")
    if broken:
        line += f"; {len(broken)} not graded (see below)"
    return f"<p class=muted>{line}.</p>"


def _diagnoses(graded: list) -> str:
    groups = collections.defaultdict(dict)  # _group -> {submission: the first verdict's headline}
    tests = collections.defaultdict(set)
    for submission in graded:
        for test in _failed(submission):
            for verdict in verdicts(test):
                groups[_group(test, verdict)].setdefault(submission, verdict.headline())
                tests[_group(test, verdict)].add(test["number"])
    # A failure without a cause that the same submissions share in several tests (a TODO left
    # unimplemented raises in every test of its part) is one row.
    rows = {}
    for (text, test), who in groups.items():
        key = (text, bool(test), tuple(s.name for s in who) if test else ())
        row = rows.setdefault(key, {"who": who, "tests": set(), "example": next(iter(who.values()))})
        row["tests"] |= tests[(text, test)]
    ranked = sorted(rows.items(), key=lambda item: (-len(item[1]["who"]), item[0][1], item[0][0]))
    found = []
    for (text, without_cause, _), row in ranked:
        if without_cause:  # what kind of failure, and what one submission's check measured
            text = f"{html.escape(text)}<br><span class=muted>e.g. {html.escape(row['example'])}</span>"
        else:
            text = f"<b>{html.escape(text)}</b>"
        numbers = ", ".join(sorted(row["tests"], key=_number_key))
        found.append([str(len(row["who"])), text, numbers, ", ".join(_link(s) for s in row["who"])])
    return ("<h2>Most common diagnoses</h2><p class=muted>Grouped by the likely cause the grader "
            "named (bold), in whichever tests it appeared; a failure without a named cause is "
            "grouped by its kind and the submissions that have it. Counted in submissions.</p>"
            + table(["count", "failure", "tests", "who"], found, {0}))


def _pass_rates(graded: list) -> str:
    numbering, rows = results.numbers(), []
    for rule in rubric.RULES:
        entries = [t for s in graded for t in s.document["tests"] if t["number"] == numbering[rule.test]
                   and (t.get("extra_data") or {}).get("attempted", True) is not False]  # see analytics
        if entries:
            rate = sum(t["status"] == "passed" for t in entries) / len(entries)
            rows.append([numbering[rule.test], html.escape(rule.name), rule.category, f"{rule.weight:g}",
                         f"{rate:.0%}", f'<span class=bar style="width:{120 * rate:.0f}px"></span>'])
    return "<h2>Pass rate per test</h2>" + table(["#", "test", "category", "points", "passed", ""], rows, {0, 3, 4})


def _clusters(graded: list) -> str:
    clusters = collections.defaultdict(list)
    for submission in graded:
        clusters[tuple(t["number"] for t in _failed(submission))].append(submission)
    rows = [[str(len(members)), ", ".join(failed) or "none (full marks)",
             ", ".join(_link(s) for s in members)]
            for failed, members in sorted(clusters.items(), key=lambda item: (-len(item[1]), item[0]))]
    return "<h2>Submissions that fail the same tests</h2>" + table(["count", "failed tests", "who"], rows, {0})


def _environment(graded: list) -> str:
    """The isolation and the worker's versions, each variant once with how many gradings had it
    (a batch graded on one machine has one)."""
    isolation = collections.Counter(tuple((s.document.get("extra_data") or {}).get("isolation") or ())
                                    for s in graded)
    workers = collections.Counter(tuple(sorted(((s.document.get("extra_data") or {}).get("worker") or {}).items()))
                                  for s in graded)
    parts = ["<h2>Grading environment</h2>"]
    for protections, count in isolation.most_common():
        if protections:
            parts.append(f"<p>Isolation of the students' code, in {count} of {len(graded)} gradings "
                         "(as checked on the grading machine):</p><ul>"
                         + "".join(f"<li>{html.escape(str(p))}</li>" for p in protections) + "</ul>")
    for worker, count in workers.most_common():
        versions = dict(worker)
        if versions:
            mismatch = ("" if versions.get("python") == versions.get("grader_python") else
                        f" (the grader itself ran Python {html.escape(str(versions.get('grader_python')))}: "
                        "the worker's interpreter loaded another Python runtime)")
            parts.append(f"<p>The worker ran Python {html.escape(str(versions.get('python')))} and torch "
                         f"{html.escape(str(versions.get('torch')))}{mismatch}, in {count} of "
                         f"{len(graded)} gradings.</p>")
    return "\n".join(parts) if len(parts) > 1 else ""


def _index(graded: list, broken: list, pages=()) -> str:
    parts = ["<h1>Scratch-1: batch report</h1>", _summary_line(graded, broken)]
    if pages:
        parts.append("<nav class=pages>" + "".join(f'<a href="{html.escape(file)}">{html.escape(title)}</a>'
                                                     for file, title in pages) + "</nav>")
    parts.append(_scores(graded, broken))
    if broken:
        parts.append("<h2>Not graded</h2>" + table(["submission", "why"], [
            [html.escape(_label(s)), html.escape(s.error)] for s in broken]))
    if graded:
        parts += ["<h2>Scores</h2>"
                  '<img src="histogram.png" alt="histogram of the total scores" width="700">',
                  _diagnoses(graded), _pass_rates(graded), _clusters(graded), _environment(graded)]
    return page("Scratch-1 batch report", "\n".join(parts), script=True)


# -- one submission ---------------------------------------------------------------------------

def _code(submission) -> tuple:
    """(the file graded, relative to the submission, its text) or ("", "") if it cannot be read."""
    found = intake.locate(submission.path)
    try:
        if not found.file:
            return "", ""
        with open(found.file, "rb") as file:
            text = file.read(intake.MAX_SOURCE_BYTES).decode("utf-8", "replace")
        base = found.temporary or (submission.path if os.path.isdir(submission.path)
                                   else os.path.dirname(submission.path))
        return os.path.relpath(found.file, base), text
    except OSError:
        return "", ""
    finally:
        found.cleanup()


def _linked(text: str, lines: int) -> str:
    """`text` escaped, each "line N" of the submitted code a link to that line."""
    def link(match):
        number = int(match.group(2))
        return f'{match.group(1)}<a href="#L{number}">{number}</a>' if 1 <= number <= lines else match.group(0)
    return LINE_REFERENCE.sub(link, html.escape(text))


def _named_lines(texts: list, lines: int) -> list:
    return sorted({int(m.group(2)) for text in texts for m in LINE_REFERENCE.finditer(text)
                   if 1 <= int(m.group(2)) <= lines})


def _verdict_html(verdict: Verdict, lines: int) -> str:
    parts = [f"<p class=headline>{_linked(verdict.headline(), lines)}</p>"]
    if verdict.cause:
        parts.append(f"<p class=cause>Likely cause: {_linked(verdict.cause.rstrip('.'), lines)}.</p>")
    if verdict.hint:
        parts.append(f"<p class=hint>{_linked(verdict.hint, lines)}</p>")
    return "<div class=verdict>" + "".join(parts) + "</div>"


def _test_html(test: dict, lines: int) -> str:
    found = verdicts(test)
    rest = results.plain_output(test)
    for verdict in found:  # what the output holds besides the verdicts: the grader's notes
        rest = rest.replace(verdict.text(), "", 1)
    rest = rest.strip("\n")
    return (f'<div class=test id="test-{test["number"]}"><h3>'
            f'<span class={test["status"]}>{test["status"]}</span> {test["number"]} '
            f'{html.escape(test["name"])}: {test["score"]:g} / {test["max_score"]:g}'
            f' <span class=muted>({test["tags"][0]}, {test["visibility"]})</span></h3>'
            + "".join(_verdict_html(v, lines) for v in found)
            + (f"<pre>{_linked(rest, lines)}</pre>" if rest.strip() else "") + "</div>")


def _submission_page(submission, folder: str, log_tail: str) -> str:
    document = submission.document
    path, code = _code(submission)
    lines = code.count("\n") + (not code.endswith("\n")) if code else 0
    title = _label(submission)
    tests = document["tests"]
    parts = ['<p><a href="../../index.html">&larr; class overview</a></p>',
             f"<h1>{html.escape(title)}: {recorded_total(submission):g} / {_maximum(submission):g}</h1>"]
    adjusted = _adjustments(submission)
    if adjusted:
        parts.append(f"<p class=cause>Recorded grade adjusted by the TA (the grader gave "
                     f"{submission.grade.graded:g}): {html.escape(adjusted)}. See the "
                     '<a href="../../ledger.html">ledger</a>.</p>')
    totals = results.by_category(tests)
    categories = list(totals)
    scores = [f"{_category_cell(submission, c)[0]} / {totals[c][1]:g}" for c in categories]
    parts.append(table(categories, [scores], set(range(len(categories)))))
    failed = _failed(submission)
    if failed:
        items = []
        for test in failed:
            found = verdicts(test)
            causes = list(dict.fromkeys(v.cause for v in found if v.cause))
            what = "; ".join(f"likely cause: {c}" for c in causes) if causes else found[0].headline()
            items.append(f'<li><a href="#test-{test["number"]}">{test["number"]} {html.escape(test["name"])}</a>: '
                         f'{test["score"]:g} / {test["max_score"]:g} &mdash; {_linked(what, lines)}</li>')
        parts.append(f"<h2>Failed ({len(failed)})</h2><ul>" + "".join(items) + "</ul>")
    named = _named_lines([results.plain_output(t) for t in failed], lines)
    if code:
        parts.append('<p>Below: each test\'s output, then <a href="#code">the submitted code</a>'
                     + (" (lines named in failures: " + ", ".join(f'<a href="#L{n}">{n}</a>' for n in named) + ")"
                        if named else "") + ".</p>")
    parts.append("<details><summary>What the student reads at the top of the results</summary>"
                 f"<pre>{html.escape(document.get('output', ''))}</pre></details>")
    images = [name for name in figures.DRAWINGS if os.path.exists(os.path.join(folder, name))]
    parts.append("<h2>Tests</h2>" + "".join(_test_html(test, lines) for test in tests))
    if images:
        parts.append("<h2>Figures</h2>" + "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in images))
    if code:
        body = "".join(f'<span class="line{" named" * (n in named)}" id="L{n}"><a class=ln href="#L{n}">{n}</a>'
                       f"{html.escape(text)}</span>" for n, text in enumerate(code.splitlines(), 1))
        parts.append(f'<h2 id="code">Submitted code: {html.escape(path)}</h2>'
                     + ("<p class=muted>Marked: the lines named in failure messages.</p>" if named else "")
                     + f"<pre class=code>{body}</pre>")
    if log_tail:
        parts.append(f"<h2>Grader log</h2><details><summary>last lines</summary><pre>{html.escape(log_tail)}"
                     "</pre></details>")
    return page(title, "\n".join(parts))


def _tail(path: str, characters: int = 20_000) -> str:
    try:
        with open(path, errors="replace") as file:
            return file.read()[-characters:]
    except OSError:
        return ""


def build(submissions: list, out: str, pages=()) -> str:
    """Write the report for the batch's submissions (with .document or .error); returns index.html.
    `pages`: (file, title) of the report's other pages, linked from the top of the index."""
    report = os.path.join(out, "report")
    os.makedirs(report, exist_ok=True)
    graded = [s for s in submissions if s.document]
    broken = [s for s in submissions if not s.document]
    if graded:
        with open(os.path.join(report, "histogram.png"), "wb") as file:
            scores = [recorded_total(s) for s in graded]
            file.write(_histogram(scores, max(*map(_maximum, graded), *scores)))
    for submission in graded:
        folder = figures_dir(out, submission.name)
        os.makedirs(folder, exist_ok=True)
        text = _submission_page(submission, folder, _tail(submission.log_path(out)))
        with open(os.path.join(folder, "index.html"), "w", encoding="utf-8") as file:
            file.write(text)
    index = os.path.join(report, "index.html")
    with open(index, "w", encoding="utf-8") as file:
        file.write(_index(graded, broken, pages))
    return index
