"""What the trusted grader and the untrusted worker exchange: op names, each op's request and
reply, and the frames that carry them.

A frame is an 8-byte big-endian length followed by a `torch.save` payload. Only plain data
travels (tensors, numbers, strings, bools, None, lists, tuples, dicts), and both sides load
with `weights_only=True`, so a frame cannot carry code. Each end refuses a frame above its
limit: the worker a request above MAX_REQUEST_BYTES, the grader a reply above the rubric's
`WORKER.reply_bytes` (it passes that limit to decode_length), and a reply whose pickled
structure (all but the tensors' data) is above MAX_STRUCTURE_BYTES.

    request  {"op": str, "args": dict}            the arguments REQUESTS[op] names
    reply    {"ok": True,  "result": REPLIES[op], "notes": [str], "memory": int | None}
             {"ok": False, "error": ERROR, "notes": [str], "memory": int | None}

The worker is the student's process: everything in a reply is a claim. The grader reads a reply
only through sandbox/validation.py, which checks it against the op's schema (schema.py) before
any check sees it and turns anything else into a malformed reply, charged to the submission.
An error's "internal": True is the worker's claim that the kit's own worker code raised
(fault.py); the grader records it for the TA, never takes it as proof (see checks/submission.py).
`memory` is the worker's data size (bytes) once the request is done.

`notes` lists what the worker adapted to make the student's API fit ("forward takes no
`mask` argument: called forward(x)"). The worker never judges: it returns raw numbers.
"""

import io
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from typing import Tuple

import torch

from .schema import (INTEGER, MAX_NDIM, REAL, Flag, Integer, ListOf, MapOf, Maybe, Number, Record,
                     Tensor, Text)


class Op:
    """The worker's operations, named once for both ends: worker/ops registers each under its
    name and the checks reach it only through the function of the same name in
    checks/adapters.py."""

    PREFLIGHT = "preflight"
    LOAD = "load"
    RMSNORM = "rmsnorm"
    ROPE = "rope"
    ATTENTION = "attention"
    ATTENTION_RUNS = "attention_runs"
    TRAINED_ATTENTION = "trained_attention"
    MODEL_RUNS = "model_runs"
    MODEL_API = "model_api"
    TRAIN_EPOCH = "train_epoch"
    CONVERGENCE_TRAIN = "convergence_train"
    CONVERGENCE_PREDICT = "convergence_predict"
    KV_CACHE_DECODE = "kv_cache_decode"
    KV_CACHE_HYPOTHESES = "kv_cache_hypotheses"
    KV_CACHE_SPEED = "kv_cache_speed"


# The student's code each op runs, by the template's names: the grader charges a request that
# timed out to that code, and fails at once every later request whose op runs all of it
# (sandbox/budget.py), while requests that run other code (train_epoch on the kit's spy model,
# RMSNorm alone, attention with the template's RoPE...) still run. The model ops build the
# student's whole DecoderOnlyTransformer; model_api swaps in the kit's attention, RMSNorm and
# FeedForward; the kv_cache ops also run its cached decoding path ("generate").
MODEL_CODE = frozenset({"RMSNorm", "RotaryPositionalEmbedding", "CausalSelfAttention", "FeedForward",
                        "TransformerBlock", "DecoderOnlyTransformer"})
_STUDENT_CODE = {
    Op.RMSNORM: frozenset({"RMSNorm"}),
    Op.ROPE: frozenset({"RotaryPositionalEmbedding"}),
    Op.ATTENTION: frozenset({"CausalSelfAttention", "RotaryPositionalEmbedding"}),
    Op.ATTENTION_RUNS: frozenset({"CausalSelfAttention", "RotaryPositionalEmbedding"}),
    Op.MODEL_RUNS: MODEL_CODE,
    Op.MODEL_API: frozenset({"TransformerBlock", "DecoderOnlyTransformer"}),
    Op.TRAIN_EPOCH: frozenset({"train_epoch"}),
    Op.CONVERGENCE_TRAIN: MODEL_CODE | {"train_epoch"},
    Op.CONVERGENCE_PREDICT: MODEL_CODE,
    Op.TRAINED_ATTENTION: MODEL_CODE,
    Op.KV_CACHE_DECODE: MODEL_CODE | {"generate"},
    Op.KV_CACHE_HYPOTHESES: MODEL_CODE | {"generate"},
    Op.KV_CACHE_SPEED: MODEL_CODE | {"generate"},
}


