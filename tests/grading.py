"""Helpers of the kit's own tests: grade a file the way a TA would, and read the results."""

import json
import os
import subprocess
import sys

from autograder import results

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(KIT, "reference", "backbone.py")
TEMPLATE = os.path.join(KIT, "student", "backbone.py")


def grade(submission: str, workdir, only=()) -> dict:
    """Run ./run_autograder on `submission` (a path) and return the results document."""
    results = os.path.join(str(workdir), "results.json")
    command = [os.path.join(KIT, "run_autograder"), "--submission", str(submission), "--results", results]
    for category in only:
        command += ["--only", category]
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert os.path.exists(results), f"no results.json written:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    with open(results) as file:
        return json.load(file)


def by_category(document: dict) -> dict:
    """{category: (score, max_score)} summed over the document's tests."""
    return results.by_category(document["tests"])


def lost(document: dict) -> set:
    """The categories in which the document lost points."""
    return {category for category, (score, maximum) in by_category(document).items() if score < maximum}
