"""`run_autograder`: grade one submission and write results.json, always.

    run_autograder                                       Gradescope: /autograder/submission ->
                                                         /autograder/results/results.json
    run_autograder --submission PATH --results FILE      locally; PATH is a backbone.py, a
                   [--figures DIR] [--seed HEX]          folder or a zip; --figures also writes
                                                         the PNGs of figures.py to DIR; --seed
                                                         repeats a grading (grading_seed.py)
    run_autograder --batch DIR --out OUT [--jobs N]      a TA's batch run over every submission
                   [--regrade] [--drop TEST]             in DIR (see ta/batch.py; the ledger,
                   [--never-lower]                       drops and overrides: ta/ledger.py)
                   [--engine ray [--ray-address A]]      ... graded on a Ray cluster (ta/batch_ray.py)

Both modes take the same path: find the file (intake.py), start the worker (sandbox/), run
the graded tests in autograder/checks with the results plugin (grading_plugin.py), and write the
document (results.py). If the grader itself fails (its worker cannot start or import torch, a
crash of the grader, a check that raises), a results.json that says "internal error of the
grader" is still written (results.internal_error), so the student never gets Gradescope's bare
"failed to execute", and run_autograder exits with status 1 so that the TA's tools notice.

Without arguments it grades Gradescope's /autograder/submission, but only inside a Gradescope
container (this kit installed as /autograder/source, a /autograder/submission folder); anywhere
else it prints the local usage and exits with status 2, touching nothing.
"""

import argparse
import os
import platform
import sys
import threading
import time
import traceback

import pytest
import torch

from . import grading_plugin, grading_seed, intake, kit_version, results, rubric
from .checks.submission import Submission
from .sandbox import protections
from .sandbox.client import Worker
from .sandbox.limits import Limits

CHECKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checks")
# SCRATCH1_AUTOGRADER_ROOT stands in for /autograder when a test simulates Gradescope's layout.
GRADESCOPE_ROOT = os.environ.get("SCRATCH1_AUTOGRADER_ROOT", "/autograder")
GRADESCOPE_SUBMISSION = os.path.join(GRADESCOPE_ROOT, "submission")
GRADESCOPE_RESULTS = os.path.join(GRADESCOPE_ROOT, "results", "results.json")
KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GradingContext:
    """What the graded tests can reach: the submission handle, how the file was found, `figures`,
    where a check leaves raw numbers to draw after grading (see figures.py), and `graded`, the
    outcome of every test graded earlier in this run (rubric test "file::function" -> passed;
    grading_plugin.ResultsPlugin fills it as each test ends, in the rubric's order), the evidence a
    later check may cite for a likely cause. `seed` is the grading's secret (grading_seed.py):
    the checks derive every input the submission sees from it, and never send it."""

    def __init__(self, found: intake.Intake, worker, seed: int):
        self.intake = found
        self.worker = worker
        self.seed = seed
        self.submission = Submission(worker, unavailable=found.problem)
        self.figures = {}
        self.graded = {}