def student_code(op: str, args: dict) -> frozenset:
    """The names of the student's code a request runs (empty for preflight; the import, `load`,
    is remembered on its own). The template's RoPE standing in (attention, rope="template")
    takes the student's out, as torch.nn.RMSNorm does (model_runs, substitute_norm)."""
    code = _STUDENT_CODE.get(op, frozenset())
    if op == Op.ATTENTION and args.get("rope") == "template":
        code -= {"RotaryPositionalEmbedding"}
    if op == Op.MODEL_RUNS and args.get("substitute_norm"):
        code -= {"RMSNorm"}
    return code


@dataclass(frozen=True)
class Request:
    """The argument names of an op's request: `required`, then `optional` (the handler's
    parameters with defaults). worker/session.op() refuses a handler whose signature differs."""

    required: Tuple[str, ...] = ()
    optional: Tuple[str, ...] = ()

    def problem(self, args: dict) -> str:
        """What is wrong with a request's `args` for this op ('' when nothing is)."""
        missing = [name for name in self.required if name not in args]
        unknown = sorted(set(args) - set(self.required) - set(self.optional))
        return "; ".join(([f"missing {missing}"] if missing else [])
                         + ([f"unexpected {unknown}"] if unknown else []))


REQUESTS = {
    Op.PREFLIGHT: Request((), ("planted",)),
    Op.LOAD: Request(),
    Op.RMSNORM: Request(("dim", "eps", "scale", "x", "grad_out")),
    Op.ROPE: Request(("dim", "max_seq_len", "q", "k")),
    Op.ATTENTION: Request(("dim", "num_heads", "qkv_weight", "out_weight", "x"),
                          ("mask", "train", "grad_out", "per_position_grads", "rope", "dropout",
                           "repeat", "own_weights_fallback")),
    Op.TRAINED_ATTENTION: Request(("tokens",)),
    Op.ATTENTION_RUNS: Request(("dim", "num_heads", "qkv_weight", "out_weight", "runs"),
                               ("own_weights_fallback",)),
    Op.MODEL_RUNS: Request(("config", "seed", "runs"), ("substitute_norm",)),
    Op.MODEL_API: Request(("vocab_size",)),
    Op.TRAIN_EPOCH: Request(("states", "actions", "batch_size", "parameters", "train_offset",
                             "grad_scale", "learning_rate"), ("epoch", "api")),
    Op.CONVERGENCE_TRAIN: Request(("config", "seed", "states", "actions", "batch_size", "epochs",
                                   "learning_rate")),
    Op.CONVERGENCE_PREDICT: Request(("prefixes",)),
    Op.KV_CACHE_DECODE: Request(("config", "seed", "probe", "cases", "greedy")),
    Op.KV_CACHE_HYPOTHESES: Request(("config", "seed", "path", "greedy", "prompt", "new_tokens",
                                     "tokens")),
    Op.KV_CACHE_SPEED: Request(("config", "seed", "path", "greedy", "prompt", "new_tokens")),
}


# -- replies: what each op's "result" holds (the handlers' docstrings say what it means) -------

ERROR = Record({"kind": Text(100), "message": Text(2000), "line": Maybe(Integer()),
                "where": Text(500)}, optional={"internal": Flag()})
NOTES = ListOf(Text(500), max_items=20, clip=True)
MEMORY = Maybe(Integer())
GRADIENTS = ListOf(Maybe(Tensor()), max_items=64)
MANY = 100_000  # a list's items where the count is the submission's (steps, positions)
RUNS = 256  # runs of one module in one causal request (checks/causality.py sends at most ~40)

# What an optimizer step reports of its optimizer's first parameter group (ops/training.py).
_HYPERPARAMETERS = Record({}, optional={
    "lr": Number(), "momentum": Number(), "dampening": Number(), "weight_decay": Number(),
    "nesterov": Flag(), "betas": ListOf(Number(), max_items=4), "eps": Number(),
    "amsgrad": Flag(), "maximize": Flag()})
_STAND_IN_PARAMETERS = ListOf(Tensor(), max_items=3)  # [embedding, head, bias]
_OPTIMIZER_STEP = Record({"optimizer": Text(100), "given": Flag(), "holds_model": Flag(),
                          "hyper": _HYPERPARAMETERS, "had_grads": Flag(), "backwards": Integer(),
                          "before": _STAND_IN_PARAMETERS, "after": _STAND_IN_PARAMETERS},
                         optional={"grad_norm_after": Maybe(Number())})
