"""Why a graded test failed, as data: built once by the check, rendered once per audience.

A check that finds a problem raises `fail(Verdict(...))`. The results plugin keeps the Verdict,
writes its `text()` as the test's output (what the student reads in results.json) and its
`as_dict()` into the entry's `extra_data["verdicts"]`, from which the TA's console summary and
HTML report render and group failures without reading messages back.

    Verdict(kind="mismatch",
            measured="RMSNorm(dim=16, eps=1e-06) on input (4, 16)",
            found="max abs error 0.31 at index (0, 3) (value 1.2, expected 0.89)",
            expected="within atol 1e-05 + rtol 1e-05 * |expected|",
            cause="eps added outside the square root",
            hint="Expected x / sqrt(mean(x^2 over the last dim) + eps) * scale.")

renders as

    RMSNorm(dim=16, eps=1e-06) on input (4, 16): max abs error 0.31 at index (0, 3) (value 1.2,
    expected 0.89); expected within atol 1e-05 + rtol 1e-05 * |expected|
    Likely cause: eps added outside the square root.

`cause` is set only when this run's measurements support it (the hint is shown otherwise), and
it is the same text for every submission with that bug, which is what the report groups by.
"""

from dataclasses import asdict, dataclass, fields

import pytest

# What kind of failure it is: the report groups verdicts without a cause by (test, kind).
KINDS = {
    "mismatch": "a value differs from the reference's",
    "property": "a required property does not hold",
    "raised": "the submission's code raised an exception",
    "timeout": "the submission's code did not finish in time",
    "memory": "the submission's code ran out of memory",
    "crashed": "the worker running the submission's code died",
    "malformed": "the submission's process sent a reply the grader cannot accept",
    "missing": "something the template defines is missing",
    "not_graded": "not graded because an earlier problem prevents it",
    "internal": "an internal error of the grader (not the student's fault)",
}
# A WorkerFailure's kind (sandbox/errors.py) -> the Verdict kind of the test it ends; any other
# (a crash) is "crashed".
WORKER_FAILURE_KINDS = {"timeout": "timeout", "budget": "timeout", "hung": "timeout", "memory": "memory",
                        "malformed": "malformed", "protocol": "malformed"}


@dataclass(frozen=True)
class Verdict:
    """One failure of one graded test.

    measured: what was measured, in the student's terms ("gradient of RMSNorm w.r.t. its scale").
    found:    the value measured ("max abs error 0.3 at index (0, 1)"); "" when `measured` says it.
    expected: what the reference or the assignment requires; "" when there is nothing to compare.
    cause:    the likely cause, only when this run's evidence supports it ("" otherwise).
    hint:     what to check or what the reference computes; shown when there is no cause.
    kind:     one of KINDS.
    """

    measured: str
    found: str = ""
    expected: str = ""
    cause: str = ""
    hint: str = ""
    kind: str = "mismatch"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown verdict kind {self.kind!r}; one of {sorted(KINDS)}")

    def headline(self) -> str:
        """The first line: what was measured, its value and what was expected."""
        line = self.measured + (f": {self.found}" if self.found else "")
        return line + (f"; expected {self.expected}" if self.expected else "")

    def text(self) -> str:
        """The message a student reads (results.json, console): headline, cause or hint."""
        lines = [self.headline()]
        if self.cause:
            lines.append(f"Likely cause: {self.cause.rstrip('.')}.")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)

    def group(self) -> str:
        """What submissions failing alike share: the cause when there is one, else the kind."""
        return self.cause or KINDS[self.kind]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        """The inverse of as_dict; unknown keys (from a newer kit) are ignored."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: str(value) for key, value in data.items() if key in names})


class Failed(pytest.fail.Exception):
    """pytest's failure outcome (no traceback in the report) carrying its Verdict."""

    def __init__(self, verdict: Verdict):
        super().__init__(msg=verdict.text(), pytrace=False)
        self.verdict = verdict


def fail(verdict: Verdict):
    """End the running check as failed, for the reason `verdict` gives."""
    raise Failed(verdict)


def from_message(message: str, kind: str = "property") -> Verdict:
    """A Verdict for a failure known only as text (a pytest.fail outside the checks' own code):
    the first line is what was measured, the rest the hint."""
    first, _, rest = message.partition("\n")
    return Verdict(measured=first, hint=rest, kind=kind)