def grade(submission: str, results_path: str, categories=None, figures_dir=None, seed=None) -> dict:
    """`seed`: the grading's secret to reuse (int), else a fresh one (grading_seed.draw)."""
    start = time.monotonic()
    secret = grading_seed.draw() if seed is None else seed
    torch.set_num_threads(1)
    found = intake.locate(submission)
    submitted = results.file_sha256(found.file) if found.file else ""  # read before any grading
    limits = Limits.sized(rubric.WORKER)
    worker = None
    if found.file:
        worker = Worker(found.file, limits, rubric.WORKER.import_timeout,
                        rubric.WORKER.start_timeout)
    context = GradingContext(found, worker, secret)
    plugin = grading_plugin.ResultsPlugin(context, categories)
    watchdog = threading.Timer(WRITE_BY_SECONDS, _out_of_time, (results_path, start, worker))
    watchdog.daemon = True
    watchdog.start()
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
        if worker is not None and worker.start_error is not None:
            document = results.internal_error(
                str(worker.start_error), time.monotonic() - start,
                "Isolation (as set up for the worker): "
                + "; ".join(protections.describe(limits)))
        else:
            entries = plugin.entries()
            summary = _summary(found, worker, entries, plugin.internal_errors)
            document = results.document(entries, summary, time.monotonic() - start)
            if plugin.internal_errors:  # a check raised: its test says so, the run is flagged
                document.setdefault("extra_data", {})["internal_error"] = (
                    f"{len({name for name, _ in plugin.internal_errors})} check(s) failed inside "
                    "the grader; see the run's log")
        document.setdefault("extra_data", {}).update(_environment(worker, limits))
        _claimed_faults(document, context.submission)
    except Exception as error:
        print(traceback.format_exc(), file=sys.stderr)
        document = results.internal_error(f"the grader crashed ({type(error).__name__}: {error}); "
                                          "the traceback is in the run's log",
                                          time.monotonic() - start)
    finally:
        watchdog.cancel()
        if worker is not None:
            worker.close()
            printed = worker.captured_output().strip("\n")
            if printed.strip():
                print("---- what your code printed ----\n" + printed)
        found.cleanup()
    if context.figures:  # drawn once the worker is gone, so the two never hold memory at once
        document["tests"] = _with_figures(document["tests"], context.figures, figures_dir)
    for name, details in plugin.internal_errors:
        print(f"---- internal error of the grader in '{name}' ----\n{details}")
    document.setdefault("extra_data", {})["kit"] = kit_version.fingerprint()
    document["extra_data"][results.SUBMISSION_HASH] = submitted
    document["extra_data"]["grading_seed"] = grading_seed.text(secret)
    return results.write(document, results_path)


# Gradescope stops a run at 10 minutes and then records 0 with no feedback. The worker's own
# time is bounded well below (rubric.WORKER.total_seconds) and so is the grader's reading of each
# reply (worker/protocol.py), so a grading still running here is stuck in the grader itself.
WRITE_BY_SECONDS = 540.0


def _out_of_time(results_path: str, start: float, worker) -> None:
    """The watchdog's last resort (another thread): write an internal-error results.json, stop
    the worker and end the process (status 1) while Gradescope still reads what it wrote."""
    try:
        cause = (f"the grading did not finish within {WRITE_BY_SECONDS:g} s (Gradescope stops at "
                 "600 s), so it was stopped; the run's log shows where the grader was")
        print(f"INTERNAL ERROR of the grader: {cause}", file=sys.stderr)
        results.write(results.internal_error(cause, time.monotonic() - start), results_path)
        if worker is not None:
            worker.stop()
    finally:
        os._exit(1)


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