_DECODED = Record({
    "error": Maybe(ERROR), "tokens": Maybe(Tensor(REAL)), "logits_source": Maybe(Text()),
    "layers_sharing_an_argument": Integer(),
    "fresh_model": Maybe(Record({"error": Maybe(ERROR), "tokens": Maybe(Tensor(REAL))})),
    "prefill_logits": Maybe(Tensor()), "step_logits": Maybe(Tensor()),
    "embedded": ListOf(Integer(), MANY), "attended": ListOf(Integer(), MANY),
    "prefill_attention": Maybe(Tensor()), "full_tokens": Tensor(INTEGER), "full_logits": Tensor(),
    "full_prompt_logits": Maybe(Tensor()), "full_prompt_attention": Maybe(Tensor())})

REPLIES = {
    Op.PREFLIGHT: Record({"python": Text(), "torch": Text(), "cuda": Maybe(Text()),
                          "confinement": Record({
                              "installed": MapOf(Text(100), Text(500), max_items=8),
                              "landlock_abi": Maybe(Integer()),
                              "sockets": MapOf(Text(100), Text(100), max_items=8),
                              "planted": Text(500)})}),
    Op.LOAD: Record({"seconds": Number(), "names": MapOf(Text(100), Text(500), max_items=64)}),
    Op.RMSNORM: Record({"out": Tensor(), "grad_x": Maybe(Tensor()), "grad_scale": Maybe(Tensor()),
                        "scale_is_parameter": Flag(),
                        "scale_shape": ListOf(Integer(), max_items=MAX_NDIM)}),
    Op.ROPE: Record({"q": Tensor(), "k": Tensor()}),
    Op.ATTENTION: Record({"out": Tensor(), "own_weights": Flag()},
                         optional={"again": Tensor(), "grad_x": Tensor(), "rows": Tensor(),
                                   "rope": Text(20), "rope_not_substituted": Text(300)}),
    Op.TRAINED_ATTENTION: Record({"weights": Tensor(), "source": Text(20)}),
    Op.ATTENTION_RUNS: Record({"outs": ListOf(Tensor(), max_items=RUNS), "own_weights": Flag()}),
    Op.MODEL_RUNS: Record({"logits": ListOf(Tensor(), max_items=RUNS)}),
    Op.MODEL_API: Record({"plain": Integer(), "trained": Integer(), "loss_at": Maybe(Integer()),
                          "targets": Maybe(Text(100)), "shifts": Flag(),
                          "ignore_index": Maybe(Integer())}),
    Op.TRAIN_EPOCH: Record({"steps": ListOf(_OPTIMIZER_STEP, max_items=MANY), "backwards": Integer(),
                            "end": _STAND_IN_PARAMETERS, "returned": Maybe(Number()),
                            "returned_type": Text(100)}),
    Op.CONVERGENCE_TRAIN: Record({"epoch_losses": ListOf(Maybe(Number()), max_items=1000),
                                  "epoch_cpu_seconds": ListOf(Number(), max_items=1000),
                                  "step_losses": ListOf(Number(), max_items=MANY)}),
    Op.CONVERGENCE_PREDICT: Record({"logits": Tensor()}),
    Op.KV_CACHE_DECODE: Record(
        {"found": Flag(), "searched": ListOf(Record({
            "path": Text(), "error": Maybe(ERROR), "lengths": ListOf(Integer(), MANY),
            "cached": Flag(), "layers_sharing_an_argument": Integer()}), max_items=64)},
        optional={"path": Text(), "call": Text(), "greedy": Flag(),
                  "cases": ListOf(_DECODED, max_items=64)}),
    Op.KV_CACHE_HYPOTHESES: Record(
        {"rope_modules": Integer()},
        optional={"without_rope": Record({"error": Maybe(ERROR), "tokens": Maybe(Tensor(REAL)),
                                          "step_logits": Maybe(Tensor()),
                                          "full_tokens": Tensor(INTEGER),
                                          "full_logits": Tensor()}),
                  "position_zero": Record({"calls": Integer(), "logits": Tensor()})}),
    Op.KV_CACHE_SPEED: Record({"cached_seconds": Number(), "full_seconds": Number()}),
}

# Bounds on decoding one reply, whatever its schema: the bytes of its pickled structure (the
# reference's largest is 3.3 kB, convergence_train's 10,000 step losses at most ~90 kB; 200 kB
# of nested lists took 6.4 s to check and unpickle on a shared 2-core machine under heavy load,
# and the worker's time budget bounds how many replies there are), a tuple's items counted as a
# tree (_check_tuples), the objects the grader walks and the seconds the walk may take (its
# depth is the schema's).
MAX_STRUCTURE_BYTES = 256 * 1024
MAX_OBJECTS = 200_000
MAX_TUPLE_ITEMS = 10_000
REPLY_SECONDS = 10.0

# The largest request the worker reads (the grader's largest, the convergence data, is ~3 MB).
MAX_REQUEST_BYTES = 256 * 2**20
_HEADER = struct.Struct(">Q")


