"""`run_autograder`: grade one submission and write results.json, always.

    run_autograder                                       Gradescope: /autograder/submission ->
                                                         /autograder/results/results.json
    run_autograder --submission PATH --results FILE      locally; PATH is a backbone.py, a
                   [--figures DIR]                       folder or a zip; --figures also writes
                                                         the PNGs of figures.py to DIR
    run_autograder --batch DIR --out OUT [--jobs N]      a TA's batch run over every submission
                   [--regrade]                           in DIR (see batch.py)

Both modes take the same path: find the file (intake.py), start the worker (sandbox.py), run
the graded tests in autograder/checks with the results plugin (report.py), and write the
document (results.py). If anything in the grader itself fails, a complete results.json that
says so is written instead, so the student never gets Gradescope's bare "failed to execute".
"""

import argparse
import os
import sys
import time
import traceback

import pytest
import torch

from . import intake, report, results, rubric, sandbox
from .checks.student import Student

CHECKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checks")
# SCRATCH1_AUTOGRADER_ROOT stands in for /autograder when a test simulates Gradescope's layout.
GRADESCOPE_ROOT = os.environ.get("SCRATCH1_AUTOGRADER_ROOT", "/autograder")
GRADESCOPE_SUBMISSION = os.path.join(GRADESCOPE_ROOT, "submission")
GRADESCOPE_RESULTS = os.path.join(GRADESCOPE_ROOT, "results", "results.json")


class GradingContext:
    """What the graded tests can reach: the student handle, how the file was found, `figures`,
    where a check leaves raw numbers to draw after grading (see figures.py), and `graded`, the
    outcome of every test graded earlier in this run (rubric test "file::function" -> passed;
    report.ResultsPlugin fills it as each test ends, in the rubric's order), the evidence a
    later check may cite for a likely cause."""

    def __init__(self, found: intake.Intake, worker):
        self.intake = found
        self.worker = worker
        self.student = Student(worker, unavailable=found.problem)
        self.figures = {}
        self.graded = {}


def grade(submission: str, results_path: str, categories=None, figures_dir=None) -> dict:
    start = time.monotonic()
    torch.set_num_threads(1)
    found = intake.locate(submission)
    limits = sandbox.Limits(**{k: v for k, v in rubric.WORKER.items() if k != "import_timeout"})
    worker = None
    if found.file:
        worker = sandbox.Worker(found.file, limits, rubric.WORKER["import_timeout"])
    context = GradingContext(found, worker)
    plugin = report.ResultsPlugin(context, categories)
    try:
        exit_code = pytest.main(
            [CHECKS, "-q", "-p", "no:cacheprovider", "--rootdir", CHECKS, "-c", os.devnull,
             "--timeout-method", "thread", "--no-header",
             # its session-end gc.collect() passes cost seconds with torch loaded
             "-p", "no:unraisableexception"],
            plugins=[plugin],
        )
        if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            raise RuntimeError(f"pytest exited with {exit_code!r}")
        entries = plugin.entries()
        summary = _summary(found, worker, limits, entries)
        document = results.document(entries, summary, time.monotonic() - start)
    except Exception:
        print(traceback.format_exc(), file=sys.stderr)
        document = results.fallback(
            "The grader could not finish because of an internal error (not a problem with your "
            "code). Please tell the course staff; they can see the details in the run's log.",
            time.monotonic() - start)
    finally:
        if worker is not None:
            worker.stop()
            print("---- output of your code (cut) ----\n" + worker.captured_output())
        found.cleanup()
    if context.figures:  # drawn once the worker is gone, so the two never hold memory at once
        document["tests"] = _with_figures(document["tests"], context.figures, figures_dir)
    for error in plugin.internal_errors:
        print(error, file=sys.stderr)
    results.write(document, results_path)
    return document