def _summary(found: intake.Intake, worker, entries: list, internal_errors: list) -> str:
    """The top-level output, which students see at once, in words a student knows. Gradescope
    records the total of every test, but shows it (with the tests hidden until the due date)
    only after that date; so this sums the tests shown now, never giving away a hidden result,
    and says how that sum relates to the total. It names the checks that failed by the grader's
    own error (internal_errors: (test name, details)). The isolation and the worker's versions
    are for the TA: _environment puts them in extra_data."""
    tests = [t for t in entries if t["visibility"] == "visible"]
    hidden = [t for t in entries if t["visibility"] != "visible"]
    regular = [t for t in tests if t["tags"][0] not in rubric.BONUS_CATEGORIES]
    lines = [f"Score of the tests shown now: {sum(t['score'] for t in regular):g} / "
             f"{sum(t['max_score'] for t in regular):g}"]
    bonus = [t for t in tests if t["tags"][0] in rubric.BONUS_CATEGORIES and t["max_score"]]
    if bonus:
        lines.append(f"Bonus points (above the 100): {sum(t['score'] for t in bonus):g} / "
                     f"{sum(t['max_score'] for t in bonus):g}")
    if hidden:
        total = sum(t["max_score"] for t in entries if t["tags"][0] not in rubric.BONUS_CATEGORIES)
        points = sum(t["max_score"] for t in hidden)
        more = (f"1 more test ({points:g} points) is" if len(hidden) == 1
                else f"{len(hidden)} more tests ({points:g} points) are")
        lines.append(f"{more} shown after the due date. Your score, the one Gradescope records, "
                     f"is the total of every test, out of {total:g}; Gradescope shows it after "
                     "the due date too.")
    for category, (score, maximum) in results.by_category(tests).items():
        if not maximum:  # information only (mastery)
            attempted = [t for t in tests if t["tags"] == [category]
                         and t["extra_data"].get("attempted", True)]
            lines.append(f"  {category:<12} " + (
                f"{sum(t['status'] == 'passed' for t in attempted)} of {len(attempted)} checks "
                "passed (information only, no points)" if attempted
                else "not attempted (optional, no points)"))
            continue
        lines.append(f"  {category:<12} {score:g} / {maximum:g}")
    failed_checks = {name for name, _details in internal_errors}
    if failed_checks:
        shown = [t["name"] for t in tests if t["name"] in failed_checks]
        later = len(failed_checks) - len(shown)
        lines.append(f"INTERNAL ERROR of the grader in {len(failed_checks)} test(s), not a fault of "
                     f"your code: {'; '.join(shown + [f'{later} shown after the due date'] * bool(later))}. "
                     "The course staff see the details in the run's log.")
    if found.problem:
        lines.append(f"Submission: {found.problem}")
    lines.extend(f"Submission: {note}" for note in found.notes)
    if worker is not None and worker.restarts:
        lines.append(f"Your code was restarted {worker.restarts} time(s) after a crash, a timeout or running out of memory.")
    if worker is not None and worker.ready:
        lines.append(f"Your code ran with Python {worker.ready.get('python')} and torch "
                     f"{worker.ready.get('torch')}, in a separate process with time and memory limits.")
    return "\n".join(lines)


def _claimed_faults(document: dict, submission: Submission) -> None:
    """The kit faults the worker claimed (errors it flagged "internal"), for the TA: in
    extra_data and the run's log. Each failed its check in the submission's name
    (checks/submission.py); a real one is a kit bug the self-test catches on the reference."""
    if submission.claimed_count:
        document.setdefault("extra_data", {})["claimed_kit_faults"] = {
            "count": submission.claimed_count, "first": submission.claimed_faults}
        print(f"---- the worker reported {submission.claimed_count} fault(s) of the kit's own "
              "worker code; counted as the submission's failures (the submission's code can "
              "forge such reports), first ones: ----")
        for claim in submission.claimed_faults[:5]:
            print(f"{claim['op']}: {claim['error'].get('kind')}: {claim['error'].get('message', '')[:500]}")


