"""What a request to the worker can end in, other than a reply: the student's code raised
(StudentError), the worker did not answer (WorkerFailure), the grader's own request was malformed
(GraderError), or a fresh worker could not even start (WorkerStartError)."""


class WorkerFailure(Exception):
    """The worker did not answer; `kind` says how: "timeout", "crash", "memory", "protocol" (a
    malformed frame), "budget" (the time was used up before the request was sent) or "hung" (not
    sent: it runs code that already timed out, budget.py). The worker is stopped; the next
    request starts a fresh one."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class GraderError(Exception):
    """The worker reported a fault of the kit's own: a request it refused as malformed (no such
    op, arguments that do not fit it) or an exception of the kit's worker code (worker/fault.py),
    never the student's. Carries the worker's error record."""

    def __init__(self, error: dict):
        super().__init__(f"the grader's worker code failed: {error.get('message', '')}")
        self.error = error


class StudentError(Exception):
    """The worker answered, but the student's code raised: carries the worker's error record
    (kind, message, line...) and the notes of the request."""

    def __init__(self, error: dict, notes: list):
        super().__init__(error.get("message", ""))
        self.error = error
        self.notes = notes

    @property
    def out_of_memory(self) -> bool:
        """Whether the student's code raised for want of memory (MemoryError, ENOMEM)."""
        return self.error.get("kind") == "MemoryError" or "can't allocate memory" in str(self.error.get("message"))


class WorkerStartError(Exception):
    """A fresh worker failed its preflight, before any student code ran: it could not start, or
    could not import torch under its limits. The grader's environment is broken: an internal
    error of the grader for the TA (the whole grading), never the student's fault."""
