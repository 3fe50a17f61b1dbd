"""Comparing the student's tensors with expected ones, and saying how they differ."""

import torch

from ..rubric_records import Tolerance
from ..verdict import Verdict


def max_error(actual: torch.Tensor, expected: torch.Tensor):
    """(largest absolute difference, index where it occurs); inf if shapes differ or NaN appears."""
    if actual.shape != expected.shape:
        return float("inf"), None
    difference = (actual.double() - expected.double()).abs()
    if torch.isnan(difference).any():
        return float("nan"), tuple(torch.nonzero(torch.isnan(difference))[0].tolist())
    flat = int(difference.argmax())
    return float(difference.flatten()[flat]), _unravel(flat, difference.shape)


def _unravel(flat: int, shape) -> tuple:
    """The index of element `flat` of a row-major tensor of `shape` (torch.unravel_index's
    argument checks import sympy: 0.45 CPU-s of the grader's time)."""
    index = []
    for size in reversed(shape):
        flat, position = divmod(flat, size)
        index.append(position)
    return tuple(reversed(index))


def close(actual: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance) -> bool:
    return actual.shape == expected.shape and torch.allclose(actual, expected, rtol=tolerance.rtol,
                                                             atol=tolerance.atol)


# What a check compared the student's tensor with, and the Verdict kind that files the failure
# under it in the TA's report: what a correct implementation computes (the reference, the
# definition), or the student's own output in another form (a property it must have: a
# rotation keeps norms, eval mode ignores the dropout probability).
AGAINST = {"reference": "mismatch", "own output": "property"}


def mismatch(what: str, actual: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance, *,
             against: str, cause: str = "", hint: str = "") -> Verdict:
    """The Verdict on `actual` differing from `expected`: its shape, its first NaN, or its largest
    error with both values ('max abs error 0.3 at index (0, 1, 2) (value 1.2, expected 0.9)').
    `against` (a key of AGAINST) says what `expected` is; raises KeyError for another."""
    kind = AGAINST[against]
    if actual.shape != expected.shape:
        found, wanted = f"shape {tuple(actual.shape)}", f"shape {tuple(expected.shape)}"
    else:
        error, index = max_error(actual, expected)
        if error != error:
            found, wanted = f"contains NaN (first at index {index})", "finite values"
        else:
            value, reference = _distinct(float(actual[index]), float(expected[index]))
            found = f"max abs error {error:.3g} at index {index} (value {value}, expected {reference})"
            wanted = f"within atol {tolerance.atol:g} + rtol {tolerance.rtol:g} * |expected|"
    return Verdict(measured=what, found=found, expected=wanted, cause=cause, hint=hint, kind=kind)


def _distinct(value: float, expected: float) -> tuple:
    """Both numbers with 5 significant digits, or as many more (up to 9, float32's precision)
    as it takes for them to read differently when they differ."""
    for digits in range(5, 10):
        shown = f"{value:.{digits}g}", f"{expected:.{digits}g}"
        if shown[0] != shown[1]:
            break
    return shown
