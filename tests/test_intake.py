"""Finding backbone.py in whatever a student uploads."""

import os
import zipfile

import pytest

from autograder import intake, results
from grading import REFERENCE, TEMPLATE, grade

SOURCE = "import torch\n"


def _write(root, relative, content=SOURCE):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content) if isinstance(content, str) else path.write_bytes(content)
    return path


def test_a_plain_file_is_graded(tmp_path):
    path = _write(tmp_path, "backbone.py")
    assert intake.locate(str(path)).file == str(path)


def test_nested_folder_and_near_names(tmp_path):
    nested = _write(tmp_path / "a", "src/assignments/scratch-1/backbone.py")
    assert intake.locate(str(tmp_path / "a")).file == str(nested)
    renamed = _write(tmp_path / "b", "backbone (1).py")
    found = intake.locate(str(tmp_path / "b"))
    assert found.file == str(renamed) and "as backbone.py" in found.notes[0]


def test_ambiguous_candidates_are_explained(tmp_path):
    _write(tmp_path, "one/backbone.py")
    _write(tmp_path, "two/backbone.py")
    found = intake.locate(str(tmp_path))
    assert found.file is None and "several backbone.py" in found.problem


def test_the_shallowest_of_several_is_graded_with_a_note(tmp_path):
    top = _write(tmp_path, "backbone.py")
    _write(tmp_path, "old/backbone.py")
    found = intake.locate(str(tmp_path))
    assert found.file == str(top) and "top-most" in found.notes[0]


def test_zip_is_unpacked_and_cleaned_up(tmp_path):
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("repo/backbone.py", SOURCE)
        handle.writestr("../escape.py", SOURCE)
    found = intake.locate(str(archive))
    assert found.file.endswith(os.path.join("repo", "backbone.py"))
    assert open(found.file).read() == SOURCE
    found.cleanup()
    assert not os.path.exists(found.file)
    assert not (tmp_path.parent / "escape.py").exists()


def test_zip_inside_the_submission_folder(tmp_path):
    with zipfile.ZipFile(tmp_path / "upload.zip", "w") as handle:
        handle.writestr("backbone.py", SOURCE)
    found = intake.locate(str(tmp_path))
    assert found.file and found.file.endswith("backbone.py")
    found.cleanup()


def test_missing_notebook_and_oversized(tmp_path):
    _write(tmp_path / "nb", "backbone.ipynb", "{}")
    found = intake.locate(str(tmp_path / "nb"))
    assert found.file is None and "notebook" in found.problem
    _write(tmp_path / "big", "backbone.py", "#" * (intake.MAX_SOURCE_BYTES + 1))
    found = intake.locate(str(tmp_path / "big"))
    assert found.file is None and "MB" in found.problem
    found = intake.locate(str(tmp_path / "nothing-here"))
    assert found.file is None and "does not exist" in found.problem


def test_other_capitalisation_is_graded_with_a_note(tmp_path):
    renamed = _write(tmp_path, "Backbone.py")
    found = intake.locate(str(tmp_path))
    assert found.file == str(renamed) and "graded Backbone.py as backbone.py" in found.notes[0]


def test_a_symbolic_link_is_refused(tmp_path):
    secret = _write(tmp_path / "elsewhere", "solution.py")
    (tmp_path / "upload").mkdir()
    os.symlink(secret, tmp_path / "upload" / "backbone.py")
    found = intake.locate(str(tmp_path / "upload"))
    assert found.file is None and "symbolic link" in found.problem


def test_a_zip_of_too_many_files_is_refused(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for index in range(intake.MAX_ZIP_FILES + 1):
            handle.writestr(f"f{index}", "")
    found = intake.locate(str(archive))
    assert found.file is None and "more than" in found.problem
    found.cleanup()


# End to end: whatever was uploaded, a complete results.json with a specific message, and the
# file graded whenever it can be found unambiguously (the template: interface marks only).

def _template():
    with open(TEMPLATE) as file:
        return file.read()


def _upload_zip(root):
    with zipfile.ZipFile(root / "submission.zip", "w") as handle:
        handle.writestr("scratch-1/backbone.py", _template())
        handle.writestr("__MACOSX/scratch-1/._backbone.py", "\0\0")


UPLOADS = [
    # (name, make the upload under root, graded?, message in the results)
    ("missing", lambda root: _write(root, "model.py"), False,
     "no backbone.py was found in the submission (it holds: model.py)"),
    ("capitalised", lambda root: _write(root, "Backbone.py", _template()), True, "graded Backbone.py as backbone.py"),
    ("browser_copy", lambda root: _write(root, "backbone (1).py", _template()), True,
     "graded backbone (1).py as backbone.py"),
    ("nested", lambda root: _write(root, "src/assignments/scratch-1/backbone.py", _template()), True,
     "graded src/assignments/scratch-1/backbone.py"),
    ("zip", _upload_zip, True, "unpacked submission.zip"),
    ("several", lambda root: [_write(root, f"{name}/backbone.py", _template()) for name in ("v1", "v2")], False,
     "several backbone.py files were found at the same depth (v1/backbone.py, v2/backbone.py)"),
    ("empty", lambda root: _write(root, "backbone.py", ""), True, "backbone.py is empty"),
    ("not_utf8", lambda root: _write(root, "backbone.py", b'NAME = "caf\xe9"\n' + _template().encode()), True,
     "backbone.py is not UTF-8 text (line 1: (unicode error) 'utf-8' codec can't decode byte 0xe9"),
    ("50MB", lambda root: _write(root, "backbone.py", _template() + "#" * (50 * 2**20)), False,
     "backbone.py is 50.0 MB; a backbone.py larger than 1 MB is not graded"),
    ("notebook", lambda root: _write(root, "scratch1.ipynb", "{}"), False,
     "a notebook cannot be graded: export your code to a file named backbone.py"),
    ("symlink", lambda root: os.symlink(REFERENCE, root / "backbone.py"), False,
     "backbone.py is a symbolic link or a special file"),
]


@pytest.mark.parametrize("name, make, graded, message", UPLOADS, ids=[u[0] for u in UPLOADS])
def test_every_upload_gets_complete_results_with_a_specific_message(tmp_path, name, make, graded, message):
    upload = tmp_path / "upload"
    upload.mkdir()
    make(upload)
    document = grade(upload, tmp_path)
    assert results.problems(document) == []
    assert message in "\n".join([document["output"]] + [t["output"] for t in document["tests"]])
    found = document["tests"][0]
    assert found["status"] == ("passed" if graded else "failed"), found["output"]
    if graded and name not in ("empty", "not_utf8"):
        assert document["score"] == sum(t["max_score"] for t in document["tests"] if t["tags"] == ["interface"])
    if not graded:
        assert document["score"] == 0
        assert all(t["output"].startswith("not graded") for t in document["tests"][1:])
