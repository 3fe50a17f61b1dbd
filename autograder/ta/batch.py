"""A TA's batch run: grade every submission in a folder, in parallel, resumably.

    ./run_autograder --batch DIR --out OUT [--jobs N] [--regrade] [--only CATEGORY ...]
                     [--drop TEST ...] [--never-lower]

Every entry of DIR is one submission: a .py file, a folder or a zip, named after the entry
(extension dropped). Gradescope's "Export Submissions" folder is recognised by its
`submission_metadata.yml`: each `submission_<id>/` folder is a submission, and the students'
names are read from the metadata with a minimal parser (the file is Ruby-style YAML; pyyaml is
not a dependency, so only the `:name:` lines under each submission's `:submitters:` are read;
anything unparsable just leaves the name out).

Each submission is graded by its own grader process (`python -m autograder --submission ...
--results ... --figures ...`, what run_autograder runs), up to --jobs at once (default: one per
core), so a crash or hang in one never stops the others. A submission whose results file is
newer than every file of the submission, holds every category asked for and was made by the
same grading code and rubric (kit_version.fingerprint(), recorded in each results.json) is
skipped, unless --regrade; the run says how many results it regrades because the kit changed. A
grading that hit an internal error of the grader (results.internal_error, exit status 1) is a
grader error in the summary, never a score. Written to OUT:
    results/<name>.json       each submission's results.json (as Gradescope would get it)
    logs/<name>.log           the grader's output for it (incl. what the student's code printed)
    summary.csv               one row per submission: total (its recorded grade), each category,
                              each test, the grader's total and what adjusted it
    history/<run>/<name>.json results a regrade replaced; grades.json, ledger.csv: the recorded
                              grades and every move of one, and why (ledger.py; with
                              overrides.csv, --drop and --never-lower)
    tests.csv                 per test: pass rate, causes, suspect tests (analytics.py)
    similarity.csv            pairs of submissions sharing code (similarity.py, copydetect)
    report/index.html         the HTML report (html_report.py), with a page per submission, and
                              report/tests.html, similarity.html, ledger.html
and the terminal gets a table of the scores. A run that finds every result up to date says so
("N up to date, nothing to grade (use --regrade)") and only rebuilds the summary and report.
"""

import concurrent.futures
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from .. import kit_version, results, rubric
from ..sandbox import protections
from . import analytics, html_report, ledger, similarity

KIT = kit_version.KIT
PAGES = (("tests.html", "Tests: class analytics"), ("similarity.html", "Similarity"),
         ("ledger.html", "Regrade ledger"))  # the report's pages besides the index
METADATA = "submission_metadata.yml"
# A whole grading run takes ~30 s; the checks' own timeouts end a hung one well before this.
SUBMISSION_TIMEOUT = 30 * 60


@dataclass(eq=False)  # hashable by identity: the report groups submissions
class Submission:
    name: str  # unique and safe as a file name
    path: str
    student: str = ""  # from Gradescope's metadata, if any
    document: dict = None  # its results.json, once graded
    error: str = ""  # why there is no results.json
    grade: object = None  # its recorded grade (ledger.Grade): drops, --never-lower, overrides

    def results_path(self, out: str) -> str:
        return os.path.join(out, "results", self.name + ".json")

    def log_path(self, out: str) -> str:
        return os.path.join(out, "logs", self.name + ".log")


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name).strip("._") or "submission"


def gradescope_students(path: str) -> dict:
    """{"submission_<id>": "Name, Name"} from Gradescope's submission_metadata.yml."""
    students, current, submitters_indent = {}, None, None
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            indent = len(line) - len(line.lstrip(" "))
            text = line.strip()
            key = re.match(r"^:?(submission_\d+):$", text)
            if indent == 0 and key:
                current, submitters_indent = key.group(1), None
            elif text in (":submitters:", "submitters:"):
                submitters_indent = indent
            elif submitters_indent is not None and (indent > submitters_indent or text.startswith("- ")):
                name = re.match(r"^(?:- )?:?name:\s*(.+)$", text)
                if name and current:
                    value = name.group(1).strip().strip("'\"")
                    students[current] = ", ".join(filter(None, [students.get(current), value]))
            else:
                submitters_indent = None
    return students


