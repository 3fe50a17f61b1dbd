"""Python 3.10, Gradescope's version (issue 10): where a 3.10 interpreter is on this machine,
tests/python310_probe.py runs under it, without torch or numpy (the CPU build of torch for 3.10
comes only from the PyTorch CPU index, which CI may not reach).

Proven on 3.10: every Python file of the kit compiles (no 3.11-only syntax); the rubric, the
results documents (graded and internal error), the intake of a zip, the kit fingerprint, the
worker's import stubs and the template generator import and work. NOT proven on 3.10: anything
that imports torch or numpy (the grader's checks, cli, sandbox, the worker's ops, the dataset
generator), nor 3.11-only standard-library calls in those modules; those run under the
interpreter of .venv. setup.sh's self-test proves the rest on Gradescope itself (3.10), since
it grades the reference there at image build.
"""

import glob
import os
import shutil
import subprocess

import pytest

from autograder import kit_version
from grading import KIT


def python310():
    """A Python 3.10 on this machine: $SCRATCH1_PYTHON310, python3.10 on PATH, pyenv's, the
    system's; None if there is none."""
    candidates = [os.environ.get("SCRATCH1_PYTHON310"), shutil.which("python3.10"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10"))),
                  "/usr/bin/python3.10"]
    for candidate in filter(None, candidates):
        try:
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if probe.stdout.strip() == "(3, 10)":
            return candidate
    return None


PYTHON310 = python310()


@pytest.mark.skipif(PYTHON310 is None, reason="no Python 3.10 on this machine")
def test_the_torch_free_kit_runs_on_python_310():
    completed = subprocess.run([PYTHON310, "-I", "-B", os.path.join(KIT, "tests", "python310_probe.py"), KIT],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    assert "template regenerated identically" in completed.stdout, completed.stdout
    assert f"kit fingerprint {kit_version.fingerprint()}" in completed.stdout  # same files, same hash
