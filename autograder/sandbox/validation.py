"""The grader's receipt of a decoded reply: checked against the op's schema (worker/protocol.py,
in the words of worker/schema.py) before any check reads it, and rebuilt from fresh objects.

What comes back holds only what the schema names: plain dicts, lists, str (cut to their
limit), int, float, bool, None, and tensors copied into fresh contiguous CPU tensors of the
same values, every floating-point one as float32 (RECEIVED_FLOAT): the dtype the reference and
the checks compute in, so an honest float64 or bfloat16 output is judged by its values (float64
rounds to float32 within 6e-8 relative, far inside the rubric's tightest tolerance, 1e-5) and no
check meets a dtype it does not compute in. Shapes are not the schema's: they follow from the
request, and checks/adapters.py checks them. Anything else (a missing or unknown key, another type, a sparse, meta, quantized,
complex or expanded tensor, two fields sharing one object or one storage, too many objects,
too deep, too slow to read) raises MalformedReply, which the caller charges to the submission:
only the submission's process could have produced it.
"""

import time

import torch

from ..worker import protocol
from ..worker.schema import (FLOATING, INTEGER, REAL, Flag, Integer, ListOf, MapOf, Maybe, Number,
                             Record, Tagged, Tensor, Text)

_DTYPES = {
    FLOATING: (torch.float16, torch.bfloat16, torch.float32, torch.float64),
    INTEGER: (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool),
}
_DTYPES[REAL] = _DTYPES[FLOATING] + _DTYPES[INTEGER]
_INT64 = (-2**63, 2**63 - 1)
RECEIVED_FLOAT = torch.float32


class MalformedReply(Exception):
    """A reply that does not fit its op's schema or the bounds on reading one; says where and
    why ("result.out: a torch.sparse_coo tensor, expected a dense CPU tensor")."""


