"""Audit the kit's own tests: grade known-correct code and a sample of mutants N times, and report
per test how close correct code comes to its threshold and what differs from run to run
(autograder/ta/audit.py says what is measured).

    .venv/bin/python scripts/audit.py                       the full audit: the reference, every
                                                            correct alternative of tests/variants.py
                                                            and 8 mutants, 3 runs each
    .venv/bin/python scripts/audit.py --quick               CI's sample: the reference and one
                                                            alternative, rmsnorm only, 2 runs
    .venv/bin/python scripts/audit.py --results graded/history/RUN --results graded/results \\
                                      [--correct NAME ...]  no grading: audit earlier gradings of the
                                                            same submissions (e.g. a batch's runs)

Options: --runs N, --sample K (mutants, a seeded choice), --only CATEGORY (repeatable), --jobs J,
--out DIR (default audit/). Writes DIR/audit.csv and DIR/audit.html and prints the table; exits
with status 1 when a correct submission failed a test or a test's outcome differed between runs.
"""

import argparse
import json
import os
import random
import sys
import time

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [KIT, os.path.join(KIT, "tests")]

from autograder.ta import audit, batch, html_report  # noqa: E402
import variants  # noqa: E402  (tests/variants.py: the kit's mutants and correct alternatives)

REFERENCE = os.path.join(KIT, "reference", "backbone.py")
CORRECT = [v for v in variants.ALTERNATIVES + variants.API_VARIANTS if not v.loses]
QUICK = dict(runs=2, alternatives=["rmsnorm_float32_upcast_rsqrt"], sample=0, only=["rmsnorm"])


def write_submissions(folder: str, alternatives: list, mutants: list) -> set:
    """reference.py, the alternatives and the mutants as files in `folder`; the correct names."""
    os.makedirs(folder, exist_ok=True)
    with open(REFERENCE) as file:
        sources = {"reference": file.read()}
    sources.update((v.name, v.source()) for v in alternatives + mutants)
    for name, source in sources.items():
        with open(os.path.join(folder, name + ".py"), "w") as file:
            file.write(source)
    return {"reference", *(v.name for v in alternatives)}


def grade_runs(folder: str, out: str, runs: int, only, jobs: int) -> list:
    """Grade every submission in `folder` `runs` times (OUT/run<i>/); [{name: results.json}]."""
    documents = []
    for index in range(1, runs + 1):
        run_out = os.path.join(out, f"run{index}")
        for sub in ("results", "logs"):
            os.makedirs(os.path.join(run_out, sub), exist_ok=True)
        submissions = batch.find(folder, run_out)
        start = time.monotonic()
        failed = [s.name for s in batch.local_pool(submissions, run_out, only, jobs) if s.error]
        print(f"run {index}: {len(submissions)} graded in {time.monotonic() - start:.0f} s"
              + (f"; not graded: {', '.join(failed)}" if failed else ""), file=sys.stderr)
        documents.append(read_results(os.path.join(run_out, "results")))
    return documents


def read_results(folder: str) -> dict:
    """{name: results.json} of a folder of <name>.json."""
    found = {}
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(".json"):
            with open(os.path.join(folder, entry)) as file:
                found[entry[:-5]] = json.load(file)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=8, help="mutants graded besides the correct code")
    parser.add_argument("--only", action="append", metavar="CATEGORY")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="audit")
    parser.add_argument("--quick", action="store_true", help="CI's small sample")
    parser.add_argument("--results", action="append", metavar="DIR",
                        help="audit these gradings ({name}.json each) instead of grading")
    parser.add_argument("--correct", action="append", default=[], metavar="NAME",
                        help="with --results: a submission known to be correct (besides the reference "
                             "and the kit's alternatives, recognised by name)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    if args.results:
        runs = [read_results(folder) for folder in args.results]
        graded = {name for documents in runs for name in documents}
        correct = {"reference", *(v.name for v in CORRECT), *args.correct} & graded
    else:
        settings = dict(runs=args.runs, alternatives=[v.name for v in CORRECT], sample=args.sample,
                        only=args.only)
        if args.quick:
            settings.update(QUICK)
        alternatives = [v for v in CORRECT if v.name in settings["alternatives"]]
        mutants = random.Random(0).sample(variants.MUTANTS, min(settings["sample"], len(variants.MUTANTS)))
        folder = os.path.join(out, "submissions")
        correct = write_submissions(folder, alternatives, mutants)
        runs = grade_runs(folder, out, settings["runs"], settings["only"], max(args.jobs, 1))
    found = audit.audit(runs, correct)
    audit.write_csv(found, os.path.join(out, "audit.csv"))
    html_report.write_page(os.path.join(out, "audit.html"), "Audit of the kit's tests",
                           audit.page(found, correct), script=True)
    print(audit.table(found))
    print(f"audit: {os.path.join(out, 'audit.csv')}, {os.path.join(out, 'audit.html')}", file=sys.stderr)
    return 1 if any(a.correct_failed or a.unstable for a in found) else 0


if __name__ == "__main__":
    sys.exit(main())
