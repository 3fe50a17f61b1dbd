"""The graded tests' handle on the submission: the trusted end of the adapter layer.

Tests never touch student code. They call methods here, which send one request to the worker
(autograder/worker/ops) and return its raw tensors. When the student's code raised, hung or
crashed, the method fails the test with a Verdict that names the error and the line of
backbone.py; when backbone.py could not be imported at all, every test points at that one error.

Whose fault a failure is, is decided here, on the grader's side. Everything the worker returns
once the submission is imported comes from the submission's process, whose code can reach the
worker's own modules: a reply the grader cannot accept (sandbox/validation.py) and an error the
worker flags "internal" (a fault of the kit's own worker code, worker/fault.py) both fail the
check in the submission's name, with a message that says what was claimed. A claimed kit fault
is kept in `claimed_faults` for the TA (results.json's extra_data, the run's log); the install's
self-test, which grades the reference in the real sandbox, is what proves the kit's own worker
code. Only what the grader detects itself is its own error (sandbox/errors.py).

A reply's notes (what the worker says it adapted) are claims of that process too: they are kept
apart from the checks' own notes (Notes.reported) and rendered as such (grading_plugin.py).
"""

import contextlib
from dataclasses import dataclass, field

from ..sandbox.errors import StudentError, WorkerFailure
from ..verdict import WORKER_FAILURE_KINDS, Failed, Verdict, fail

MAX_CLAIMED_FAULTS = 20  # kept for the TA; more are counted


def _failure(measured: str, failure: WorkerFailure):
    fail(Verdict(measured=measured, kind=WORKER_FAILURE_KINDS.get(failure.kind, "crashed")))


def raised(what: str, error: str) -> Verdict:
    """The Verdict on the student's `what` raising (`error` as describe() gives it)."""
    return Verdict(measured=f"{what} raised {error}", kind="raised")


CLAIMED_FAULT = ("an error that your code's process reported as a fault of the grader's own worker "
                 "code")


def describe(error: dict) -> str:
    """'RMSNorm.forward raised NotImplementedError: ... (backbone.py line 41: ...)'; for an
    error the worker flags "internal", what it claimed, as a claim (see the module's docstring)."""
    kind, message = error.get("kind", "Error"), error.get("message", "")
    if error.get("internal"):
        return (f"{CLAIMED_FAULT} ({kind}: {message}). The grader cannot tell such a report from "
                "code that changes the grader's worker, so it counts as your code's failure; if "
                "your code does not touch the grader's worker, tell the course staff, who see "
                "this report")
    location = ""
    if error.get("line"):
        location = f" (backbone.py line {error['line']}"
        where = error.get("where", "")
        location += f", {where})" if where and message not in where else ")"
    if kind == "MissingName":
        return message
    return f"{kind}: {message}{location}"


@dataclass
class Notes:
    """What a test's output says besides its verdicts, by author: `own`, the checks' (the
    grader's words); `reported`, the notes of the worker's replies (the submission's process's
    words: what the worker says it adapted to run the code). Each without repeats, in order."""

    own: list = field(default_factory=list)
    reported: list = field(default_factory=list)

    def add(self, text: str, reported: bool = False) -> None:
        kept = self.reported if reported else self.own
        if text not in kept:
            kept.append(text)

    def extend(self, other: "Notes") -> None:
        for text in other.own:
            self.add(text)
        for text in other.reported:
            self.add(text, reported=True)