class _Receipt:
    """One reply's walk: the objects met so far (each container or tensor at most once), their
    count, and the deadline. The walk follows the schema, so it goes no deeper than the schema
    does: a value nested deeper is refused at the first level where its type is wrong."""

    def __init__(self, max_objects: int, seconds: float):
        self.seen = set()  # ids of the containers and tensors met (kept alive by the reply)
        self.storages = set()
        self.objects = 0
        self.max_objects = max_objects
        self.deadline = time.monotonic() + seconds

    def visit(self, value, where: str) -> None:
        self.objects += 1
        if self.objects > self.max_objects:
            raise MalformedReply(f"more than {self.max_objects} objects")
        if self.objects % 1024 == 0 and time.monotonic() > self.deadline:
            raise MalformedReply("it took the grader too long to read")
        if isinstance(value, (list, dict, torch.Tensor)):
            if id(value) in self.seen:
                raise MalformedReply(f"{where}: the same object as another field (a shared "
                                     "structure)")
            self.seen.add(id(value))

    def accept(self, value, schema, where: str):
        if type(schema) is Maybe:
            if value is None:
                return None
            schema = schema.of
        self.visit(value, where)
        kind = type(schema)
        if kind is Text:
            _require(type(value) is str, where, value, "a str")
            return value[:schema.max_chars]
        if kind is Integer:
            _require(type(value) is int and _INT64[0] <= value <= _INT64[1], where, value,
                     "an integer")
            return value
        if kind is Number:
            _require(type(value) in (int, float), where, value, "a number")
            _require(type(value) is float or _INT64[0] <= value <= _INT64[1], where, value,
                     "a number")
            return float(value)
        if kind is Flag:
            _require(type(value) is bool, where, value, "True or False")
            return value
        if kind is Tensor:
            return self.tensor(value, schema, where)
        if kind is ListOf:
            _require(type(value) is list, where, value, "a list")
            items = value
            if len(items) > schema.max_items:
                _require(schema.clip, where, value, f"at most {schema.max_items} items")
                items = items[:schema.max_items]
            return [self.accept(item, schema.item, f"{where}[{index}]")
                    for index, item in enumerate(items)]
        if kind is MapOf:
            _require(type(value) is dict and len(value) <= schema.max_items, where, value,
                     f"a dict of at most {schema.max_items} items")
            return {self.accept(key, schema.key, f"{where} key"):
                    self.accept(item, schema.value, f"{where}[{key!r:.40}]")
                    for key, item in value.items()}
        if kind is Tagged:
            _require(type(value) is dict and type(value.get(schema.tag)) is str
                     and value[schema.tag] in schema.variants, where, value,
                     f"a dict whose {schema.tag!r} is one of {sorted(schema.variants)}")
            return self.record(value, schema.variants[value[schema.tag]], where)
        if kind is Record:
            return self.record(value, schema, where)
        raise TypeError(f"not a schema: {schema!r}")  # a bug of protocol.py

    def record(self, value, schema: Record, where: str) -> dict:
        _require(type(value) is dict, where, value, "a dict")
        keys = set(value)
        missing = sorted(set(schema.fields) - keys)
        unknown = sorted(_key_words(key) for key in keys - set(schema.fields) - set(schema.optional))
        if missing or unknown:
            raise MalformedReply(f"{where or 'the reply'}: " + "; ".join(
                ([f"missing {missing}"] if missing else []) + ([f"unknown keys {', '.join(unknown)}"] if unknown else [])))
        fields = {**schema.fields, **schema.optional}
        return {key: self.accept(item, fields[key], f"{where}.{key}" if where else key)
                for key, item in value.items()}

    def tensor(self, value, schema: Tensor, where: str) -> torch.Tensor:
        """A fresh contiguous copy of `value` (float32 when floating), once it is a dense CPU tensor of the schema's
        dtype class and rank whose storage no other field shares and whose elements each have
        their own place in it (no stride 0, no overlap): a copy is then no larger than what the
        frame carried."""
        _require(type(value) in (torch.Tensor, torch.nn.Parameter), where, value, "a tensor")
        for odd, what in ((value.layout != torch.strided, f"a {value.layout} tensor"),
                          (value.is_nested, "a nested tensor"),
                          (value.is_quantized, "a quantized tensor"),
                          (value.device.type != "cpu", f"a tensor on device {value.device.type}")):
            if odd:
                raise MalformedReply(f"{where}: {what}, expected a dense CPU tensor")
        if value.dtype not in _DTYPES[schema.dtypes]:
            raise MalformedReply(f"{where}: a tensor of dtype {value.dtype}, expected "
                                 f"{_DTYPE_WORDS[schema.dtypes]}")
        if not schema.min_ndim <= value.dim() <= schema.max_ndim:
            raise MalformedReply(f"{where}: a tensor of {value.dim()} dimensions, expected "
                                 f"{schema.min_ndim} to {schema.max_ndim}")
        storage = value.untyped_storage()
        if storage.nbytes():
            if storage.data_ptr() in self.storages:
                raise MalformedReply(f"{where}: a tensor sharing its storage with another field")
            self.storages.add(storage.data_ptr())
        if value.numel() and not _dense(value, storage.nbytes() // value.element_size()):
            raise MalformedReply(f"{where}: a tensor whose elements overlap or leave gaps in its "
                                 "storage (expanded or strided), expected a dense one")
        copy = torch.empty(value.shape, dtype=RECEIVED_FLOAT if value.dtype.is_floating_point
                           else value.dtype)
        copy.copy_(value)
        return copy


_DTYPE_WORDS = {FLOATING: "a real floating-point dtype", INTEGER: "an integer dtype",
                REAL: "a real (floating-point or integer) dtype"}


def _dense(tensor: torch.Tensor, stored: int) -> bool:
    """Whether the tensor's elements fill storage[offset : offset + numel] exactly once, in
    some order of its dimensions (contiguous, or a permutation of contiguous)."""
    expected = 1
    for stride, size in sorted((stride, size) for stride, size
                               in zip(tensor.stride(), tensor.shape) if size != 1):
        if stride != expected:
            return False
        expected *= size
    return tensor.storage_offset() + tensor.numel() <= stored


def _key_words(key) -> str:
    """A key in a message, never the text of an object the worker built (its repr could be
    exponentially long: a tuple holding itself twice at each level)."""
    return repr(key[:40]) if type(key) is str else f"a key of type {type(key).__name__}"


def _require(condition: bool, where: str, value, expected: str) -> None:
    if not condition:
        raise MalformedReply(f"{where or 'the reply'}: {type(value).__name__}, expected {expected}")


def reply(value, op: str, max_objects: int = protocol.MAX_OBJECTS,
          seconds: float = protocol.REPLY_SECONDS) -> dict:
    """The reply to a request for `op`, rebuilt from fresh objects: {"ok": True, "result",
    "notes", "memory"} or {"ok": False, "error": protocol.ERROR, "notes", "memory"}; raises
    MalformedReply (see the module's docstring)."""
    receipt = _Receipt(max_objects, seconds)
    receipt.visit(value, "the reply")
    _require(type(value) is dict and type(value.get("ok")) is bool, "", value,
             'a dict with "ok": True or False')
    body = "result" if value["ok"] else "error"
    schema = Record({"ok": Flag(), body: protocol.REPLIES[op] if value["ok"] else protocol.ERROR,
                     "notes": protocol.NOTES, "memory": protocol.MEMORY})
    return receipt.record(value, schema, "")
