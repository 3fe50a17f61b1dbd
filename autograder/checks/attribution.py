"""Which category a difference belongs to, decided from measurements of the same check.

The attention, rope and causal_mask categories all read the output of one module, the student's
CausalSelfAttention. A difference from the reference there is charged to one category only, on
evidence measured by the check that sees it:

- The attention checks run with the template's RotaryPositionalEmbedding standing in for the
  student's `attention.rope` (the worker's rope="template"), so a bug in the student's RoPE
  module cannot reach them. A RoPE applied inline (not through self.rope) cannot be swapped: an
  output that equals the reference's with one of the RoPE or causal-mask bugs those tests name
  is then charged to that category (attention_difference).
- The rope checks run the student's own RoPE; when its weights are not RoPE's and no known bug
  names why, the same probe is run with the template's RoPE in its place: if the weights are then
  RoPE's, the difference is the RoPE module's; if not, it lies outside it (rope_difference).
- forward(x, mask=None) must be causal on its own (the template's contract, graded by the
  causal_mask checks). When the call without a mask raises, or its output moves when only later
  tokens change, the attention and rope checks measure with the model's mask passed instead, and
  say so (attention, leaks_future).
"""

import re
from dataclasses import dataclass

import pytest
import torch

from .. import rubric
from . import diagnoses, oracle

OTHER_CATEGORIES = {"rope": diagnoses.ROPE_VARIANTS, "causal_mask": diagnoses.CAUSAL_MASK_VARIANTS}


def model_mask(seq_len: int) -> torch.Tensor:
    """The mask DecoderOnlyTransformer passes: (seq, seq), 1 where attention is allowed."""
    return torch.tril(torch.ones(seq_len, seq_len))


@dataclass(frozen=True)
class Attribution:
    category: str  # the rubric category the difference is charged to
    cause: str = ""  # the known bug it matches, or the evidence that charges it, in words


def _known(actual, variants: dict, x, qkv_weight, out_weight, num_heads, measure) -> str:
    measured = {description: measure(variant) for description, variant in variants.items()}
    for rope in oracle.ROPE_CONVENTIONS.values():
        cause = diagnoses.first_match(actual, measured, x, qkv_weight, out_weight, num_heads, rope,
                                      tolerance=rubric.TOLERANCES.attention)
        if cause:
            return cause
    return ""


def attention_difference(actual, x, qkv_weight, out_weight, num_heads,
                         measure=lambda variant: variant) -> Attribution:
    """The category of a difference between `actual` (the value measure(variant) gives for the
    student's attention, e.g. its output) and the reference's: "rope" or "causal_mask" when it
    equals the reference's with a bug those tests name, else "attention" (cause: the known
    attention bug it matches, or '')."""
    for category, variants in OTHER_CATEGORIES.items():
        cause = _known(actual, variants, x, qkv_weight, out_weight, num_heads, measure)
        if cause:
            return Attribution(category, cause)
    return Attribution("attention", _known(actual, diagnoses.ATTENTION_VARIANTS, x, qkv_weight,
                                           out_weight, num_heads, measure))


def rope_difference(num_heads: int, known_cause: str, substituted: str, substituted_matches: bool,
                    readable: bool) -> Attribution:
    """The category of a difference between the student's attention weights on the rope probe
    and RoPE's. known_cause: the RoPE bug they match, if any; substituted: the worker's "rope"
    field for the same probe run with the template's RoPE ("template" if it stood in for
    self.rope); substituted_matches: whether those weights were RoPE's; readable: whether the
    student's own output read as attention weights at all."""
    if known_cause:
        return Attribution("rope", f"Likely cause: {known_cause}.")
    if substituted == "template" and substituted_matches:
        return Attribution("rope", "With the template's RotaryPositionalEmbedding in place of your "
                           "self.rope, the same attention gives RoPE's weights: the difference "
                           "is in your RotaryPositionalEmbedding (compare its angles with "
                           "t * base^(-2i/head_dim)).")
    if substituted == "template":
        return Attribution("attention", "with the template's RotaryPositionalEmbedding in place "
                           "of your self.rope the weights still differ from RoPE's, so the "
                           "difference lies outside RoPE (the attention tests grade it)")
    if num_heads > 1 and not readable:
        return Attribution("attention", f"with {num_heads} heads the values came back mixed "
                           "between positions or heads, which RoPE (rotating only queries and "
                           "keys) cannot do: a head split or merge difference, graded by the "
                           "attention tests")
    return Attribution("rope")


