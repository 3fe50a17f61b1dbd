"""The student template is the reference with the three TODO bodies removed, and nothing else."""

import ast
import os
import subprocess
import sys

from grading import KIT, REFERENCE, TEMPLATE

sys.path.insert(0, os.path.join(KIT, "scripts"))
import make_template  # noqa: E402


def test_template_is_generated_from_reference():
    with open(REFERENCE) as file:
        expected = make_template.make_template(file.read())
    with open(TEMPLATE) as file:
        assert file.read() == expected, "student/backbone.py is stale: run python scripts/make_template.py"


def test_check_mode_detects_a_stale_template(tmp_path, monkeypatch):
    stale = tmp_path / "backbone.py"
    stale.write_text(open(TEMPLATE).read() + "\n# edited by hand\n")
    monkeypatch.setattr(make_template, "TEMPLATE", stale)
    monkeypatch.setattr(sys, "argv", ["make_template.py", "--check"])
    assert make_template.main() == 1


def test_template_has_exactly_three_todos_that_raise():
    with open(TEMPLATE) as file:
        source = file.read()
    raises = [node for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Raise) and "NotImplementedError" in ast.unparse(node)]
    raises.sort(key=lambda node: node.lineno)
    assert [ast.unparse(node.exc).split("TODO ")[1][:1] for node in raises] == ["1", "2", "3"]
    assert "BEGIN SOLUTION" not in source and "END SOLUTION" not in source


def test_template_imports_and_builds_the_model():
    code = ("import backbone as b; m = b.DecoderOnlyTransformer(256, 32, 2, 4, 64, 16, 0.1); "
            "print(sum(p.numel() for p in m.parameters()))")
    completed = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(TEMPLATE),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout.strip()) > 0