class Submission:
    def __init__(self, worker=None, unavailable: str = ""):
        self.worker = worker
        self.unavailable = unavailable  # why there is nothing to grade, if so
        self.notes = Notes()
        self._once = {}  # op -> (result or None, Verdict or None, notes) of call_once
        self.claimed_faults = []  # {"op", "error"} of each error the worker flagged "internal"
        self.claimed_count = 0

    # -- bookkeeping for the report plugin --------------------------------------------------

    def begin_test(self, rule) -> None:
        """A test of `rule` starts: its requests share the rule's timeout (seconds)."""
        self.notes = Notes()
        if self.worker is not None:
            self.worker.begin_check(rule.test, rule.timeout)

    def end_test(self) -> Notes:
        notes, self.notes = self.notes, Notes()
        return notes

    def note(self, text: str) -> None:
        """A note of the running check's own (the grader's words)."""
        self.notes.add(text)

    def _reported(self, texts: list) -> None:
        """The notes of a worker's reply: the submission's process's words."""
        for text in texts:
            self.notes.add(text, reported=True)

    def _claimed(self, op: str, error: dict) -> None:
        """Keep a kit fault the worker claimed (error["internal"]) for the TA."""
        claim = {"op": op, "error": error}
        if error.get("internal") and claim not in self.claimed_faults:
            self.claimed_count += 1
            if len(self.claimed_faults) < MAX_CLAIMED_FAULTS:
                self.claimed_faults.append(claim)

    # -- requests -----------------------------------------------------------------------------

    def load(self) -> dict:
        """The worker's answer to importing backbone.py: {"ok", "result"|"error", "notes"}."""
        self._require_worker()
        try:
            reply = self.worker.ensure_loaded()
        except WorkerFailure as failure:
            _failure(f"importing backbone.py did not finish: {failure}", failure)
        if not reply["ok"]:
            self._claimed("load", reply["error"])
        self._reported(reply["notes"])
        return reply

    def call(self, op: str, what: str, **args) -> dict:
        """Send op to the worker; `what` names the student's code it runs, for messages."""
        result, error = self.attempt(op, what, **args)
        if error:
            fail(raised(what, error))
        return result

    def _require_worker(self) -> None:
        if self.worker is None:
            fail(Verdict(measured=f"not graded: {self.unavailable}", kind="not_graded"))

    def attempt(self, op: str, what: str, **args) -> tuple:
        """(result, '') as call gives it, or (None, the error described) when the student's code
        raised, so the test can measure otherwise; any other failure fails the test as call does."""
        self._require_worker()
        try:
            reply = self.worker.call(op, **args)
        except StudentError as error:
            self._reported(error.notes)
            for text in error.observed:
                self.note(text)
            loaded = self.worker.load_reply
            if isinstance(loaded, dict) and not loaded.get("ok"):
                fail(Verdict(measured="not graded: backbone.py could not be imported "
                                      f"({describe(error.error)}); see the test 'backbone.py imports'",
                             kind="not_graded"))
            self._claimed(op, error.error)
            return None, describe(error.error)
        except WorkerFailure as failure:
            if self.worker.load_reply is failure:
                fail(Verdict(measured=f"not graded: importing backbone.py failed: {failure}; see "
                                      "the test 'backbone.py imports'", kind="not_graded"))
            _failure(f"{what}: {failure}", failure)
        self._reported(reply.notes)
        for text in reply.observed:
            self.note(text)
        return reply.result, ""

    def fresh_process(self) -> None:
        """The next request goes to a fresh worker process: nothing the submission kept in
        memory from the requests before can shape its answer."""
        if self.worker is not None:
            self.worker.renew()

    @contextlib.contextmanager
    def aside(self, name: str, seconds: float):
        """Requests made within the block run under a time limit of their own (`seconds`),
        outside the running check's, so that a hang or a crash there costs the check nothing.
        Their notes are not the check's: the block gets them (Notes)."""
        worker, saved, self.notes = self.worker, self.notes, Notes()
        check = (worker.budget.check, worker.budget.check_seconds) if worker is not None else None
        if worker is not None:
            worker.begin_check(name, seconds)
        notes = self.notes
        try:
            yield notes
        finally:
            self.notes = saved
            if check is not None:
                worker.begin_check(*check)

    def call_once(self, op: str, what: str, seconds: float, **args) -> dict:
        """op's result, requested once per grading (with the same arguments at every call) and
        cached with its notes, which every caller gets again. It runs under a time limit of its
        own (`seconds`), outside the running check's, so that a hang or a crash there costs the
        check nothing (the worker restarts for the check's own requests). A failure is cached
        too and fails every caller alike."""
        if op not in self._once:
            with self.aside(f"once per grading: {op}", seconds) as notes:
                try:
                    self._once[op] = (self.call(op, what, **args), None, notes)
                except Failed as failure:
                    self._once[op] = (None, failure.verdict, notes)
        result, verdict, notes = self._once[op]
        self.notes.extend(notes)
        if verdict is not None:
            fail(verdict)
        return result
