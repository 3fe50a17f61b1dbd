"""Build the two zips: the Gradescope autograder and the student bundle.

    python scripts/package.py [--out DIR]      # default DIR: dist/

autograder.zip  what grading needs and nothing else, with setup.sh and run_autograder at the root
                (Gradescope unpacks it into /autograder/source): requirements.txt, autograder/,
                reference/backbone.py, student/generate_data.py (the grader's dataset and the
                worker import it), student/backbone.py (the template, whose provided code the
                worker substitutes for parts a check does not grade), data/README.md.
student.zip     the bundle students download, at the zip root: backbone.py (the template,
                regenerated from the reference), generate_data.py, visualize.py, tests/ (the
                public sanity tests) and README.md (student/README.md).

Before writing anything it asserts the invariants: the solution never reaches student.zip (no
solution markers, no copy of the reference, no line of a solution block, no grader or reference
path), the template is current, and autograder.zip has its entry points and every graded test
file. Zips are reproducible: fixed timestamps, sorted entries, explicit file modes.
"""

import argparse
import pathlib
import re
import stat
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
import make_points_table  # noqa: E402
import make_template  # noqa: E402
from autograder import rubric  # noqa: E402

REFERENCE = ROOT / "reference" / "backbone.py"
EXECUTABLE = {"setup.sh", "run_autograder"}
# student/backbone.py: the template's provided code is the worker's known-good stand-in for the
# parts a check does not grade (autograder/worker/known_good.py).
AUTOGRADER_FILES = ["setup.sh", "run_autograder", "requirements.txt", "reference/backbone.py",
                    "student/generate_data.py", "student/backbone.py", "data/README.md"]
AUTOGRADER_TOP = {"setup.sh", "run_autograder", "requirements.txt", "autograder", "reference",
                  "student", "data"}
STUDENT_FILES = {"generate_data.py": "student/generate_data.py", "visualize.py": "student/visualize.py",
                 "README.md": "student/README.md", ".gitignore": "student/.gitignore"}
STUDENT_FOLDER = "scratch-1"  # student.zip unzips into this one folder
# The student bundle's requirements.txt: the grader's pins of what a student runs.
STUDENT_PACKAGES = ("torch", "numpy", "matplotlib", "pytest")
STUDENT_REQUIREMENTS_HEADER = """\
# Scratch-1: the packages and versions the autograder uses.
# CPU only (any laptop; on Linux this avoids a multi-GB CUDA download):
#   pip install -r requirements.txt --extra-index-url https://download.pytorch.org/whl/cpu
# With an NVIDIA GPU, install torch from a CUDA index first, then the rest, e.g.:
#   pip install torch==TORCH --index-url https://download.pytorch.org/whl/cu126
#   pip install -r requirements.txt
"""
MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
ZIP_TIME = (2025, 1, 1, 0, 0, 0)


def _tree(directory):
    """Relative paths of the files under ROOT/directory, without caches and hidden files."""
    found = []
    for path in sorted((ROOT / directory).rglob("*")):
        parts = path.relative_to(ROOT).parts
        if path.is_file() and not any(p == "__pycache__" or p.startswith(".") for p in parts) \
                and path.suffix not in (".pyc", ".pyo"):
            found.append("/".join(parts))
    return found


def autograder_files():
    """{name in the zip: bytes}."""
    names = AUTOGRADER_FILES + _tree("autograder")
    missing = [name for name in names if not (ROOT / name).is_file()]
    assert not missing, f"autograder.zip: missing {missing}"
    return {name: (ROOT / name).read_bytes() for name in names}


