"""Whether this Python can grade at all: the packages of requirements.txt, found before any is
imported, so that `run_autograder` (and `--batch`) on a machine without them says what to run
instead of printing a traceback.

Only what every run imports is looked up here (find_spec reads no module, so a working install
pays nothing); an installed torch that fails to import is caught where the grader imports it
(__main__.py) and reported in the same words.
"""

import importlib.util
import os
import sys

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# import name -> its line in requirements.txt (a test checks each is pinned there)
REQUIRED = {"torch": "torch", "numpy": "numpy", "pytest": "pytest",
            "pytest_timeout": "pytest-timeout", "matplotlib": "matplotlib"}


def missing() -> list:
    """The requirements.txt packages this interpreter cannot find, by their pip names."""
    return [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]


def advice(problem: str) -> str:
    """What to do when this interpreter cannot grade, in one message (no traceback)."""
    chosen = " (SCRATCH1_GRADER_PYTHON)" if os.environ.get("SCRATCH1_GRADER_PYTHON") else ""
    return (f"run_autograder: cannot grade with {sys.executable}{chosen}: {problem}.\n"
            f"Run ./setup.sh in {KIT} first: it installs requirements.txt (with the CPU build of "
            "torch) into .venv/, which run_autograder then uses, and checks the install by grading "
            "the reference. Or set SCRATCH1_GRADER_PYTHON to a Python that has requirements.txt "
            "installed.")
