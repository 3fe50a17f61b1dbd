"""Finding backbone.py in whatever a student uploads."""

import os
import zipfile

from autograder import intake

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
