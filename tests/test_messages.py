"""Message helpers of the checks: what they claim must follow from what was measured."""

import pytest
import torch

from autograder import rubric
from autograder.checks import causality, compare


def test_mismatch_shows_the_difference_between_close_numbers():
    message = compare.mismatch("gradient", torch.tensor([2.62053]), torch.tensor([2.62051]),
                               rubric.Tolerance(rtol=1e-6, atol=1e-6), against="reference").text()
    value = message.split("(value ")[1].split(",")[0]
    expected = message.split("expected ")[1].split(")")[0]
    assert value != expected, message


def test_a_mismatch_is_filed_under_what_it_was_compared_with():
    """The TA's report groups failures without a cause by kind: a difference from the reference
    and a broken property of the student's own output are different findings."""
    values, tolerance = (torch.ones(2), torch.zeros(2)), rubric.Tolerance(rtol=0.0, atol=1e-6)
    assert compare.mismatch("output", *values, tolerance, against="reference").kind == "mismatch"
    assert compare.mismatch("output", *values, tolerance, against="own output").kind == "property"
    with pytest.raises(KeyError):
        compare.mismatch("output", *values, tolerance, against="itself")


def test_a_leak_at_length_2_does_not_claim_only_position_0_leaks():
    """At length 2 only position 0 has a later token: a leak there is no evidence that the other
    positions are causal (the hint that names a mask hiding the diagonal rests on that)."""
    spans = causality.spans(2)
    out = torch.zeros(len(spans) + 1, 2, 4)
    out[1:, 0] = 1.0  # position 0 moved when token 1 changed
    leak, only_first = causality.leak(out, spans)
    assert leak is not None and not only_first
    spans = causality.spans(8)
    out = torch.zeros(len(spans) + 1, 8, 4)
    out[1:, 0] = 1.0  # only position 0 moved, though positions 1-6 could have
    assert causality.leak(out, spans)[1]
