"""Find the student's backbone.py in whatever was uploaded: a file, a folder or a zip.

Gradescope puts the upload in /autograder/submission; students upload `backbone.py`, but also
`Backbone.py`, `backbone (1).py`, a zip of their repository, or a notebook. The intake picks the
file when the choice is unambiguous and says what it picked; otherwise it explains what it found.
"""

import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field

MAX_SOURCE_BYTES = 1 * 2**20
MAX_ZIP_BYTES = 200 * 2**20
MAX_ZIP_FILES = 10_000
IGNORED_DIRECTORIES = {"__pycache__", ".git", ".venv", "venv", "node_modules", "__MACOSX",
                       ".ipynb_checkpoints"}
NEAR_NAME = re.compile(r"^backbone[\s_\-()0-9a-z]*\.py$", re.IGNORECASE)


@dataclass
class Intake:
    file: str = None  # the backbone.py to grade, or None
    problem: str = ""  # why no file could be chosen
    notes: list = field(default_factory=list)
    temporary: str = None

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.temporary, ignore_errors=True)


def _candidates(root: str):
    for directory, directories, files in os.walk(root):
        directories[:] = sorted(d for d in directories if d not in IGNORED_DIRECTORIES)
        for name in sorted(files):
            yield os.path.join(directory, name)


def _extract(zip_path: str, intake: Intake) -> str:
    intake.temporary = tempfile.mkdtemp(prefix="scratch1-intake-")
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            raise ValueError(f"the zip unpacks to more than {MAX_ZIP_BYTES // 2**20} MB")
        if len(members) > MAX_ZIP_FILES:
            raise ValueError(f"the zip holds more than {MAX_ZIP_FILES} files")
        for member in members:
            target = os.path.realpath(os.path.join(intake.temporary, member.filename))
            if not target.startswith(os.path.realpath(intake.temporary) + os.sep):
                continue  # a path that escapes the folder ("../x") is skipped
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as destination:
                shutil.copyfileobj(source, destination)
    intake.notes.append(f"unpacked {os.path.basename(zip_path)}")
    return intake.temporary


def _choose(root: str, intake: Intake) -> None:
    files = list(_candidates(root))
    relative = {path: os.path.relpath(path, root) for path in files}
    exact = [p for p in files if os.path.basename(p) == "backbone.py"]
    near = [p for p in files if NEAR_NAME.match(os.path.basename(p)) and p not in exact]
    zips = [p for p in files if p.lower().endswith(".zip")]
    chosen = None
    if exact:
        depth = min(relative[p].count(os.sep) for p in exact)
        shallowest = [p for p in exact if relative[p].count(os.sep) == depth]
        if len(shallowest) > 1:
            intake.problem = ("several backbone.py files were found at the same depth ("
                              + ", ".join(relative[p] for p in shallowest)
                              + "): upload only the one to grade")
            return
        chosen = shallowest[0]
        if len(exact) > 1:
            intake.notes.append(f"several backbone.py files found; graded the top-most one, "
                                f"{relative[chosen]}")
    elif len(near) == 1:
        chosen = near[0]
        intake.notes.append(f"no file is named backbone.py; graded {relative[chosen]} as backbone.py")
    elif len(near) > 1:
        intake.problem = ("no file is named backbone.py, and several could be it ("
                          + ", ".join(relative[p] for p in near) + "): rename the one to grade "
                          "to backbone.py")
        return
    elif len(zips) == 1 and intake.temporary is None:
        _choose(_extract(zips[0], intake), intake)
        return
    else:
        notebooks = [relative[p] for p in files if p.lower().endswith(".ipynb")]
        listing = ", ".join(relative[p] for p in files[:10]) or "nothing"
        intake.problem = "no backbone.py was found in the submission (it holds: " + listing + ")"
        if notebooks:
            intake.problem += ("; a notebook cannot be graded: export your code to a file named "
                               "backbone.py (File > Download as > Python) and upload that")
        return
    if relative[chosen] != "backbone.py":
        intake.notes.append(f"graded {relative[chosen]}")
    _accept(chosen, intake)


def _accept(path: str, intake: Intake) -> None:
    if not stat.S_ISREG(os.lstat(path).st_mode):
        # A symbolic link in a student's repository could point at the grader's own files.
        intake.problem = (f"{os.path.basename(path)} is a symbolic link or a special file, not a "
                          "regular file: upload the file itself")
        return
    size = os.path.getsize(path)
    if size > MAX_SOURCE_BYTES:
        intake.problem = (f"{os.path.basename(path)} is {size / 2**20:.1f} MB; a backbone.py larger "
                          f"than {MAX_SOURCE_BYTES // 2**20} MB is not graded")
        return
    intake.file = path


def locate(path: str) -> Intake:
    """Find the file to grade under `path` (a .py file, a folder or a .zip)."""
    intake = Intake()
    try:
        if os.path.isdir(path):
            _choose(path, intake)
        elif zipfile.is_zipfile(path):
            _choose(_extract(path, intake), intake)
        elif os.path.isfile(path):
            if path.lower().endswith(".ipynb"):
                intake.problem = ("a notebook cannot be graded: export your code to a file named "
                                  "backbone.py and upload that")
            else:
                _accept(os.path.realpath(path), intake)  # a path given by the TA may be a link
        else:
            intake.problem = f"the submission {path} does not exist"
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        intake.problem = f"the submission could not be read: {error}"
    return intake