def find(folder: str, out: str) -> list:
    """The submissions in `folder`, sorted by name."""
    entries = sorted(e for e in os.listdir(folder) if not e.startswith("."))
    students = {}
    if METADATA in entries:
        try:
            students = gradescope_students(os.path.join(folder, METADATA))
        except OSError as error:
            print(f"{METADATA} could not be read ({error}): students are named by folder", file=sys.stderr)
        entries = [e for e in entries if e.startswith("submission_") and os.path.isdir(os.path.join(folder, e))]
    submissions, taken = [], set()
    for entry in entries:
        path = os.path.join(folder, entry)
        if os.path.realpath(path) == os.path.realpath(out):
            continue
        stem, extension = os.path.splitext(entry)
        name = _safe(stem if extension.lower() in (".py", ".zip") else entry)
        while name in taken:
            name += "_"
        taken.add(name)
        submissions.append(Submission(name, path, students.get(entry, "")))
    return submissions


def _newest_change(path: str) -> float:
    if not os.path.isdir(path):
        return os.path.getmtime(path)
    times = [os.path.getmtime(path)]
    for directory, _, files in os.walk(path):
        times.extend(os.path.getmtime(os.path.join(directory, f)) for f in files)
    return max(times)


def graded_with(submission: Submission, out: str, only):
    """The kit fingerprint recorded in its results ("" if none) when they are newer than the
    submission and hold every category asked for; None when there is nothing to keep."""
    results_path = submission.results_path(out)
    if not os.path.exists(results_path) or os.path.getmtime(results_path) <= _newest_change(submission.path):
        return None
    try:
        with open(results_path) as file:
            document = json.load(file)
        graded = {tag for test in document["tests"] for tag in test["tags"]}
        kit = (document.get("extra_data") or {}).get("kit") or ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if results.internal_error_of(document) or not set(only or rubric.CATEGORIES) <= graded:
        return None
    return str(kit)


def up_to_date(submission: Submission, out: str, only) -> bool:
    """Its results can be kept: complete, newer than it, made by this grading code and rubric."""
    return graded_with(submission, out, only) == kit_version.fingerprint()


def grade_one(submission: Submission, out: str, only) -> None:
    """Grade in a child process; on success its results.json is in out/results."""
    judge(submission, out, run_grader(submission, out, only))


