"""The worker's request loop: import the submission once, then answer ops with raw tensors.

This is the only place the student's code runs. Ops are registered by the modules in
`worker/ops/`; each gets the imported submission and the request's arguments and returns a dict
of plain data. Any exception becomes an error reply that names the line of backbone.py where it
happened, so the grader can tell the student where to look; a request that does not fit an op,
or an exception of the kit's own code (fault.py says which), gets an error reply marked
`internal`: for the TA, since the grader takes no reply of this process as proof of whose fault
a failure is (checks/submission.py). Code that asks for CUDA on a machine without it is retried
with CUDA mapped to the CPU (devices.py).
"""

import contextlib
import gc
import importlib
import inspect
import resource
import sys
import time
import traceback

import torch

from . import devices, eager_dynamo, fault, protocol, stubs
from .adapt.script_code import script_code_tolerated
from .confine import probe
from .protocol import Op

OPS = {}
REQUIRED_NAMES = (
    "RMSNorm", "RotaryPositionalEmbedding", "CausalSelfAttention", "FeedForward",
    "TransformerBlock", "DecoderOnlyTransformer", "train_epoch",
)


def op(name):
    """Register `run_<name>(session, **args) -> dict` as the handler of op `name` (a protocol.Op
    value); its docstring says what the dict holds (protocol.REPLIES[name] is its schema). Its
    parameters must be protocol.REQUESTS[name]'s (a TypeError at import otherwise, so a worker
    whose ops drift from the protocol fails its preflight)."""
    def register(function):
        parameters = list(inspect.signature(function).parameters.values())[1:]
        declared = protocol.REQUESTS[name]
        required = tuple(p.name for p in parameters if p.default is p.empty)
        optional = tuple(p.name for p in parameters if p.default is not p.empty)
        if (required, optional) != (declared.required, declared.optional):
            raise TypeError(f"op {name!r}: {function.__name__} takes {required} and {optional}, "
                            f"protocol.REQUESTS says {declared}")
        OPS[name] = function
        return function
    return register


class Session:
    def __init__(self):
        self.module = None
        self.notes = []
        self.state = {}  # objects kept between ops (e.g. a trained model), keyed by the op that made them
        self.cuda_on_cpu = None  # a devices.CudaOnCpu once the code asked for a missing GPU

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def require(self, name: str):
        if self.module is None:
            raise BadRequest("backbone.py has not been imported")
        if not hasattr(self.module, name):
            raise MissingName(name)
        return getattr(self.module, name)


class MissingName(Exception):
    does_not_fit = True  # fault.py: the submission lacks a name the template defines

    def __init__(self, name):
        super().__init__(f"backbone.py does not define `{name}`")
        self.name = name


@op(Op.PREFLIGHT)
def run_preflight(session: Session, planted: str = "") -> dict:
    """Proof, before the submission is imported, that this interpreter runs torch under the
    worker's limits (the grader sends it first to every fresh worker; see sandbox/client.py),
    and what of its confinement held, with an attempt to read `planted`, a file the grader put
    out of its reach. Returns {"python": version, "torch": version, "cuda": torch's CUDA
    version or None, "confinement": confine.probe.report(planted)}."""
    product = float(torch.ones(8) @ torch.ones(8))
    if product != 8.0:
        raise RuntimeError(f"torch computes ones(8) @ ones(8) = {product}")
    return {"python": sys.version.split()[0], "torch": str(torch.__version__),
            "cuda": torch.version.cuda, "confinement": probe.report(planted)}


class BadRequest(Exception):
    """A request that names no op, whose arguments do not fit the op's signature, or that the
    worker cannot answer in its state (an op before the import, a prediction before training):
    a bug of the grader that sent it, reported as such, never as the student's error."""


@op(Op.LOAD)
def run_load(session: Session) -> dict:
    """Import the submission (stubs.py for missing packages, script code tolerated). Returns
    {"seconds": the import's wall-clock seconds, "names": {each required name: "missing" or
    "class Name(signature)" / "function name(signature)" / "other name..."}}."""
    start = time.perf_counter()
    own_builtins = stubs.student_builtins(
        lambda statement, missing: session.note(stubs.describe(statement, missing)))
    with script_code_tolerated(session, "backbone", REQUIRED_NAMES, {"__builtins__": own_builtins}):
        session.module = importlib.import_module("backbone")
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
    """Kind, message and the deepest backbone.py line involved, for the grader's message;
    with "internal": True and the kit's line in the message when the kit's own code raised it
    (fault.is_internal)."""
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
            message += f" [{protocol.memory_limit_text(limit)}]"
    described = {"kind": kind, "message": message, "line": line, "where": where}
    if fault.is_internal(error):
        described.update(internal=True, message=f"the grader's worker code raised {kind} at "
                                                f"{fault.kit_location(error)}: {message}")
    return described


def _checked(request):
    """(op function, arguments) of a well-formed request; raises BadRequest otherwise."""
    if not isinstance(request, dict) or request.get("op") not in OPS:
        raise BadRequest(f"the worker has no op for the request {request!r:.200}")
    function, args = OPS[request["op"]], request.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest(f"op `{request['op']}` got arguments {args!r:.200}, not a dict")
    signature = inspect.signature(function)
    try:
        signature.bind(None, **args)
    except TypeError as error:
        parameters = list(signature.parameters)[1:]
        unexpected = sorted(set(args) - set(parameters))
        raise BadRequest(f"op `{request['op']}` cannot take the arguments it was sent "
                         f"({error}; unexpected: {unexpected}); it is "
                         f"{function.__name__}{signature}") from None
    return function, args


def _run(session: Session, function, args: dict) -> dict:
    """The op's result; on code asking for a GPU this machine lacks, CUDA is mapped to the CPU
    from then on (devices.py) and the op runs once more."""
    try:
        with session.cuda_on_cpu or contextlib.nullcontext():
            return function(session, **args)
    except Exception as error:  # retried only when it is a missing GPU
        if session.cuda_on_cpu is not None or not devices.wants_missing_cuda(error):
            raise
    session.cuda_on_cpu = devices.CudaOnCpu()
    session.notes = []
    with session.cuda_on_cpu:
        return function(session, **args)


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
    if session.cuda_on_cpu is not None:
        session.cuda_on_cpu.remapped.clear()
    try:
        function, args = _checked(request)
    except BadRequest as error:
        return {"ok": False, "notes": [], "error": {
            "kind": "BadRequest", "message": str(error), "line": None, "where": "", "internal": True},
            "memory": data_bytes()}
    try:
        result = _run(session, function, args)
        reply = {"ok": True, "result": result}
    except BaseException as error:  # SystemExit and KeyboardInterrupt from student code included
        reply = {"ok": False, "error": describe_error(error)}
    if session.cuda_on_cpu is not None and session.cuda_on_cpu.note():
        session.note(session.cuda_on_cpu.note())
    # what the code keeps after the request: the grader judges whether it used up its memory
    return dict(reply, notes=list(session.notes), memory=data_bytes())


def serve(frames_in, frames_out) -> None:
    # One thread makes CPU kernels deterministic. torch.use_deterministic_algorithms would add
    # nothing on the CPU and costs 3 s per worker start (it imports torch._inductor).
    torch.set_num_threads(1)
    eager_dynamo.install()
    importlib.import_module("worker.ops")
    # What is loaded by now lives as long as the worker: loaded with the collector off (see
    # __main__.py) and frozen out of its reach, so no full collection walks torch's ~1M objects
    # (0.1 CPU-s per worker start measured, bench/SPEED.md). The submission's objects are collected
    # as usual.
    gc.freeze()
    gc.enable()
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
