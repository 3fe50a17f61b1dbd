"""interface: the file is there, compiles, imports in time and defines the template's API."""

from ..verdict import Verdict, fail
from .adapters import run_load


def test_submission_found(context):
    if context.intake.file is None:
        fail(Verdict(measured=context.intake.problem, kind="missing"))


def test_compiles(context):
    if context.intake.file is None:
        fail(Verdict(measured=f"not graded: {context.intake.problem}", kind="not_graded"))
    with open(context.intake.file, "rb") as file:
        raw = file.read()
    if not raw.strip():
        fail(Verdict(measured="backbone.py is empty", kind="missing"))
    try:
        # the raw bytes, as Python reads the file: a byte-order mark or a coding line is honoured
        compile(raw, "backbone.py", "exec")  # compiles without running anything
    except SyntaxError as error:
        if "utf-8" in str(error.msg).lower():
            fail(Verdict(measured=f"backbone.py is not UTF-8 text (line {error.lineno}: "
                                  f"{error.msg})", hint="Save it as UTF-8.", kind="raised"))
        text = (error.text or "").rstrip()
        fail(Verdict(measured=f"SyntaxError at line {error.lineno}", found=str(error.msg),
                     hint=f"    {text}" if text else "", kind="raised"))


def test_imports(submission):
    loaded = run_load(submission)
    if loaded.error:
        fail(Verdict(measured=f"importing backbone.py raised {loaded.error}", kind="raised"))
    submission.note(f"imported in {loaded.seconds:.1f} s")


def test_required_names(submission):
    loaded = run_load(submission)
    if loaded.error:
        fail(Verdict(measured="not graded: backbone.py could not be imported; see the test "
                              "'backbone.py imports'", kind="not_graded"))
    missing = [name for name, kind in loaded.names.items() if kind == "missing"]
    if missing:
        fail(Verdict(measured="backbone.py does not define " + ", ".join(missing), kind="missing",
                     hint="Keep the template's names."))
