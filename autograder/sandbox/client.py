"""The grader's handle on the worker: starts it when a request needs it, proves a fresh one can
run (preflight), imports the submission, sends requests under the time budget, and restarts it
after a timeout, a crash, a malformed reply or used-up memory (the next request gets a fresh
worker that imports the submission again). Every reply it hands on was validated against its
op's schema (wire.exchange)."""

import os
import sys
import time

from ..worker.protocol import REQUESTS, Op, student_code
from . import cgroup, confinement, identity, memory, wire
from .budget import TimeBudget
from .errors import GraderError, StudentError, WorkerFailure, WorkerStartError
from .isolation import worker_python
from .limits import Limits
from .process import WorkerProcess


def _component(check) -> str:
    """The check file of a check's name ("test_rope.py" of "test_rope.py::test_...")."""
    return str(check).split("::")[0]


class Worker:
    """`import_timeout` and `start_timeout` (seconds) bound the import of the submission and
    the preflight of each fresh worker; every other request is bounded by the running check
    (begin_check) and the rest of `budget`."""

    def __init__(self, submission_file: str, limits: Limits, import_timeout: float,
                 start_timeout: float):
        self.submission_file = submission_file
        self.limits = limits
        self.import_timeout = import_timeout
        self.start_timeout = start_timeout
        self.budget = TimeBudget(limits.total_seconds, limits.timeout_budget)
        self.process = None  # the running WorkerProcess, if any
        self.start_error = None  # a WorkerStartError once a worker failed its preflight
        # a WorkerFailure (the submission's) once restarts failed twice after it ran (_start)
        self.restart_failure = None
        self.ready = None  # the first preflight's reply: python, torch, its build (for the TA)
        self.confinement = None  # what of the worker's own confinement held (confinement.Judged)
        self.load_reply = None  # the import's reply, or the WorkerFailure it ended in
        self.logs = []  # what each stopped worker printed
        self.restarts = 0
        self.cgroup = None  # the grading's worker cgroup, made at the first start where possible

    def begin_check(self, name: str, seconds: float) -> None:
        """A check (one rubric rule: the cases of a parametrized test run one after the other)
        starts or goes on: all its requests share `seconds`, counted from its first request.
        The first check of another component ("file::" of the name) gets a fresh worker when the
        submission ran out of memory in this one: it may still hold what it allocated (in a
        global), which must not fail the checks of another category."""
        if (self.process is not None and self.process.out_of_memory
                and _component(name) != _component(self.budget.check)):
            self.stop()
        self.budget.begin_check(name, seconds)

    def stop(self) -> None:
        """Kill every process of the worker and keep what it printed."""
        if self.process is not None:
            self.logs.append(self.process.stop())
            self.process = None

    def close(self) -> None:
        """The grading is over: stop the worker and remove its cgroup."""
        self.stop()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def renew(self) -> None:
        """Stop the worker, so that the next request goes to a fresh process that holds nothing
        of the requests before (evidence the submission cannot shape with state it keeps); not
        counted as a restart. A failed import stays remembered (it is not retried)."""
        self.stop()
        if isinstance(self.load_reply, dict):
            self.load_reply = None

    def captured_output(self) -> str:
        """What every worker of this grading printed, each cut to limits.output_chars."""
        current = [self.process.printed()] if self.process is not None else []
        return "\n".join(self.logs + current)

    def _exchange(self, request: dict, seconds: float, what: str):
        """wire.exchange, then the worker's files measured (above limits.disk_bytes: a
        WorkerFailure); on a WorkerFailure the worker is stopped (but after a malformed reply, a
        whole frame read), a timeout counted and charged to the student's code the request runs."""
        started = time.monotonic()
        try:
            answer = wire.exchange(self.process, request, seconds, what)
            disk = self.process.disk
            if disk.check():  # files written faster than its watch looks: measured after each reply
                raise WorkerFailure("disk", disk.message())
            return answer
        except WorkerFailure as failure:
            if failure.kind != "malformed":
                self.stop()
            if failure.kind == "timeout" and request["op"] != Op.PREFLIGHT:  # not the student's time
                self.budget.record_timeout(time.monotonic() - started,
                                           student_code(request["op"], request["args"]), str(failure))
            raise

    def ensure_loaded(self) -> dict:
        """Start the worker if needed and import the submission; returns the load op's reply.

        A failed import is remembered, so a submission that hangs or exits at import costs the
        import timeout once, not once per test.
        """
        for remembered in (self.start_error, self.restart_failure):
            if remembered is not None:
                raise remembered
        if isinstance(self.load_reply, WorkerFailure):
            raise self.load_reply
        if self.process is None:
            self.budget.refuse_when_out_of_time()
            if self.load_reply is not None:
                self.restarts += 1
            self._start()
            try:
                self.load_reply = self._exchange({"op": Op.LOAD, "args": {}},
                                                 *self.budget.import_limit(self.import_timeout))
            except WorkerFailure as failure:
                self.load_reply = failure
                raise
        return self.load_reply

    def _start(self) -> None:
        """A fresh worker that passed its preflight. A restart whose preflight fails, after a
        first start that passed, is tried once more: on a machine busy with other gradings a
        start can be starved or cut off once. Failing twice after the submission already ran
        (the same interpreter and limits passed before it did), the submission is charged: what
        its earlier processes left (memory charged to the worker's cgroup, the machine's free
        memory) is measured and said, and every later check fails with the same cause."""
        if self.cgroup is None and identity.current():
            self.cgroup = cgroup.WorkerCgroup.create(f"scratch1-worker-{os.getpid()}",
                                                     self.limits.memory_bytes, self.limits.processes,
                                                     self.limits.cpu_cores)
        try:
            self.process = WorkerProcess(self.submission_file, self.limits, self.cgroup)
            self._preflight()
        except WorkerStartError as error:
            if self.ready is None:
                raise
            print(f"a restarted worker failed its preflight, started again: {error}", file=sys.stderr)
            self.start_error = None
            self.stop()
            self.process = WorkerProcess(self.submission_file, self.limits, self.cgroup)
            try:
                self._preflight()
            except WorkerStartError as again:
                self.start_error = None
                self.restart_failure = WorkerFailure("memory", self._left_behind(again))
                raise self.restart_failure from None

    def _left_behind(self, error: WorkerStartError) -> str:
        """Why a restart failed twice after the submission ran, measured, for the student."""
        measured = []
        charged = self.cgroup.memory_used() if self.cgroup else None
        if charged is not None:
            measured.append(f"{charged / 2**20:.0f} MB still charged to the worker's memory limit "
                            "with none of its processes left")
        available = memory.available_bytes()
        if available is not None:
            measured.append(f"{available / 2**20:.0f} MB of the machine's memory available")
        return ("your code's earlier process left the machine without the memory or processes a "
                "fresh worker needs: a fresh worker, which started and imported torch before your "
                f"code ran, failed twice to start afterwards ({'; '.join(measured) or 'nothing measured'}; "
                f"{str(error)[:300]})")

    def _preflight(self) -> None:
        """Before the submission is imported, the fresh worker must answer `preflight`: proof
        that its interpreter starts and imports torch under the worker's limits. Nothing of the
        student's has run yet (the submission is only copied), so a failure here is the grader's:
        it raises WorkerStartError, remembered so that every later check reports the same cause."""
        python = worker_python()
        try:
            with confinement.planted_file() as planted:  # issue 22: its confinement, checked
                reply = self._exchange({"op": Op.PREFLIGHT, "args": {"planted": planted.path}},
                                       self.start_timeout,
                                       f"the worker's start time limit of {self.start_timeout:g} s")
        except WorkerFailure as failure:
            self.stop()
            what = {"timeout": f"did not become ready within {self.start_timeout:g} s",
                    "protocol": "sent a malformed reply to the preflight",
                    "malformed": "sent a malformed reply to the preflight"}.get(
                        failure.kind, "exited before it was ready")
            output = self.logs[-1].strip() if self.logs else ""
            self.start_error = WorkerStartError(
                f"the worker process ({python}) {what}: it could not start and import torch under "
                f"its limits (memory {self.limits.memory_bytes // 2**20} MB); what it printed: "
                f"{output[-1500:] or '(nothing)'}")
            raise self.start_error
        if not reply["ok"]:
            self.stop()
            self.start_error = WorkerStartError(
                f"the worker process ({python}) started but failed its preflight: "
                f"{reply['error']!r:.1500}")
            raise self.start_error
        if self.ready is None:
            self.ready = reply["result"]
            self.confinement = confinement.judge(self.ready.get("confinement"), planted)

    def call(self, op: str, **args) -> wire.Reply:
        """Run `op` in the worker within the running check's time (begin_check first). Raises
        GraderError (a request that does not fit protocol.REQUESTS, found before it is sent),
        StudentError, WorkerFailure (wire.reply) or WorkerStartError."""
        problem = "no such op" if op not in REQUESTS else REQUESTS[op].problem(args)
        if problem:
            raise GraderError(f"the grader's request {op!r} does not fit the protocol: {problem}")
        for remembered in (self.start_error, self.restart_failure):
            if remembered is not None:
                raise remembered
        self.budget.refuse_when_out_of_time()
        self.budget.refuse_hung_code(student_code(op, args))
        if self.process is None and not isinstance(self.load_reply, WorkerFailure):
            self.budget.refuse_restart()
        loaded = self.ensure_loaded()
        if not loaded.get("ok"):
            raise StudentError(loaded["error"], loaded.get("notes", []))
        self.budget.refuse_when_out_of_time()
        answer = self._exchange({"op": op, "args": args}, *self.budget.request_limit())
        if self.limits.memory_used_up(answer["memory"]):
            self.stop()  # the next check gets a fresh worker with all its memory
        try:
            return wire.reply(answer, self.limits)
        except WorkerFailure:
            self.stop()
            raise
        except StudentError as error:
            if error.out_of_memory and self.process is not None:
                self.process.out_of_memory = True  # see begin_check
            raise
