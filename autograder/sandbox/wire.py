"""One request and its reply over the worker's pipes (frames of ..worker.protocol), under a
wall-clock deadline, and what the reply means: a Reply, or StudentError, WorkerFailure
(errors.py). A reply is read only through validation.py: decoded within bounds, checked against
its op's schema, and anything else is a malformed reply, the submission's failure."""

import os
import selectors
import time
from dataclasses import dataclass, field

from ..worker import protocol
from .errors import StudentError, WorkerFailure
from .limits import Limits
from .process import WorkerProcess
from .validation import MalformedReply, reply as validated


@dataclass
class Reply:
    result: dict  # the op's result (tensors, numbers...)
    notes: list = field(default_factory=list)  # what the worker says it adapted: its claims
    observed: list = field(default_factory=list)  # what the grader noticed of the request


MALFORMED = "your code's process returned a reply the grader cannot accept"


def malformed(why: str) -> WorkerFailure:
    """The failure of a request whose reply the grader cannot accept, charged to the submission:
    only its process wrote the reply (its code can reach the worker's own modules)."""
    return WorkerFailure("malformed", f"{MALFORMED}: {why}")


def _timed_out(what: str):
    raise WorkerFailure("timeout", f"no answer within {what} (an infinite loop, a sleep, or "
                                   "far too slow code)")


def _write(process: WorkerProcess, data: bytes, deadline: float, what: str) -> None:
    view = memoryview(data)
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdin, selectors.EVENT_WRITE)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                _timed_out(what)  # the worker stopped reading its requests
            try:
                view = view[os.write(process.stdin, view):]
            except BlockingIOError:
                continue
            except OSError:  # the worker is gone (EPIPE)
                raise process.ended()


def _read(process: WorkerProcess, count: int, deadline: float, what: str) -> bytes:
    chunks, remaining = [], count
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                _timed_out(what)
            chunk = os.read(process.stdout, min(remaining, 1 << 20))
            if not chunk:
                raise process.ended()
            chunks.append(chunk)
            remaining -= len(chunk)
    return b"".join(chunks)


def _unasked(process: WorkerProcess) -> str:
    """What the worker has written that nobody asked for yet: "data", "end" (it closed its
    output: it ended) or "" (nothing)."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(0):
            return ""
    return "data" if os.read(process.stdout, 1) else "end"


def exchange(process: WorkerProcess, request: dict, seconds: float, what: str) -> dict:
    """Send `request` and return its reply, decoded and validated (validation.reply), the two
    within `seconds` of wall-clock time; `what` names that limit in the timeout's message.
    Raises WorkerFailure: "timeout"; "protocol" (a frame that is not one: truncated, above
    limits.reply_bytes, not plain data; or a frame nobody asked for); "malformed" (one whole
    frame, alone, that does not fit the op's schema); or why the worker ended (process.ended)
    when it closed its pipes. The caller stops the worker after any of them but "malformed",
    after which the two ends still agree on where the next frame starts."""
    deadline = time.monotonic() + seconds
    unasked = _unasked(process)
    if unasked == "end":
        raise process.ended()
    if unasked:
        raise WorkerFailure("protocol", f"{MALFORMED}: it sent a frame before the grader's "
                                        "request (an extra reply)")
    _write(process, protocol.encode(request), deadline, what)
    header = _read(process, protocol.HEADER_BYTES, deadline, what)
    try:
        length = protocol.decode_length(header, process.limits.reply_bytes)
        answer = protocol.decode(_read(process, length, deadline, what), bounded=True)
    except protocol.ProtocolError as error:
        raise WorkerFailure("protocol", f"{MALFORMED}: a malformed frame ({error})")
    try:
        answer = validated(answer, request["op"])
    except MalformedReply as error:
        raise malformed(str(error))
    if _unasked(process) == "data":  # an end is the next request's to report
        raise WorkerFailure("protocol", f"{MALFORMED}: it sent more than one reply to one request")
    return answer


def reply(answer: dict, limits: Limits) -> Reply:
    """The Reply of a validated answer (exchange), or raises: WorkerFailure "memory" (it
    succeeded but left the worker at its memory limit), StudentError (the student's code
    raised, or the worker claimed a fault of the kit's own: a claim, see checks/submission.py)."""
    notes, observed = answer["notes"], []
    if limits.memory_used_up(answer["memory"]):
        if answer["ok"]:
            raise WorkerFailure("memory", f"your code used up its memory: when the request "
                                          f"ended it held {answer['memory'] // 2**20} MB and "
                                          "could not go on (" + limits.memory_text() +
                                          "); memory kept alive between calls, such as "
                                          "tensors appended to a global list, is the usual cause")
        observed.append("your code used up its memory in this request (" + limits.memory_text() + ")")
    if not answer["ok"]:
        raise StudentError(answer["error"], notes, observed)
    return Reply(result=answer["result"], notes=notes, observed=observed)
