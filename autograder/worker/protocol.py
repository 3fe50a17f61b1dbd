"""Frames exchanged by the trusted grader and the untrusted worker.

A frame is an 8-byte big-endian length followed by a `torch.save` payload. Only plain data
travels (tensors, numbers, strings, bools, None, lists, tuples, dicts), and both sides load
with `weights_only=True`, so a frame cannot carry code. Frames above MAX_FRAME_BYTES are refused.

    request  {"op": str, "args": dict}
    reply    {"ok": True,  "result": dict, "notes": [str], "memory": int | None}
             {"ok": False, "error": {"kind": str, "message": str, "line": int | None,
                                     "where": str, "internal": bool (optional)}, "notes": [str],
              "memory": int | None}

An error with "internal": True is the grader's own: the request named no op or did not fit the
op's signature. Any other error is the student's code raising. `memory` is the worker's data
size (bytes) once the request is done, so the grader can tell a submission that kept all its
memory from one that did not.

`notes` lists what the worker adapted to make the student's API fit ("forward takes no
`mask` argument: called forward(x)"). The worker never judges: it returns raw numbers.
"""

import io
import struct

import torch


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
    MODEL_LOGITS = "model_logits"
    MODEL_RUNS = "model_runs"
    MODEL_API = "model_api"
    TRAIN_EPOCH = "train_epoch"
    CONVERGENCE_TRAIN = "convergence_train"
    CONVERGENCE_PREDICT = "convergence_predict"
    KV_CACHE_DECODE = "kv_cache_decode"
    KV_CACHE_HYPOTHESES = "kv_cache_hypotheses"
    KV_CACHE_SPEED = "kv_cache_speed"

MAX_FRAME_BYTES = 256 * 1024 * 1024
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


def decode_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return length


def decode(payload: bytes):
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
    length = decode_length(header)
    payload = stream.read(length)
    if len(payload) < length:
        raise ProtocolError("truncated frame")
    return decode(payload)


def write_frame(stream, message) -> None:
    stream.write(encode(message))
    stream.flush()