def _with_figures(tests: list, data: dict, figures_dir) -> list:
    """Draw the figures (best-effort: a failure is logged, never graded): full size into
    figures_dir if given, and small ones embedded in the figures test's output."""
    try:
        from . import figures  # matplotlib: imported only when there is something to draw
        if figures_dir:
            images, _ = figures.draw(data)
            os.makedirs(figures_dir, exist_ok=True)
            for name, png in images.items():
                with open(os.path.join(figures_dir, name), "wb") as file:
                    file.write(png)
        images, problems = figures.draw(data, small=True)
        for problem in problems:
            print(f"figure not drawn: {problem}", file=sys.stderr)
        number = results.numbers()[results.FIGURES_TEST]
        return [results.with_figures(test, images, figures.describe(data)) if test["number"] == number
                else test for test in tests]
    except Exception:
        print(f"figures not drawn:\n{traceback.format_exc()}", file=sys.stderr)
        return tests


def _summary(found: intake.Intake, worker, limits, entries: list) -> str:
    """The top-level output, which students see at once: it sums only the tests they may see
    before the deadline, so it never gives away the result of a hidden one."""
    tests = [t for t in entries if t["visibility"] == "visible"]
    hidden = [t for t in entries if t["visibility"] != "visible"]
    lines = [f"Score of the tests shown now: {sum(t['score'] for t in tests):g} / "
             f"{sum(t['max_score'] for t in tests):g}"]
    if hidden:
        lines.append(f"{len(hidden)} more tests ({sum(t['max_score'] for t in hidden):g} points) "
                     "are shown after the due date.")
    for category in rubric.CATEGORIES:
        mine = [t for t in tests if t["tags"] == [category]]
        if not mine:
            continue
        lines.append(f"  {category:<12} {sum(t['score'] for t in mine):g} / "
                     f"{sum(t['max_score'] for t in mine):g}")
    if found.problem:
        lines.append(f"Submission: {found.problem}")
    lines.extend(f"Submission: {note}" for note in found.notes)
    if worker is not None and worker.restarts:
        lines.append(f"Your code was restarted {worker.restarts} time(s) after a crash or timeout.")
    lines.append("Isolation: " + "; ".join(sandbox.protections(limits)))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="run_autograder", description=__doc__.splitlines()[0])
    parser.add_argument("--submission", help="a backbone.py, a folder or a zip (default: Gradescope's)")
    parser.add_argument("--results", help="where to write results.json (default: Gradescope's)")
    parser.add_argument("--only", metavar="CATEGORY", action="append", choices=rubric.CATEGORIES,
                        help="grade only this category (repeatable); for re-runs and debugging, "
                             "the results then hold only those tests")
    parser.add_argument("--figures", metavar="DIR", help="also write the figures (PNG) to DIR")
    batch_options = parser.add_argument_group("batch grading (a TA's run over a folder; see batch.py)")
    batch_options.add_argument("--batch", metavar="DIR", help="grade every submission in DIR")
    batch_options.add_argument("--out", metavar="DIR", help="results, summary.csv and report/ go here")
    batch_options.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                               help="submissions graded at once (default: the number of cores)")
    batch_options.add_argument("--regrade", action="store_true",
                               help="regrade submissions whose results are already up to date")
    args = parser.parse_args(argv)
    invoked_from = os.environ.get("SCRATCH1_INVOKED_FROM", os.getcwd())  # run_autograder cds away
    if args.batch or args.out:
        if not (args.batch and args.out) or args.submission or args.results:
            parser.error("--batch and --out go together, without --submission/--results")
        from . import batch  # a TA's run only (it imports matplotlib)
        return batch.run(os.path.join(invoked_from, args.batch), os.path.join(invoked_from, args.out),
                         max(args.jobs, 1), args.regrade, args.only)
    if bool(args.submission) != bool(args.results):
        parser.error("--submission and --results go together")
    submission = os.path.join(invoked_from, args.submission) if args.submission else GRADESCOPE_SUBMISSION
    results_path = os.path.join(invoked_from, args.results) if args.results else GRADESCOPE_RESULTS
    figures_dir = os.path.join(invoked_from, args.figures) if args.figures else None
    document = grade(submission, results_path, args.only, figures_dir)
    print(f"score {document['score']:g} / 100 -> {results_path}")
    return 0