def run_grader(submission: Submission, out: str, only):
    """The grader process on one submission, writing its results, log and figures into `out`;
    its exit status, or why it was killed. The one per-submission code path of every engine."""
    results_path = submission.results_path(out)
    figures_dir = html_report.figures_dir(out, submission.name)
    shutil.rmtree(figures_dir, ignore_errors=True)  # nothing stale from an earlier grade
    if os.path.exists(results_path):
        os.remove(results_path)
    command = [sys.executable, "-m", "autograder", "--submission", os.path.abspath(submission.path),
               "--results", results_path, "--figures", figures_dir]
    for category in only or ():
        command += ["--only", category]
    environment = dict(os.environ, PYTHONPATH=KIT, PYTHONDONTWRITEBYTECODE="1")
    with open(submission.log_path(out), "w") as log:
        process = subprocess.Popen(command, cwd=KIT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            return process.wait(SUBMISSION_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"killed after {SUBMISSION_TIMEOUT} s"


def judge(submission: Submission, out: str, code) -> None:
    """Set submission.error when the grading whose files are in `out` exited with `code`
    without usable results: a grader error, never a score."""
    results_path = submission.results_path(out)
    log = os.path.relpath(submission.log_path(out), out)
    cause = ""
    if os.path.exists(results_path):
        try:
            with open(results_path) as file:
                cause = results.internal_error_of(json.load(file))
        except (OSError, ValueError):
            pass
    if cause:
        submission.error = f"grader error (not the student's): {cause}; see {log}"
    elif code != 0 or not os.path.exists(results_path):
        submission.error = f"the grader failed (exit {code}); see {log}"


def local_pool(pending: list, out: str, only, jobs: int):
    """Grade `pending` with up to `jobs` grader processes on this machine; yields each
    submission as it finishes (submission.error set if it could not be graded)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, s, out, only): s for s in pending}
        for future in concurrent.futures.as_completed(futures):
            submission = futures[future]
            try:
                future.result()
            except Exception as error:  # a failure to even start the grader: this one only
                submission.error = f"could not be graded: {type(error).__name__}: {error}"
            yield submission


class Progress:
    """One plain-text line on stderr: done/total, elapsed time and the estimated time left."""

    def __init__(self, total: int, skipped: int):
        self.total, self.done, self.skipped, self.failed = total, skipped, skipped, 0
        self.start = time.monotonic()
        self.rewrite = sys.stderr.isatty()

    def update(self, submission: Submission) -> None:
        self.done += 1
        self.failed += bool(submission.error)
        elapsed = time.monotonic() - self.start
        graded = self.done - self.skipped
        left = elapsed / graded * (self.total - self.done) if graded else 0.0
        bar = "#" * (20 * self.done // max(self.total, 1))
        line = (f"[{bar:<20}] {self.done}/{self.total} done ({self.skipped} up to date, "
                f"{self.failed} failed)  {_clock(elapsed)} elapsed, ETA {_clock(left)}  {submission.name}")
        print(("\r" + line + "\x1b[K") if self.rewrite else line, end="" if self.rewrite else "\n",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.rewrite:
            print(file=sys.stderr)


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def write_summary(submissions: list, path: str) -> None:
    """summary.csv: a row per submission; `total` is its recorded grade (ledger.py), `graded
    total` the grader's (less dropped tests), `adjusted` what made them differ."""
    numbering = results.numbers()
    tests = [(numbering[rule.test], rule.name) for rule in rubric.RULES]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["submission", "student", "total", *rubric.CATEGORIES,
                         *(f"{number} {name}" for number, name in tests), "kv_cache_speedup",
                         "graded total", "adjusted", "error"])
        for submission in submissions:
            document = submission.document or {"tests": []}
            scores = {test["number"]: test["score"] for test in document["tests"]}
            categories = results.by_category(document["tests"])
            grade = submission.grade if submission.document else None
            row = [grade.total if grade else document.get("score", ""),
                   *(categories.get(c, (0, 0))[0] if submission.document else "" for c in rubric.CATEGORIES),
                   *(scores.get(number, "") for number, _ in tests),
                   results.extra_value(document, "kv_cache_speedup", ""),
                   grade.graded if grade else "", ledger.adjusted(grade) if grade else ""]
            writer.writerow([submission.name, submission.student,
                             *(f"{v:g}" if isinstance(v, float) else v for v in row), submission.error])


def score_table(submissions: list) -> str:
    """The batch's scores as a plain-text table: a row per submission (its total and each
    category graded), "grader error" for one without results."""
    graded = [s for s in submissions if s.document]
    categories = [c for c in rubric.CATEGORIES
                  if any(t["tags"] == [c] and t["max_score"] for s in graded for t in s.document["tests"])]
    rows = [["submission", "total", *categories]]
    for submission in submissions:
        if not submission.document:
            rows.append([submission.name, "grader error"])
            continue
        totals = results.by_category(submission.document["tests"])
        rows.append([submission.name, f"{submission.document['score']:g}",
                     *(f"{totals.get(c, (0, 0))[0]:g}" for c in categories)])
    widths = [max(len(row[i]) for row in rows if len(row) == len(rows[0])) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
                     for row in rows)


def _documents(submissions: list, out: str) -> dict:
    """{name: results.json} of the submissions that have readable results in `out`."""
    found = {}
    for submission in submissions:
        try:
            with open(submission.results_path(out)) as file:
                found[submission.name] = json.load(file)
        except (OSError, ValueError):
            continue
    return found


def run(folder: str, out: str, jobs: int, regrade: bool = False, only=None, engine=None,
        drop=(), never_lower: bool = False) -> int:
    """The batch run; `engine(pending, out, only, jobs)` grades and yields each submission as it
    finishes (default local_pool; batch_ray.engine for a Ray cluster). `drop` (test numbers or
    names) and `never_lower` adjust the recorded grades (ledger.py). Exit status 1 if any
    submission could not be graded."""
    engine = engine or local_pool
    folder, out = os.path.abspath(folder), os.path.abspath(out)
    if not os.path.isdir(folder):
        print(f"--batch {folder}: not a folder", file=sys.stderr)
        return 2
    unknown = [test for test in drop if not ledger.test_number(test)]
    if unknown:
        print(f"--drop {', '.join(unknown)}: no such test (give a test's number, e.g. 3.1, or its name)",
              file=sys.stderr)
        return 2
    for sub in ("results", "logs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    exposed = _exposed_kits_warning()
    if exposed:
        print(exposed, file=sys.stderr)
    submissions = find(folder, out)
    kit = kit_version.fingerprint()
    kits = {s.name: graded_with(s, out, only) for s in submissions}
    pending = [s for s in submissions if regrade or kits[s.name] != kit]
    current = len(submissions) - len(pending)
    run_name = ledger.run_stamp()
    earlier = _documents(pending, out)  # the results a regrade replaces: kept in history/
    ledger.archive([s for s in pending if s.name in earlier], out, run_name)
    if pending:
        pool = f" with {jobs} at a time" if engine is local_pool else ""
        print(f"{len(submissions)} submissions in {folder}: grading {len(pending)}{pool}"
              + (f" ({current} up to date)" if current else ""), file=sys.stderr)
        stale = sum(kits[s.name] not in (None, kit) for s in pending)
        if stale and not regrade:
            print(f"{stale} of them were graded before the grading code or the rubric changed "
                  f"(kit {kit}): regrading them", file=sys.stderr)
        progress = Progress(len(submissions), current)
        for submission in engine(pending, out, only, jobs):
            progress.update(submission)
        progress.close()
    else:
        print(f"{len(submissions)} submissions in {folder}: {current} up to date, nothing to grade "
              "(use --regrade)", file=sys.stderr)
    for submission in submissions:
        if not submission.error:
            try:
                with open(submission.results_path(out)) as file:
                    submission.document = json.load(file)
            except (OSError, ValueError) as error:
                submission.error = f"no readable results: {error}"
    moved = []
    if only:
        print("ledger: not updated by a run with --only (its results hold only some tests)", file=sys.stderr)
    else:
        moved = ledger.settle(submissions, out, run_name, earlier, drop, never_lower)
        print(f"ledger: {len(moved)} recorded grade(s) moved"
              + (f" (see {os.path.join(out, 'ledger.csv')})" if moved else ""), file=sys.stderr)
    write_summary(submissions, os.path.join(out, "summary.csv"))
    stats = analytics.write(submissions, os.path.join(out, "tests.csv"), unstable=ledger.unstable(moved))
    measured = similarity.measure(submissions)
    similarity.write(measured, os.path.join(out, "similarity.csv"))
    if measured.missing:
        print(f"similarity: not measured: {measured.missing}", file=sys.stderr)
    index = html_report.build(submissions, out, PAGES)
    report = os.path.dirname(index)
    analytics.write_pages(stats, submissions, report)
    similarity.write_pages(measured, report)
    html_report.write_page(os.path.join(report, "ledger.html"), "Regrade ledger",
                           ledger.page(out, run_name, submissions))
    print(score_table(submissions))
    failed = [s.name for s in submissions if s.error]
    print(f"summary: {os.path.join(out, 'summary.csv')}\nreport:  {index}"
          + (f"\nnot graded ({len(failed)}): {', '.join(failed)}" if failed else ""), file=sys.stderr)
    if exposed:
        print(exposed, file=sys.stderr)
    return 1 if failed else 0


def _exposed_kits_warning() -> str:
    """A loud warning, when the worker could read a reference solution on this machine, else ''."""
    exposed = protections.readable_checkouts()
    if not exposed:
        return ""
    lines = "\n".join(f"    {path}" for path in exposed)
    return ("!" * 78 + "\nWARNING: the worker can read the reference solution of these checkouts of the kit "
            "(no bubblewrap here), so a submission could copy it and score 100:\n" + lines +
            "\nFix: install bubblewrap, or make them unreadable to other users (as root, e.g. "
            "`chmod -R o-rwx CHECKOUT/reference CHECKOUT/autograder CHECKOUT/tests CHECKOUT/.git`: "
            "the worker runs under ids of its own, which own nothing).\n" + "!" * 78)
