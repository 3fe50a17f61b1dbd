"""One request and its reply over the worker's pipes (frames of ..worker.protocol), under a
wall-clock deadline, and what the reply means: a Reply, or StudentError, GraderError,
WorkerFailure (errors.py)."""

import os
import selectors
import time
from dataclasses import dataclass, field

from ..worker import protocol
from .errors import GraderError, StudentError, WorkerFailure
from .limits import Limits
from .process import WorkerProcess


@dataclass
class Reply:
    result: dict  # the op's result (tensors, numbers...)
    notes: list = field(default_factory=list)  # what the worker adapted or noticed, for the student


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


def exchange(process: WorkerProcess, request: dict, seconds: float, what: str):
    """Send `request` and return the decoded reply, the two within `seconds` of wall-clock time;
    `what` names that limit in the timeout's message. Raises WorkerFailure: "timeout", "protocol"
    (a malformed frame, or one above limits.reply_bytes), or why the worker ended (process.ended)
    when it closed its pipes. The caller stops the worker after any of them."""
    deadline = time.monotonic() + seconds
    _write(process, protocol.encode(request), deadline, what)
    header = _read(process, protocol.HEADER_BYTES, deadline, what)
    try:
        length = protocol.decode_length(header, process.limits.reply_bytes)
        return protocol.decode(_read(process, length, deadline, what))
    except protocol.ProtocolError as error:
        raise WorkerFailure("protocol", f"the worker sent a malformed reply ({error})")


def reply(answer, limits: Limits) -> Reply:
    """The Reply of an op's answer ({"ok", "result" | "error", "notes", "memory"}), or raises:
    WorkerFailure "protocol" (the wrong shape) or "memory" (it succeeded but left the worker at
    its memory limit), GraderError (a fault of the kit's own), StudentError (the
    student's code raised)."""
    if not isinstance(answer, dict) or "ok" not in answer:
        raise WorkerFailure("protocol", "the worker sent a reply of the wrong shape")
    notes = [str(note)[:500] for note in answer.get("notes", [])][:20]
    if limits.memory_used_up(answer.get("memory")):
        if answer["ok"]:
            raise WorkerFailure("memory", f"your code used up its memory: when the request "
                                          f"ended it held {answer['memory'] // 2**20} MB and "
                                          "could not go on (" + limits.memory_text() +
                                          "); memory kept alive between calls, such as "
                                          "tensors appended to a global list, is the usual cause")
        notes.append("your code used up its memory in this request (" + limits.memory_text() + ")")
    if not answer["ok"]:
        error = answer.get("error") or {}
        if isinstance(error, dict) and error.get("internal") is True:
            raise GraderError(error)
        raise StudentError(error, notes)
    return Reply(result=answer.get("result") or {}, notes=notes)
