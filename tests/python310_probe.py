"""Run by Python 3.10 (Gradescope's version) without torch or numpy: what of the kit can be
proven there (tests/test_python310.py says what this does and does not prove).

    python3.10 -I tests/python310_probe.py KIT

Prints one line per proof and exits 0, or raises at the first failure.
"""

import os
import sys
import tempfile
import zipfile

KIT = os.path.abspath(sys.argv[1])
sys.path[:0] = [KIT, os.path.join(KIT, "scripts")]
assert sys.version_info[:2] == (3, 10), sys.version

# 1. Every Python file of the kit is valid 3.10 syntax (no except*, no 3.11-only grammar).
SKIP = {".git", ".venv", "__pycache__", "data", "dist", "node_modules"}
compiled = 0
for directory, folders, files in os.walk(KIT):
    folders[:] = [name for name in folders if name not in SKIP]
    for name in files:
        if name.endswith(".py"):
            path = os.path.join(directory, name)
            with open(path, "rb") as file:
                compile(file.read(), path, "exec", dont_inherit=True)
            compiled += 1
assert compiled >= 40, f"only {compiled} files found under {KIT}"
print(f"compiled {compiled} files")

# 2. The torch-free modules import and work: the rubric, the results document, the intake,
#    the kit fingerprint, the worker's import stubs, the template generator.
from autograder import intake, kit_version, results, rubric  # noqa: E402
from autograder.worker.stubs import student_builtins  # noqa: E402
import make_template  # noqa: E402

assert sum(rule.weight for rule in rubric.RULES) == 100
numbering = results.numbers()
tests = [results.test_entry(rule, numbering[rule.test], 1.0, "ok") for rule in rubric.RULES]
assert results.problems(results.document(tests, "", 1.0)) == []
assert results.problems(results.internal_error("cause")) == []
print("rubric and results documents valid")

with tempfile.TemporaryDirectory() as scratch:
    with zipfile.ZipFile(os.path.join(scratch, "upload.zip"), "w") as archive:
        archive.write(os.path.join(KIT, "reference", "backbone.py"), "repo/src/backbone.py")
    found = intake.locate(os.path.join(scratch, "upload.zip"))
    assert found.file and found.file.endswith("backbone.py"), (found.problem, found.notes)
    found.cleanup()
    stubbed, namespace = [], {}
    namespace["__builtins__"] = student_builtins(lambda statement, missing: stubbed.append(missing))
    exec(compile("import seaborn_not_installed as sns\nVALUE = sns.anything(41) + 1\n",
                 "needs_a_plotter.py", "exec"), namespace)
    assert stubbed == ["seaborn_not_installed"] and namespace["VALUE"] == 42, (stubbed, namespace)
    assert "seaborn_not_installed" not in sys.modules, "a stub must stay out of sys.modules"
print("intake of a zip and the worker's import stubs work")

with open(os.path.join(KIT, "reference", "backbone.py")) as file:
    template = make_template.make_template(file.read())
with open(os.path.join(KIT, "student", "backbone.py")) as file:
    assert template == file.read(), "the template made under 3.10 differs from student/backbone.py"
print(f"template regenerated identically; kit fingerprint {kit_version.fingerprint()}")
