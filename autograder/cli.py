"""`run_autograder`: grade one submission and write results.json, always.

    run_autograder                                       Gradescope: /autograder/submission ->
                                                         /autograder/results/results.json
    run_autograder --submission PATH --results FILE      locally; PATH is a backbone.py, a
                                                         folder or a zip

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
    """What the graded tests can reach: the student handle and how the file was found."""

    def __init__(self, found: intake.Intake, worker):
        self.intake = found
        self.worker = worker
        self.student = Student(worker, unavailable=found.problem)


def grade(submission: str, results_path: str, categories=None) -> dict:
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
             "--timeout-method", "thread", "--no-header"],
            plugins=[plugin],
        )
        if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            raise RuntimeError(f"pytest exited with {exit_code!r}")
        summary = _summary(found, worker, limits, plugin)
        document = results.document(plugin.entries(), summary, time.monotonic() - start)
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
    for error in plugin.internal_errors:
        print(error, file=sys.stderr)
    results.write(document, results_path)
    return document


def _summary(found: intake.Intake, worker, limits, plugin) -> str:
    tests = plugin.entries()
    lines = [f"Score: {sum(t['score'] for t in tests):g} / {sum(t['max_score'] for t in tests):g}"]
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
    args = parser.parse_args(argv)
    if bool(args.submission) != bool(args.results):
        parser.error("--submission and --results go together")
    invoked_from = os.environ.get("SCRATCH1_INVOKED_FROM", os.getcwd())  # run_autograder cds away
    submission = os.path.join(invoked_from, args.submission) if args.submission else GRADESCOPE_SUBMISSION
    results_path = os.path.join(invoked_from, args.results) if args.results else GRADESCOPE_RESULTS
    document = grade(submission, results_path, args.only)
    print(f"score {document['score']:g} / 100 -> {results_path}")
    return 0
