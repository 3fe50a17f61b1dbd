"""Packaging: `python scripts/package.py` builds the two zips with what they must hold and nothing
else, the student bundle never carries the solution, the autograder zip grades a submission in a
simulated Gradescope layout, and the bundle's public tests tell the template from a solution."""

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest

from autograder import results
from grading import KIT, REFERENCE, TEMPLATE

sys.path.insert(0, os.path.join(KIT, "scripts"))
import package  # noqa: E402

STUDENT_TOP = {"backbone.py", "generate_data.py", "visualize.py", "README.md", "tests", ".gitignore",
               "requirements.txt"}
FOLDER = package.STUDENT_FOLDER
NEVER_IN_AUTOGRADER = ("tests", "bench", "dist", "scripts", ".venv", ".git", ".ci")


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, os.path.join(KIT, "scripts", "package.py"), "--out", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out / "autograder.zip", out / "student.zip"


def _unzip(archive_path, target):
    """Extract with the modes stored in the zip, as Gradescope's unzip does."""
    with zipfile.ZipFile(archive_path) as archive:
        archive.extractall(target)
        for info in archive.infolist():
            os.chmod(os.path.join(target, info.filename), (info.external_attr >> 16) & 0o777)


def _modes(archive_path):
    with zipfile.ZipFile(archive_path) as archive:
        return {info.filename: info.external_attr >> 16 for info in archive.infolist()}


def test_autograder_zip_holds_the_grader_and_nothing_else(zips):
    modes = _modes(zips[0])
    for name in ("setup.sh", "run_autograder"):
        assert name in modes, f"{name} must be at the zip root"
        assert modes[name] & stat.S_IXUSR, f"{name} is not executable in the zip"
    for name in ("requirements.txt", "autograder/cli.py", "autograder/rubric.py",
                 "autograder/worker/__main__.py", "autograder/checks/conftest.py",
                 "reference/backbone.py", "student/generate_data.py", "student/backbone.py"):
        assert name in modes, f"{name} missing from autograder.zip"
    stray = [name for name in modes if name.split("/")[0] in NEVER_IN_AUTOGRADER or "__pycache__" in name
             or name.endswith(".pyc")]
    assert stray == []


def test_student_zip_is_the_bundle_without_the_solution(zips):
    with zipfile.ZipFile(zips[1]) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert {name.split("/")[0] for name in files} == {FOLDER}, "student.zip unzips into one folder"
    files = {name.split("/", 1)[1]: content for name, content in files.items()}
    assert {name.split("/")[0] for name in files} == STUDENT_TOP
    assert {"tests/test_sanity.py", "tests/conftest.py"} <= set(files)
    with open(TEMPLATE, "rb") as file:
        assert files["backbone.py"] == file.read(), "backbone.py in student.zip is not the template"
    with open(REFERENCE, "rb") as file:
        reference = file.read()
    for name, content in files.items():
        assert content != reference, f"{name} is the reference"
        assert b"BEGIN SOLUTION" not in content and b"END SOLUTION" not in content, name


def test_package_refuses_a_bundle_that_leaks_the_solution():
    files = package.student_files()
    with open(REFERENCE) as file:
        reference = file.read()
    secret = sorted(package.secret_lines(reference, package.make_template.make_template(reference)))[0]
    leaks = {"copy of the reference": {f"{FOLDER}/solution.py": reference.encode()},
             "solution marker": {f"{FOLDER}/notes.md": b"see # BEGIN SOLUTION"},
             "a line of a solution block": {f"{FOLDER}/helper.py": f"    {secret}\n".encode()},
             "a grader path": {f"{FOLDER}/autograder/rubric.py": b""},
             "a file outside the folder": {"stray.py": b""},
             "a stale template": {f"{FOLDER}/backbone.py": files[f"{FOLDER}/backbone.py"] + b"\n# edited\n"}}
    package.check_student(files)
    for what, leak in leaks.items():
        with pytest.raises(AssertionError):
            package.check_student({**files, **leak})
            pytest.fail(f"package.py accepted a student bundle with {what}")


def test_zips_are_reproducible(zips, tmp_path):
    rebuilt = package.build(tmp_path)
    for first, second in zip(zips, rebuilt):
        assert first.read_bytes() == second.read_bytes(), f"{first.name} differs between two builds"


def test_autograder_zip_grades_the_reference_in_a_gradescope_layout(zips, tmp_path):
    """Gradescope unpacks the zip into /autograder/source, copies run_autograder to /autograder
    and runs it there with no arguments; here <tmp> stands in for /autograder."""
    _unzip(zips[0], tmp_path / "source")
    shutil.copy2(tmp_path / "source" / "run_autograder", tmp_path / "run_autograder")
    (tmp_path / "submission").mkdir()
    shutil.copy(REFERENCE, tmp_path / "submission" / "backbone.py")
    (tmp_path / "results").mkdir()
    environment = dict(os.environ, SCRATCH1_AUTOGRADER_ROOT=str(tmp_path),
                       PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    completed = subprocess.run([str(tmp_path / "run_autograder")], cwd=tmp_path, env=environment,
                               capture_output=True, text=True, timeout=600)
    results_file = tmp_path / "results" / "results.json"
    assert results_file.exists(), f"no results.json:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    document = json.loads(results_file.read_text())
    assert results.problems(document) == []
    failed = [(t["name"], t["output"][:300]) for t in document["tests"]
              if t["status"] != "passed" and results.attempted(t)]
    assert failed == [] and document["score"] == 100


@pytest.mark.slow  # two pytest runs of the bundle: 10-40 s wall on a shared 2-core box
def test_student_bundle_tests_fail_on_the_template_and_pass_on_a_solution(zips, tmp_path):
    _unzip(zips[1], tmp_path)
    tmp_path = tmp_path / FOLDER
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"]
    template = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert template.returncode == 1, template.stdout[-3000:]
    for todo in ("TODO 1 (RMSNorm)", "TODO 2 (CausalSelfAttention)", "TODO 3 (train_epoch)"):
        assert f"{todo} is not implemented yet" in template.stdout, todo
    assert "passed" not in template.stdout.splitlines()[-1], "a public test passed on the template"
    shutil.copy(REFERENCE, tmp_path / "backbone.py")
    solved = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert solved.returncode == 0, solved.stdout[-3000:]
