"""The graded tests' handle on the submission: the trusted end of the adapter layer.

Tests never touch student code. They call methods here, which send one request to the worker
(autograder/worker/ops) and return its raw tensors. When the student's code raised, hung or
crashed, the method fails the test with a message that names the error and the line of
backbone.py; when backbone.py could not be imported at all, every test points at that one error.
"""

import pytest

from ..sandbox import StudentError, WorkerFailure


def describe(error: dict) -> str:
    """'RMSNorm.forward raised NotImplementedError: ... (backbone.py line 41: ...)'."""
    kind, message = error.get("kind", "Error"), error.get("message", "")
    location = ""
    if error.get("line"):
        location = f" (backbone.py line {error['line']}"
        where = error.get("where", "")
        location += f", {where})" if where and message not in where else ")"
    if kind == "MissingName":
        return message
    return f"{kind}: {message}{location}"


class Student:
    def __init__(self, worker=None, unavailable: str = ""):
        self.worker = worker
        self.unavailable = unavailable  # why there is nothing to grade, if so
        self.timeout = 30.0
        self.notes = []

    # -- bookkeeping for the report plugin --------------------------------------------------

    def begin_test(self, rule) -> None:
        self.timeout = rule.timeout
        self.notes = []

    def end_test(self) -> list:
        notes, self.notes = self.notes, []
        return notes

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- requests -----------------------------------------------------------------------------

    def load(self) -> dict:
        """The worker's answer to importing backbone.py: {"ok", "result"|"error", "notes"}."""
        if self.worker is None:
            pytest.fail(f"not graded: {self.unavailable}", pytrace=False)
        try:
            reply = self.worker.ensure_loaded()
        except WorkerFailure as failure:
            pytest.fail(f"importing backbone.py did not finish: {failure}", pytrace=False)
        for text in reply.get("notes", []):
            self.note(text)
        return reply

    def call(self, op: str, what: str, **args) -> dict:
        """Send op to the worker; `what` names the student's code it runs, for messages."""
        result, error = self.attempt(op, what, **args)
        if error:
            pytest.fail(f"{what} raised {error}", pytrace=False)
        return result

    def attempt(self, op: str, what: str, **args) -> tuple:
        """(result, '') as call gives it, or (None, the error described) when the student's code
        raised, so the test can measure otherwise; any other failure fails the test as call does."""
        if self.worker is None:
            pytest.fail(f"not graded: {self.unavailable}", pytrace=False)
        try:
            reply = self.worker.call(op, self.timeout, **args)
        except StudentError as error:
            for text in error.notes:
                self.note(text)
            loaded = self.worker.load_reply
            if isinstance(loaded, dict) and not loaded.get("ok"):
                pytest.fail("not graded: backbone.py could not be imported "
                            f"({describe(error.error)}); see the test 'backbone.py imports'",
                            pytrace=False)
            return None, describe(error.error)
        except WorkerFailure as failure:
            if self.worker.load_reply is failure:
                pytest.fail(f"not graded: importing backbone.py failed: {failure}; see the test "
                            "'backbone.py imports'", pytrace=False)
            pytest.fail(f"{what}: {failure}", pytrace=False)
        for text in reply.notes:
            self.note(text)
        return reply.result, ""