def note_rope_source(submission, result: dict) -> None:
    """Say which RoPE an attention result used (the worker's rope="template" request)."""
    if result.get("rope") == "template":
        submission.note("your attention's self.rope was replaced by the template's "
                     "RotaryPositionalEmbedding(head_dim) for this check: RoPE is graded by the "
                     "rope tests")
    elif result.get("rope_not_substituted"):
        submission.note("this check ran your own RoPE: the template's RotaryPositionalEmbedding "
                     f"could not stand in for self.rope ({result['rope_not_substituted']})")


def _brief(error: str) -> str:
    """An error's first line and the backbone.py line it names."""
    first = error.splitlines()[0]
    location = re.search(r"\(backbone\.py line \d+.*\)$", error)
    return first + (f" {location.group(0)}" if location and location.group(0) not in first else "")


def attention(submission, what: str, *, x, mask=None, **request) -> dict:
    """The worker's attention result for the request. With forward's mask left out, a call that
    raises is repeated with the model's mask passed (result["mask_passed"] = True) and a note:
    the missing default is the causal_mask tests' to grade."""
    result, error = submission.attempt("attention", what, x=x, mask=mask, **request)
    if error and mask is None:
        retried, _ = submission.attempt("attention", what, x=x, mask=model_mask(x.shape[1]),
                                     **request)
        if retried is not None:
            seq_len = x.shape[1]
            submission.note(f"CausalSelfAttention.forward(x) without a mask raised {_brief(error)}; "
                         "the causal_mask tests grade that (forward must build its own causal mask "
                         f"when none is passed); this check passed the model's mask "
                         f"torch.tril(torch.ones({seq_len}, {seq_len}))")
            return {**retried, "mask_passed": True}
    if error:
        pytest.fail(f"{what} raised {error}", pytrace=False)
    return result


def leaks_future(submission, what: str, dim: int, num_heads: int, **request) -> str:
    """'' if forward(x) without a mask is causal on one random input (outputs at positions < 4
    unchanged when only the tokens after them change), else what moved, in words."""
    seq_len, split = 8, 4
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, seq_len, dim, generator=generator).repeat(2, 1, 1)
    x[1, split:] = torch.randn(seq_len - split, dim, generator=generator)
    qkv_weight = torch.randn(3 * dim, dim, generator=generator) / dim ** 0.5
    out_weight = torch.randn(dim, dim, generator=generator) / dim ** 0.5
    out = submission.call("attention", what, dim=dim, num_heads=num_heads, qkv_weight=qkv_weight,
                       out_weight=out_weight, x=x, **request)["out"]
    if out.shape != x.shape:
        return ""  # the checks that read the output report its shape
    moved = (out[1, :split] - out[0, :split]).abs().nan_to_num(float("inf")).max()
    if moved <= rubric.TOLERANCES.causal.atol:
        return ""
    return (f"forward(x) without a mask is not causal (outputs at positions 0-{split - 1} moved by "
            f"{float(moved):.2g} when only tokens {split}-{seq_len - 1} changed)")


def with_mask_if_not_causal(submission, leak: str, seq_len: int) -> torch.Tensor:
    """The model's mask after a leak found by leaks_future, with the note that says so."""
    submission.note(f"{leak}; the causal_mask tests grade that; this check then passed the model's "
                 f"mask torch.tril(torch.ones({seq_len}, {seq_len}))")
    return model_mask(seq_len)
