"""The install's self-test (`python -m autograder.selftest`, the last step of setup.sh).

Two checks, so that an environment problem is an install error instead of a class of wrong
grades: torch must be the CPU build (a CUDA build is several GB and its import alone does not
fit the worker's memory limit), and the reference must score 100 when graded exactly as a
submission is, through `run_autograder` and the real sandbox (worker user, namespaces, limits).
Exit status 0 when both hold; otherwise 1, with what failed and what to do on stderr.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from . import results

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(KIT, "reference", "backbone.py")


def torch_problem() -> str:
    """Why the installed torch is not the one the kit grades with, or ""."""
    try:
        import torch
    except Exception as error:  # an unimportable torch of any kind
        return f"torch cannot be imported ({type(error).__name__}: {error})"
    if torch.version.cuda is not None:
        return (f"torch {torch.__version__} is a CUDA build (CUDA {torch.version.cuda}); the kit "
                "needs the CPU build pinned in requirements.txt, which setup.sh installs from the "
                "PyTorch CPU index. Remove this torch (locally: rm -rf .venv) and run ./setup.sh again")
    return ""


def grade_reference(workdir: str) -> tuple:
    """(results document or None, the grader's output, seconds) for the reference."""
    results_path = os.path.join(workdir, "results.json")
    start = time.monotonic()
    # through bash, not the script's exec bit: Gradescope may unpack the zip without file modes
    completed = subprocess.run(["bash", os.path.join(KIT, "run_autograder"), "--submission", REFERENCE,
                                "--results", results_path], capture_output=True, text=True,
                               cwd=workdir, timeout=1800)
    seconds = time.monotonic() - start
    document = None
    if os.path.exists(results_path):
        with open(results_path) as file:
            document = json.load(file)
    return document, completed.stdout + completed.stderr, seconds


def main() -> int:
    problem = torch_problem()
    if problem:
        print(f"self-test: FAILED: {problem}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="scratch1-selftest-") as workdir:
        document, output, seconds = grade_reference(workdir)
    if document is None:
        print(f"self-test: FAILED: grading the reference wrote no results.json "
              f"({seconds:.0f} s). The grader's output:\n{output[-4000:]}", file=sys.stderr)
        return 1
    cause = document.get("extra_data", {}).get("internal_error")
    # What proves the kit's own worker code: on the reference, no fault of it may even be claimed.
    claimed = document.get("extra_data", {}).get("claimed_kit_faults")
    if claimed:
        cause = f"the worker reported faults of the kit's own worker code: {claimed}"
    failed = [test for test in document["tests"]
              if test["status"] != "passed" and results.attempted(test)]
    if cause or failed or document["score"] != 100:
        lines = [f"self-test: FAILED: the reference solution scored {document['score']:g} / 100 "
                 f"({seconds:.0f} s); this machine would grade students wrongly, so do not grade "
                 "on it until this is fixed."]
        if cause:
            lines.append(f"  internal error of the grader: {cause}")
        lines.extend(f"  {test['name']}: {test['output'][:300]}" for test in failed)
        lines.append(f"The grader's output (end):\n{output[-3000:]}")
        print("\n".join(lines), file=sys.stderr)
        return 1
    print(f"self-test: the reference scores 100 / 100 in the real sandbox ({seconds:.0f} s)")
    extra = document.get("extra_data", {})
    print("self-test: isolation: " + "; ".join(extra.get("isolation", [])))
    worker = extra.get("worker", {})
    print(f"self-test: the worker ran Python {worker.get('python')} and torch {worker.get('torch')} "
          f"under its limits (the grader runs Python {worker.get('grader_python')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
