"""The words a reply's schema is written in (protocol.py writes one per op; the grader's
sandbox/validation.py reads a reply against it). Plain records, no behaviour: the worker never
checks its own replies, since whatever runs in its process can change them.

    Record({"out": Tensor(), "own_weights": Flag()}, optional={"again": Tensor()})
"""

from dataclasses import dataclass, field
from typing import Mapping

# Tensor dtypes by class: real floating point, integer, or either ("real").
FLOATING = "floating"
INTEGER = "integer"
REAL = "real"
MAX_NDIM = 8


@dataclass(frozen=True)
class Tensor:
    """A dense, strided CPU tensor of the dtype class `dtypes` with at most `max_ndim`
    dimensions (and at least `min_ndim`)."""

    dtypes: str = FLOATING
    min_ndim: int = 0
    max_ndim: int = MAX_NDIM


@dataclass(frozen=True)
class Text:
    """A str, cut to `max_chars` on receipt."""

    max_chars: int = 200


@dataclass(frozen=True)
class Integer:
    """An int (not a bool) within -2**63 .. 2**63 - 1."""


@dataclass(frozen=True)
class Number:
    """An int or a float (not a bool), received as a float; NaN and infinities included."""


@dataclass(frozen=True)
class Flag:
    """A bool."""


@dataclass(frozen=True)
class Maybe:
    """None or `of`."""

    of: object


@dataclass(frozen=True)
class ListOf:
    """A list of `item`s, at most `max_items` of them: more is malformed, unless `clip`, which
    keeps the first `max_items` (the rest is dropped unread)."""

    item: object
    max_items: int
    clip: bool = False


@dataclass(frozen=True)
class MapOf:
    """A dict of Text keys to `value`s, at most `max_items` of them."""

    key: Text
    value: object
    max_items: int


@dataclass(frozen=True)
class Record:
    """A dict with exactly the keys of `fields` and any of `optional`, each value of its
    schema."""

    fields: Mapping[str, object]
    optional: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Tagged:
    """A dict whose `tag` key (a str) picks its Record among `variants` (the tag included in
    each Record's fields)."""

    tag: str
    variants: Mapping[str, Record]
