"""The worker's time, in wall-clock seconds, bounded three ways:

- the grading: the worker gets `total_seconds` in all, restarts and imports included;
- timeouts: once checks that timed out have cost `timeout_budget` seconds, the remaining checks
  fail fast instead of each waiting out its own limit;
- the check: each check (one rubric rule, all the cases of a parametrized test) gets the rule's
  `timeout` for all of its requests, counted from its first request. begin_check is the only
  way that limit reaches the worker.

A hang costs its own code, not the rest of the grading: a request that timed out is charged to
the student's code it ran (worker/protocol.student_code), and every later request that runs all
of that code is refused at once with the same cause, so one endless loop costs one timeout and
the checks of other code (train_epoch on the kit's spy model, RMSNorm...) still run.

A request waits for the least of what is left of the three; the import of the submission after
a (re)start has a limit of its own instead of the check's.
"""

import time

from .errors import WorkerFailure


class TimeBudget:
    def __init__(self, total_seconds: float, timeout_budget: float):
        self.total_seconds = total_seconds
        self.timeout_budget = timeout_budget
        self.deadline = time.monotonic() + total_seconds
        self.check = None  # the running check (a rubric rule's test), its seconds, when its clock started
        self.check_seconds = None
        self.check_start = None
        self.timeouts = 0  # requests that ran out of time, and the seconds they cost
        self.timed_out_seconds = 0.0
        self.hangs = []  # (the student's code a timed-out request ran, its check, why)

    def begin_check(self, name: str, seconds: float) -> None:
        """Check `name` starts, with `seconds` for all its requests, or goes on (same name)."""
        if name != self.check:
            self.check, self.check_seconds, self.check_start = name, seconds, None

    def record_timeout(self, seconds: float, code: frozenset = frozenset(), cause: str = "") -> None:
        """A request of the running check timed out after waiting `seconds`, running the
        student's `code` (names; empty: none of it in particular), with `cause` as its message."""
        self.timeouts += 1
        self.timed_out_seconds += seconds
        if code:
            self.hangs.append((code, self.check, cause))

    def refuse_hung_code(self, code: frozenset) -> None:
        """Raises WorkerFailure("hung") when a request running the student's `code` would run
        all the code of a request that already timed out."""
        for hung, check, cause in self.hangs:
            if hung <= code:
                names = " and ".join(sorted(hung))
                raise WorkerFailure(
                    "hung", f"not run: it runs your {names}, which already ran out of time in "
                    f"the check {check.split('::')[-1]} ({cause}); fix the endless or far too "
                    "slow code first")

    def refuse_when_out_of_time(self) -> None:
        """Raises WorkerFailure("budget") once timeouts have cost the allowance, or the
        grading's time is used up."""
        if self.timed_out_seconds >= self.timeout_budget:
            raise WorkerFailure(
                "budget", f"not run: your code exceeded the time limit in {self.timeouts} earlier "
                f"checks ({self.timed_out_seconds:.0f} s in all), so the remaining checks are "
                "skipped to finish grading in time; fix the endless or far too slow code first")
        if time.monotonic() >= self.deadline:
            raise WorkerFailure(
                "budget", f"not run: your code used up the {self.total_seconds:g} s it "
                f"gets for the whole grading ({self.timeouts} checks timed out); the remaining "
                "checks are skipped")

    def refuse_restart(self) -> None:
        """Before a restart, which costs an import: refuse_when_out_of_time, and raises
        WorkerFailure("budget") when the running check's clock has run out."""
        self.refuse_when_out_of_time()
        if self.check_start is not None:
            self.request_limit()

    def request_limit(self) -> tuple:
        """(seconds to wait, what the limit is in words) for the next request of the running
        check, whose clock starts now if it has not. Raises WorkerFailure("budget") when the
        check's time is used up, RuntimeError (a bug of the grader) outside any check."""
        if self.check is None:
            raise RuntimeError("a request to the worker outside any check: begin_check first")
        now = time.monotonic()
        if self.check_start is None:
            self.check_start = now
        limit = self.check_start + self.check_seconds - now
        what = f"this check's time limit of {self.check_seconds:g} s"
        if limit <= 0:
            raise WorkerFailure("budget", f"not run: the earlier cases of this check used up "
                                          f"its time limit of {self.check_seconds:g} s")
        allowance = self.timeout_budget - self.timed_out_seconds
        if self.timeouts and allowance < limit:
            limit, what = allowance, (f"the {allowance:.0f} s left of the grading's "
                                      f"{self.timeout_budget:g} s allowance for timeouts "
                                      f"({self.timeouts} earlier checks timed out)")
        return self._within_grading(limit, what)

    def import_limit(self, import_timeout: float) -> tuple:
        """(seconds to wait, what the limit is in words) for importing the submission."""
        return self._within_grading(import_timeout, f"the import time limit of {import_timeout:g} s")

    def _within_grading(self, limit: float, what: str) -> tuple:
        left = self.deadline - time.monotonic()
        if left < limit:
            limit, what = left, f"the {self.total_seconds:g} s your code gets for the whole grading"
        return max(limit, 0.0), what
