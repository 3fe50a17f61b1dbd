"""Which grading code and rubric produced a result: a fingerprint of the files that decide a grade.

The grader records `fingerprint()` in every results.json (`extra_data.kit`); batch grading
regrades a submission whose result carries another fingerprint (or none), so an edit of the
rubric, a check, the worker or the reference never leaves old scores in a class's summary.
The TA's tools (autograder/ta/: batch dispatch and the HTML report) are left out: they change
no grade, and the report is rebuilt on every run.
"""

import functools
import hashlib
import os

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Besides every Python file under autograder/: what the grader and the worker read.
GRADING_FILES = ("reference/backbone.py", "student/backbone.py", "student/generate_data.py",
                 "requirements.txt")
TA_TOOLS = "autograder/ta"


def grading_files() -> list:
    """The kit-relative paths that decide a grade, sorted."""
    found = [path for path in GRADING_FILES if os.path.exists(os.path.join(KIT, path))]
    for directory, folders, files in os.walk(os.path.join(KIT, "autograder")):
        here = os.path.relpath(directory, KIT)
        folders[:] = [name for name in folders
                      if name != "__pycache__" and os.path.join(here, name) != TA_TOOLS]
        found.extend(os.path.join(here, name) for name in files if name.endswith(".py"))
    return sorted(found)


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """16 hex digits of a SHA-256 over the names and contents of grading_files()."""
    digest = hashlib.sha256()
    for path in grading_files():
        with open(os.path.join(KIT, path), "rb") as file:
            content = file.read()
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]
