"""How close a check came to its threshold: the number the TA's audit (ta/audit.py) reads.

A check that compares a measured value with a threshold records it in its results entry as
extra["margin"] = {"measured": x, "threshold": t, "kind": "<what> <= <threshold name>"} (or
">="), through `record`. A parametrized check records one per case; the results plugin keeps
the case with the least headroom (`tighter`). Information only: nothing here changes a grade.
"""

import torch

KEY = "margin"


def at_most(measured: float, threshold: float, kind: str) -> dict:
    """`measured` must be <= `threshold`; kind names both, e.g. "max |future gradient| <= atol"."""
    return {"measured": float(measured), "threshold": float(threshold), "kind": kind}


def at_least(measured: float, threshold: float, kind: str) -> dict:
    """`measured` must be >= `threshold`; kind names both with ">=" in it."""
    return {"measured": float(measured), "threshold": float(threshold), "kind": kind}


def allclose(actual: torch.Tensor, expected: torch.Tensor, tolerance) -> dict:
    """torch.allclose's test as one number: max |actual - expected| / (atol + rtol |expected|),
    which must be <= 1 (inf for different shapes, NaN for a NaN)."""
    if actual.shape != expected.shape:
        ratio = float("inf")
    else:
        allowed = tolerance.atol + tolerance.rtol * expected.double().abs()
        ratio = float(((actual.double() - expected.double()).abs() / allowed).max())
    return at_most(ratio, 1.0, "|error| / (atol + rtol |expected|) <= 1")


def headroom(margin: dict) -> float:
    """The fraction of the threshold left unused: 1 far from it, 0 at it, negative past it
    (for ">=": (measured - threshold) / measured; for "<=": (threshold - measured) / threshold).
    NaN when it cannot be told (a threshold of 0, a NaN)."""
    measured, threshold = margin["measured"], margin["threshold"]
    if ">=" in margin["kind"]:
        return (measured - threshold) / measured if measured else float("nan")
    return (threshold - measured) / threshold if threshold else float("nan")


def tighter(first, second):
    """Of two margins (either may be None), the one with less headroom (a NaN counts as none)."""
    if first is None or second is None:
        return first or second
    a, b = headroom(first), headroom(second)
    return first if a != a or (b == b and a <= b) else second


def record(extra: dict, margin) -> None:
    """Keep `margin` (None: nothing measured) in the test's extra, or the tighter of it and the
    one already there."""
    kept = tighter(extra.get(KEY), margin)
    if kept is not None:
        extra[KEY] = kept
