"""What a request to the worker can end in, other than a reply: the student's code raised
(StudentError), the worker did not answer or answered what the grader cannot accept
(WorkerFailure), the grader's own request was malformed (GraderError), or a fresh worker could
not even start (WorkerStartError).

Whose fault each is, is decided here on the grader's side, never by the worker: the worker is
the student's process once the submission is imported, so nothing it says (an error's
"internal" flag included) makes a failure the grader's. The grader's own are what it detects
itself: GraderError, WorkerStartError, and an exception of a check (grading_plugin)."""


class WorkerFailure(Exception):
    """The worker did not answer, or not acceptably; `kind` says how: "timeout", "crash",
    "memory", "disk" (its files above limits.disk_bytes), "protocol" (a malformed frame), "malformed" (a reply that does not fit its op's
    schema: sandbox/validation.py), "budget" (the time was used up before the request was sent)
    or "hung" (not sent: it runs code that already timed out, budget.py). The submission's
    failure; the worker is stopped (but after "malformed": one whole frame was read) and the
    next request starts a fresh one."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class GraderError(Exception):
    """The grader's own request is malformed (no such op, arguments that do not fit its
    protocol.REQUESTS entry): found on the grader's side before it is sent, never the
    student's."""


class StudentError(Exception):
    """The worker answered, but the student's code raised: carries the worker's error record
    (kind, message, line...), the notes of the request (the worker's claims) and what the
    grader observed of it."""

    def __init__(self, error: dict, notes: list, observed: list = ()):
        super().__init__(error.get("message", ""))
        self.error = error
        self.notes = notes
        self.observed = list(observed)

    @property
    def out_of_memory(self) -> bool:
        """Whether the student's code raised for want of memory (MemoryError, ENOMEM)."""
        return self.error.get("kind") == "MemoryError" or "can't allocate memory" in str(self.error.get("message"))


class WorkerStartError(Exception):
    """A fresh worker failed its preflight, before any student code ran: it could not start, or
    could not import torch under its limits. The grader's environment is broken: an internal
    error of the grader for the TA (the whole grading), never the student's fault."""
