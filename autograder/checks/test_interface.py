"""interface: the file is there, compiles, imports in time and defines the template's API."""

import pytest

from .submission import describe


def test_submission_found(context):
    if context.intake.file is None:
        pytest.fail(context.intake.problem, pytrace=False)


def test_compiles(context):
    if context.intake.file is None:
        pytest.fail(f"not graded: {context.intake.problem}", pytrace=False)
    with open(context.intake.file, "rb") as file:
        raw = file.read()
    if not raw.strip():
        pytest.fail("backbone.py is empty", pytrace=False)
    try:
        # the raw bytes, as Python reads the file: a byte-order mark or a coding line is honoured
        compile(raw, "backbone.py", "exec")  # compiles without running anything
    except SyntaxError as error:
        if "utf-8" in str(error.msg).lower():
            pytest.fail(f"backbone.py is not UTF-8 text (line {error.lineno}: {error.msg}): save it "
                        "as UTF-8", pytrace=False)
        text = (error.text or "").rstrip()
        pytest.fail(f"SyntaxError at line {error.lineno}: {error.msg}" + (f"\n    {text}" if text else ""),
                    pytrace=False)


def test_imports(submission):
    reply = submission.load()
    if not reply.get("ok"):
        pytest.fail(f"importing backbone.py raised {describe(reply['error'])}", pytrace=False)
    submission.note(f"imported in {reply['result']['seconds']:.2g} s")  # as measured: 0.034, not 0.0


def test_required_names(submission):
    reply = submission.load()
    if not reply.get("ok"):
        pytest.fail("not graded: backbone.py could not be imported; see the test 'backbone.py "
                    "imports'", pytrace=False)
    missing = [name for name, kind in reply["result"]["names"].items() if kind == "missing"]
    if missing:
        pytest.fail("backbone.py does not define " + ", ".join(missing) + ": keep the "
                    "template's names", pytrace=False)