def _environment(worker, limits) -> dict:
    """For the TA, in results.json's extra_data: every isolation protection active (checked on
    this machine) and what the worker's preflight reported (its Python and torch)."""
    environment = {"isolation": protections.describe(limits, worker.confinement if worker else None)}
    if worker is not None and worker.ready:
        environment["worker"] = {"python": worker.ready.get("python"), "torch": worker.ready.get("torch"),
                                 "grader_python": platform.python_version()}
    return environment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="run_autograder", description=__doc__.splitlines()[0])
    parser.add_argument("--submission", help="a backbone.py, a folder or a zip (default: Gradescope's)")
    parser.add_argument("--results", help="where to write results.json (default: Gradescope's)")
    parser.add_argument("--only", metavar="CATEGORY", action="append", choices=rubric.CATEGORIES,
                        help="grade only this category (repeatable); for re-runs and debugging, "
                             "the results then hold only those tests")
    parser.add_argument("--figures", metavar="DIR", help="also write the figures (PNG) to DIR")
    parser.add_argument("--seed", metavar="HEX", default="",
                        help="repeat a grading: its extra_data.grading_seed (default: a fresh "
                             f"secret, or ${grading_seed.ENVIRONMENT})")
    batch_options = parser.add_argument_group("batch grading (a TA's run over a folder; see ta/batch.py)")
    batch_options.add_argument("--batch", metavar="DIR", help="grade every submission in DIR")
    batch_options.add_argument("--out", metavar="DIR", help="results, summary.csv and report/ go here")
    batch_options.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                               help="submissions graded at once (default: the number of cores); with "
                                    "--engine ray, the CPUs of the Ray instance it starts (a "
                                    "cluster's nodes bring their own)")
    batch_options.add_argument("--regrade", action="store_true",
                               help="regrade submissions whose results are already up to date")
    batch_options.add_argument("--drop", metavar="TEST", action="append", default=[],
                               help="leave this test (number or name) out of every recorded total "
                                    "(repeatable; recorded in the ledger, see ta/ledger.py)")
    batch_options.add_argument("--never-lower", action="store_true",
                               help="where a regrade lowers a recorded grade, keep the higher one "
                                    "(the ledger records both)")
    batch_options.add_argument("--engine", choices=("local", "ray"), default="local",
                               help="local: a process pool on this machine (default); ray: one Ray "
                                    "task per submission (pip install -r requirements-ray.txt)")
    batch_options.add_argument("--ray-address", metavar="HOST:PORT",
                               help="--engine ray: join this running cluster (ray start --head) "
                                    "instead of starting a local Ray instance")
    args = parser.parse_args(argv)
    invoked_from = os.environ.get("SCRATCH1_INVOKED_FROM", os.getcwd())  # run_autograder cds away
    if args.batch or args.out:
        if not (args.batch and args.out) or args.submission or args.results:
            parser.error("--batch and --out go together, without --submission/--results")
        if args.ray_address and args.engine != "ray":
            parser.error("--ray-address goes with --engine ray")
        from .ta import batch  # a TA's run only (it imports matplotlib)
        engine = None
        if args.engine == "ray":
            from .ta import batch_ray
            engine = batch_ray.engine(args.ray_address)  # says how to install Ray if it is missing
        return batch.run(os.path.join(invoked_from, args.batch), os.path.join(invoked_from, args.out),
                         max(args.jobs, 1), args.regrade, args.only, engine, args.drop, args.never_lower)
    if bool(args.submission) != bool(args.results):
        parser.error("--submission and --results go together")
    if not args.submission and not in_gradescope():
        print(NOT_GRADESCOPE.format(kit=KIT, root=GRADESCOPE_ROOT), file=sys.stderr)
        return 2
    submission = os.path.join(invoked_from, args.submission) if args.submission else GRADESCOPE_SUBMISSION
    results_path = os.path.join(invoked_from, args.results) if args.results else GRADESCOPE_RESULTS
    figures_dir = os.path.join(invoked_from, args.figures) if args.figures else None
    try:
        seed = grading_seed.draw(args.seed)
    except ValueError as error:
        parser.error(str(error))
    document = grade(submission, results_path, args.only, figures_dir, seed)
    cause = results.internal_error_of(document)
    if cause:
        print(f"INTERNAL ERROR of the grader (exit status 1): {cause}", file=sys.stderr)
    print(f"score {document['score']:g} / 100 -> {results_path}")
    return 1 if cause else 0


NOT_GRADESCOPE = """\
run_autograder: without arguments it grades Gradescope's submission, and only inside a Gradescope
container (this kit installed as {root}/source, with a {root}/submission folder). This kit is at
{kit}, so nothing was graded and nothing was changed. To grade here:
  ./run_autograder --submission PATH --results FILE     one backbone.py, folder or zip
  ./run_autograder --batch DIR --out DIR                every submission in DIR
(./run_autograder --help and README.md give the details)"""


def in_gradescope() -> bool:
    """Whether this is a Gradescope container: the kit is /autograder/source and a submission
    folder exists (SCRATCH1_AUTOGRADER_ROOT stands in for /autograder in the kit's tests)."""
    source = os.path.join(GRADESCOPE_ROOT, "source")
    return (os.path.realpath(KIT) == os.path.realpath(source)
            and os.path.isdir(GRADESCOPE_SUBMISSION))