class ProtocolError(Exception):
    """A frame that is too large, truncated or not plain data."""


def encode(message) -> bytes:
    buffer = io.BytesIO()
    try:
        torch.save(message, buffer)
    except Exception as error:  # e.g. a student object that is not plain data
        raise ProtocolError(f"message is not plain data: {error}") from error
    payload = buffer.getvalue()
    return _HEADER.pack(len(payload)) + payload


def decode_length(header: bytes, limit: int) -> int:
    """The payload length a frame's header announces; ProtocolError above `limit` bytes."""
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise ProtocolError(f"a frame of {length / 2**20:.0f} MB, above the {limit // 2**20} MB limit")
    return length


def _check_archive(payload: bytes) -> None:
    """Raises ProtocolError unless `payload` is torch.save's zip archive, uncompressed, whose
    pickled structure is within MAX_STRUCTURE_BYTES: so that unpickling it is bounded."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ProtocolError(f"not torch.save's archive ({error})") from None
    if any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
        raise ProtocolError("a compressed entry in the archive")
    if sum(entry.file_size for entry in entries) > len(payload):
        raise ProtocolError("the archive's entries claim more bytes than it holds")
    structure = [entry for entry in entries if entry.filename.endswith("/data.pkl")]
    if len(structure) != 1:
        raise ProtocolError("not torch.save's archive (no single data.pkl)")
    if structure[0].file_size > MAX_STRUCTURE_BYTES:
        raise ProtocolError(f"a structure of {structure[0].file_size // 1024} kB (all but the "
                            f"tensors' data), above the {MAX_STRUCTURE_BYTES // 1024} kB limit")
    _check_tuples(io.BytesIO(payload), structure[0])


_TUPLES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def _check_tuples(file, entry) -> None:
    """Raises ProtocolError when a tuple in the pickle, counted as a tree (a tuple memoised once
    and referenced twice counts twice), holds more than MAX_TUPLE_ITEMS items. Unpickling hashes
    tuples (dict keys) and hashing walks that tree: 40 levels of a tuple holding the one below
    twice take a few hundred bytes and forever to hash. A dry run over the opcodes tracks each
    stack item's tree size (1 for anything but a tuple)."""
    with zipfile.ZipFile(file) as archive:
        pickled = archive.read(entry)
    stack, marks, memo = [], [], {}
    try:
        for opcode, arg, _ in pickletools.genops(pickled):
            name = opcode.name
            if name == "MARK":
                marks.append(len(stack))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name in _TUPLES or name == "TUPLE":
                start = marks.pop() if name == "TUPLE" else len(stack) - _TUPLES[name]
                size = 1 + sum(stack[start:])
                if size > MAX_TUPLE_ITEMS:
                    raise ProtocolError(f"a tuple of more than {MAX_TUPLE_ITEMS} items")
                del stack[start:]
                stack.append(size)
            else:
                before = opcode.stack_before
                if pickletools.markobject in before:
                    del stack[marks.pop():]
                    before = before[:before.index(pickletools.markobject)]
                if before:
                    if len(before) > len(stack):
                        raise IndexError("stack underflow")
                    del stack[-len(before):]
                stack.extend([1] * len(opcode.stack_after))
    except (ValueError, IndexError, KeyError) as error:
        raise ProtocolError(f"not a well-formed pickle ({error})") from None


def decode(payload: bytes, bounded: bool = False):
    """The message in a frame's payload. `bounded` (the grader, reading a reply) first checks
    that unpickling it is bounded (_check_archive)."""
    if bounded:
        _check_archive(payload)
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as error:  # any unpickling failure means the peer sent something other than data
        raise ProtocolError(f"frame is not plain data: {error}") from error


HEADER_BYTES = _HEADER.size


def read_frame(stream):
    """Blocking read of one frame from a binary stream (used by the worker)."""
    header = stream.read(HEADER_BYTES)
    if not header:
        raise EOFError
    if len(header) < HEADER_BYTES:
        raise ProtocolError("truncated frame header")
    length = decode_length(header, MAX_REQUEST_BYTES)
    payload = stream.read(length)
    if len(payload) < length:
        raise ProtocolError("truncated frame")
    return decode(payload)


def memory_limit_text(limit_bytes: int) -> str:
    """The worker's memory limit in a sentence for the student, in the same words from both ends:
    the grader's failure messages (sandbox/limits.py) and a MemoryError's (worker/session.py)."""
    return (f"while it is graded, your code may use at most {limit_bytes // 2**20} MB of memory, "
            "torch's own ~250 MB included")


def write_frame(stream, message) -> None:
    stream.write(encode(message))
    stream.flush()
