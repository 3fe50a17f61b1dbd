"""The worker's request loop: import the submission once, then answer ops with raw tensors.

This is the only place the student's code runs. Ops are registered by the modules in
`worker/ops/`; each gets the imported submission and the request's arguments and returns a dict
of plain data. Any exception becomes an error reply that names the line of backbone.py where it
happened, so the grader can tell the student where to look.
"""

import importlib
import inspect
import resource
import sys
import time
import traceback

import torch

from . import adapt, eager_dynamo, protocol
from .stubs import import_with_stubs

OPS = {}
REQUIRED_NAMES = (
    "RMSNorm", "RotaryPositionalEmbedding", "CausalSelfAttention", "FeedForward",
    "TransformerBlock", "DecoderOnlyTransformer", "train_epoch",
)


def op(name):
    """Register a function `f(session, **args) -> dict` as the handler of op `name`."""
    def register(function):
        OPS[name] = function
        return function
    return register


class Session:
    def __init__(self):
        self.module = None
        self.notes = []
        self.state = {}  # objects kept between ops (e.g. a trained model), keyed by the op that made them

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def require(self, name: str):
        if self.module is None:
            raise RuntimeError("backbone.py has not been imported")
        if not hasattr(self.module, name):
            raise MissingName(name)
        return getattr(self.module, name)


class MissingName(Exception):
    def __init__(self, name):
        super().__init__(f"backbone.py does not define `{name}`")
        self.name = name


@op("load")
def load(session: Session) -> dict:
    start = time.perf_counter()
    with adapt.script_code_tolerated(session, "backbone", REQUIRED_NAMES):
        session.module, stubbed = import_with_stubs("backbone")
    for name in stubbed:
        session.note(f"`import {name}` failed in the grading environment: it was replaced by a stub "
                     "(fine as long as the graded code does not use it)")
    names = {}
    for name in REQUIRED_NAMES:
        value = getattr(session.module, name, None)
        if value is None:
            names[name] = "missing"
            continue
        kind = "class" if inspect.isclass(value) else "function" if callable(value) else "other"
        try:
            signature = str(inspect.signature(value))
        except (TypeError, ValueError):
            signature = "?"
        names[name] = f"{kind} {name}{signature}"
    return {"seconds": time.perf_counter() - start, "names": names}


def describe_error(error: BaseException) -> dict:
    """Kind, message and the deepest backbone.py line involved, for the grader's message."""
    if isinstance(error, SyntaxError) and (error.filename or "").endswith("backbone.py"):
        return {"kind": "SyntaxError", "message": error.msg, "line": error.lineno,
                "where": (error.text or "").strip()}
    line, where = None, ""
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.endswith("backbone.py"):
            line, where = frame.lineno, f"in {frame.name}: {(frame.line or '').strip()}"
    kind = "MissingName" if isinstance(error, MissingName) else type(error).__name__
    message = str(error)[:2000]
    if isinstance(error, MemoryError) or "can't allocate memory" in message:
        limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
        if limit != resource.RLIM_INFINITY:
            message += (f" [while it is graded, your code may use at most {limit // 2**20} MB "
                        "of memory, torch's own ~250 MB included]")
    return {"kind": kind, "message": message, "line": line, "where": where}


def data_bytes():
    """The process's data size (VmData, what RLIMIT_DATA bounds), or None if unreadable."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def handle(session: Session, request) -> dict:
    session.notes = []
    try:
        if not isinstance(request, dict) or request.get("op") not in OPS:
            raise ValueError(f"unknown request {request!r:.200}")
        result = OPS[request["op"]](session, **request.get("args", {}))
        reply = {"ok": True, "result": result, "notes": list(session.notes)}
    except BaseException as error:  # SystemExit and KeyboardInterrupt from student code included
        reply = {"ok": False, "error": describe_error(error), "notes": list(session.notes)}
    reply["memory"] = data_bytes()  # what the code keeps after the request: the grader judges
    return reply


def serve(frames_in, frames_out) -> None:
    # One thread makes CPU kernels deterministic. torch.use_deterministic_algorithms would add
    # nothing on the CPU and costs 3 s per worker start (it imports torch._inductor).
    torch.set_num_threads(1)
    eager_dynamo.install()
    importlib.import_module("worker.ops")
    session = Session()
    while True:
        try:
            request = protocol.read_frame(frames_in)
        except EOFError:
            return
        reply = handle(session, request)
        try:
            protocol.write_frame(frames_out, reply)
        except protocol.ProtocolError:
            protocol.write_frame(frames_out, {"ok": False, "notes": [], "error": {
                "kind": "BadOutput", "message": "the result could not be sent back as plain tensors",
                "line": None, "where": ""}})
        sys.stdout.flush()
