"""Generate the student template from the reference solution.

Every `# BEGIN SOLUTION` ... `# END SOLUTION` block of reference/backbone.py is replaced by a
`raise NotImplementedError(...)` that names the TODO announced by the nearest `# TODO N (Part):`
comment above it. Nothing else changes, so the template cannot drift from the reference;
tests/test_template.py fails if student/backbone.py is not the output of this script.

    python scripts/make_template.py          # rewrite student/backbone.py
    python scripts/make_template.py --check  # exit 1 if it is out of date
"""

import pathlib
import re
import sys

import generated

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reference" / "backbone.py"
TEMPLATE = ROOT / "student" / "backbone.py"

SOLUTION_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\n.*?^[ \t]*# END SOLUTION\n", re.MULTILINE | re.DOTALL
)
TODO_HEADER = re.compile(r"# TODO (?P<number>\d+) \((?P<part>[^)]+)\)")


def make_template(reference_source: str) -> str:
    def replace(match: re.Match) -> str:
        headers = list(TODO_HEADER.finditer(reference_source, 0, match.start()))
        if not headers:
            raise ValueError(f"solution block at offset {match.start()} has no TODO header above it")
        number, part = headers[-1].group("number"), headers[-1].group("part")
        message = f"TODO {number} ({part}) is not implemented yet: complete it in backbone.py"
        return f'{match.group("indent")}raise NotImplementedError("{message}")\n'

    template, count = SOLUTION_BLOCK.subn(replace, reference_source)
    if count == 0:
        raise ValueError("no solution blocks found in the reference")
    return template


def main() -> int:
    return generated.main(__doc__.splitlines()[0], TEMPLATE, lambda: make_template(REFERENCE.read_text()),
                          "python scripts/make_template.py")


if __name__ == "__main__":
    sys.exit(main())