def student_files():
    """{name in the zip: bytes}; backbone.py is the template generated from the reference now."""
    template = make_template.make_template(REFERENCE.read_text())
    on_disk = (ROOT / "student" / "backbone.py").read_text()
    assert on_disk == template, "student/backbone.py is stale: run python scripts/make_template.py"
    readme = make_points_table.README.read_text()
    assert readme == make_points_table.with_table(readme), (
        "student/README.md's points table is stale: run python scripts/make_points_table.py")
    missing = [source for source in STUDENT_FILES.values() if not (ROOT / source).is_file()]
    assert not missing, f"student.zip: missing {missing}"
    files = {"backbone.py": template.encode()}
    files.update({name: (ROOT / source).read_bytes() for name, source in STUDENT_FILES.items()})
    for path in _tree("student/tests"):
        if path.endswith(".py"):
            files[path[len("student/"):]] = (ROOT / path).read_bytes()
    files["requirements.txt"] = student_requirements().encode()
    return {f"{STUDENT_FOLDER}/{name}": content for name, content in files.items()}


def student_requirements() -> str:
    """The grader's pins (requirements.txt) of the packages a student runs, without a local
    version such as +cpu, so that the index the student chooses picks the build."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^+\s;#]+)", line.strip())
        if match:
            pins[match[1].lower()] = match[2]
    missing = [name for name in STUDENT_PACKAGES if name not in pins]
    assert not missing, f"requirements.txt pins none of {missing}"
    header = STUDENT_REQUIREMENTS_HEADER.replace("TORCH", pins["torch"])
    return header + "".join(f"{name}=={pins[name]}\n" for name in STUDENT_PACKAGES)


def secret_lines(reference: str, template: str):
    """Lines of the reference's solution blocks that the template does not contain anyway."""
    blocks = re.findall(r"# BEGIN SOLUTION\n(.*?)# END SOLUTION", reference, re.DOTALL)
    provided = {line.strip() for line in template.splitlines()}
    return {line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#") and line.strip() not in provided}


def check_autograder(files):
    names = set(files)
    assert EXECUTABLE <= names, f"autograder.zip needs {sorted(EXECUTABLE)} at its root"
    stray = sorted(name for name in names if name.split("/")[0] not in AUTOGRADER_TOP)
    assert not stray, f"autograder.zip: not needed by the grader: {stray}"
    graded = {f"autograder/checks/{rule.test.split('::')[0]}" for rule in rubric.RULES}
    assert graded <= names, f"autograder.zip: graded test files missing: {sorted(graded - names)}"


def check_student(files):
    reference = REFERENCE.read_bytes()
    template = make_template.make_template(reference.decode())
    secrets = secret_lines(reference.decode(), template)
    assert {name.split("/")[0] for name in files} == {STUDENT_FOLDER}, "student.zip: one top folder"
    files = {name.split("/", 1)[1]: content for name, content in files.items()}
    assert files.get("backbone.py") == template.encode(), "student.zip: backbone.py is not the template"
    for name, content in files.items():
        assert not name.startswith(("reference/", "autograder/", "student/")) and "checks" not in name, \
            f"student.zip: {name} is a grader or reference path"
        assert content != reference, f"student.zip: {name} is the reference solution"
        text = content.decode("utf-8", errors="replace")
        for marker in MARKERS:
            assert marker not in text, f"student.zip: {name} contains '{marker}'"
        leaked = sorted(line for line in text.splitlines() if line.strip() in secrets)
        assert not leaked, f"student.zip: {name} contains lines of the reference solution: {leaked[:3]}"


def write_zip(path: pathlib.Path, files):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            mode = 0o755 if name in EXECUTABLE else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])


def listing(path: pathlib.Path) -> str:
    with zipfile.ZipFile(path) as archive:
        rows = [f"  {stat.filemode(i.external_attr >> 16)} {i.file_size:>8}  {i.filename}"
                for i in archive.infolist()]
    return f"{path} ({path.stat().st_size} bytes, {len(rows)} files)\n" + "\n".join(rows)


def build(out: pathlib.Path):
    """Check both bundles, then write them to out/; returns the two zip paths."""
    grader, student = autograder_files(), student_files()
    check_autograder(grader)
    check_student(student)
    paths = out / "autograder.zip", out / "student.zip"
    write_zip(paths[0], grader)
    write_zip(paths[1], student)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    for path in build(pathlib.Path(args.out).resolve()):
        print(listing(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
