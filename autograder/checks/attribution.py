"""Which category a difference belongs to, decided from measurements of the same check, and the
one place that tries both RoPE pairings (rotate-half and interleaved, oracle.ROPE_CONVENTIONS).

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

- A mask bug of any form (a polarity read the wrong way, scores multiplied by the mask, the mask
  added or applied after the softmax) leaves the rest of the attention right: with a mask that
  allows every key passed (EVERY_KEY: ones, bool True, or zeros for a mask read as 1 = blocked)
  the output is the unmasked reference's. The attention checks then pass with a note, and the
  rope probe reads RoPE from that run (mask_only_difference, with_every_key).

Either RoPE pairing is correct: an attention output is the reference's, or a known bug's, when
it equals it under one of them (pairings, known_bug).
"""

import re
from dataclasses import dataclass
from typing import Optional

import torch

from .. import rubric
from ..verdict import Verdict, fail
from . import compare, diagnoses, oracle
from .adapters import ATTENTION, AttentionRun, attempt_attention, run_attention
from .diagnoses import Diagnosis
from .submission import raised

TOLERANCE = rubric.TOLERANCES.attention
OTHER_CATEGORIES = {"rope": diagnoses.ROPE_VARIANTS, "causal_mask": diagnoses.CAUSAL_MASK_VARIANTS}


def model_mask(seq_len: int) -> torch.Tensor:
    """The mask DecoderOnlyTransformer passes: (seq, seq), 1 where attention is allowed."""
    return torch.tril(torch.ones(seq_len, seq_len))


# -- the RoPE pairings ---------------------------------------------------------------------------

def rotations(t: torch.Tensor) -> list:
    """t (..., seq, head_dim) rotated by RoPE at positions 0, 1, ..., under each pairing."""
    return [rope(t) for rope in oracle.ROPE_CONVENTIONS.values()]


def pairings(variant, x, qkv_weight, out_weight, num_heads) -> list:
    """variant(x, qkv_weight, out_weight, num_heads, rope) (oracle.attention's signature: the
    reference, a diagnoses variant, or a measure of one) under each RoPE pairing."""
    return [variant(x, qkv_weight, out_weight, num_heads, rope)
            for rope in oracle.ROPE_CONVENTIONS.values()]


def _identity(variant):
    return variant


def known_bug(actual: torch.Tensor, variants: dict, x, qkv_weight, out_weight, num_heads,
              measure=_identity) -> Optional[Diagnosis]:
    """The Diagnosis of the first of `variants` (diagnoses' {Diagnosis: attention variant})
    whose measure(variant) equals `actual` under a RoPE pairing (the rotate-half one tried
    first), or None. measure turns a variant into the value measured (its output by default)."""
    measured = {diagnosis: measure(variant) for diagnosis, variant in variants.items()}
    for rope in oracle.ROPE_CONVENTIONS.values():
        found = diagnoses.first_match(actual, measured, x, qkv_weight, out_weight, num_heads, rope,
                                      tolerance=TOLERANCE)
        if found:
            return found
    return None


def causal_mask_bug(actual: torch.Tensor, x, qkv_weight, out_weight, num_heads) -> Optional[Diagnosis]:
    """The causal-mask bug (diagnoses.CAUSAL_MASK_VARIANTS) the attention output matches, or None."""
    return known_bug(actual, diagnoses.CAUSAL_MASK_VARIANTS, x, qkv_weight, out_weight, num_heads)


# -- which category ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attribution:
    """category: the rubric category the difference is charged to. diagnosis: the known bug it
    matches, or the evidence that charges it, in words (None when there is neither)."""

    category: str
    diagnosis: Optional[Diagnosis] = None


def attention_difference(actual, x, qkv_weight, out_weight, num_heads,
                         measure=_identity) -> Attribution:
    """The category of a difference between `actual` (the value measure(variant) gives for the
    student's attention, e.g. its output) and the reference's: "rope" or "causal_mask" when it
    equals the reference's with a bug those tests name, else "attention" (with the known
    attention bug it matches, if any)."""
    for category, variants in OTHER_CATEGORIES.items():
        found = known_bug(actual, variants, x, qkv_weight, out_weight, num_heads, measure)
        if found:
            return Attribution(category, found)
    return Attribution("attention", known_bug(actual, diagnoses.ATTENTION_VARIANTS, x, qkv_weight,
                                              out_weight, num_heads, measure))


IN_ROPE_MODULE = Diagnosis(
    "the difference is in your RotaryPositionalEmbedding: with the template's "
    "RotaryPositionalEmbedding in place of your self.rope, the same attention gives RoPE's weights",
    "compare its angles with t * base^(-2i/head_dim)")
OUTSIDE_ROPE = Diagnosis(
    "with the template's RotaryPositionalEmbedding in place of your self.rope the weights still "
    "differ from RoPE's, so the difference lies outside RoPE (the attention tests grade it)")
MIXED_HEADS = Diagnosis(
    "the values came back mixed between positions or heads, which RoPE (rotating only queries and "
    "keys) cannot do: a head split or merge difference, graded by the attention tests")


def rope_difference(num_heads: int, known: Optional[Diagnosis], substituted: str,
                    substituted_matches: bool, readable: bool) -> Attribution:
    """The category of a difference between the student's attention weights on the rope probe
    and RoPE's. known: the RoPE bug they match, if any; substituted: AttentionRun.rope of the
    same probe run with the template's RoPE ("template" if it stood in for self.rope, '' if not
    run); substituted_matches: whether those weights were RoPE's; readable: whether the
    student's own output read as attention weights at all."""
    if known:
        return Attribution("rope", known)
    if substituted == "template" and substituted_matches:
        return Attribution("rope", IN_ROPE_MODULE)
    if substituted == "template":
        return Attribution("attention", OUTSIDE_ROPE)
    if num_heads > 1 and not readable:
        return Attribution("attention", MIXED_HEADS)
    return Attribution("rope")


# -- measuring with the model's mask when forward's own default is at fault ----------------------

@dataclass(frozen=True)
class Measurement:
    """An attention run, and whether the model's mask was passed in place of forward's default
    (the missing or leaking default is then the causal_mask tests' to grade)."""

    run: AttentionRun
    mask_passed: bool = False


def note_rope_source(submission, run: AttentionRun) -> None:
    """Say which RoPE an attention run used (run_attention's rope="template")."""
    if run.rope == "template":
        submission.note("your attention's self.rope was replaced by the template's "
                        "RotaryPositionalEmbedding(head_dim) for this check: RoPE is graded by the "
                        "rope tests")
    elif run.rope_not_substituted:
        submission.note("this check ran your own RoPE: the template's RotaryPositionalEmbedding "
                        f"could not stand in for self.rope ({run.rope_not_substituted})")


def _brief(error: str) -> str:
    """An error's first line and the backbone.py line it names."""
    first = error.splitlines()[0]
    location = re.search(r"\(backbone\.py line \d+.*\)$", error)
    return first + (f" {location.group(0)}" if location and location.group(0) not in first else "")


def attention(submission, *, x, mask=None, **request) -> Measurement:
    """run_attention(x=x, mask=mask, **request). With forward's mask left out, a call that
    raises is repeated with the model's mask passed (mask_passed) and a note: the missing
    default is the causal_mask tests' to grade. Otherwise an error fails the check as
    run_attention would."""
    run, error = attempt_attention(submission, x=x, mask=mask, **request)
    if error and mask is None:
        seq_len = x.shape[1]
        retried, _ = attempt_attention(submission, x=x, mask=model_mask(seq_len), **request)
        if retried is not None:
            submission.note(f"CausalSelfAttention.forward(x) without a mask raised {_brief(error)}; "
                            "the causal_mask tests grade that (forward must build its own causal "
                            f"mask when none is passed); this check passed the model's mask "
                            f"torch.tril(torch.ones({seq_len}, {seq_len}))")
            return Measurement(retried, mask_passed=True)
    if error:
        fail(raised(ATTENTION, error))
    return Measurement(run)


INERT_HINT = ("Points for these properties go to attention that attends: a forward that returns its "
              "input, zeros or a constant has them by doing nothing. See the test 'Each position "
              "attends to itself and to its past'.")


def inert(measured: str, found: str, expected: str) -> Verdict:
    """The Verdict on an attention (or model) whose outputs no earlier token moves: a property
    it holds vacuously earns nothing."""
    return Verdict(measured=measured, found=found, expected=expected, hint=INERT_HINT, kind="property")


def mixes_positions(submission, x: torch.Tensor, **request) -> bool:
    """Whether some output changes when another position's token changes (token 0, then the last
    one), with the model's mask passed and the template's RoPE. A forward that returns its input,
    zeros or a constant does not; any attention does, whichever way it reads the mask (a mask
    bug is the causal_mask tests' to grade). request: run_attention's weights (dim, num_heads,
    qkv_weight, out_weight...)."""
    request = {**request, "mask": model_mask(x.shape[1]), "rope": "template"}
    before = attention(submission, x=x, **request).run.out
    for position, others in ((0, slice(1, None)), (-1, slice(None, -1))):
        changed = x.clone()
        changed[:, position] = changed[:, position] + 1.0
        after = attention(submission, x=changed, **request).run.out
        if bool(((after[:, others] - before[:, others]).abs() > rubric.TOLERANCES.attention.atol).any()):
            return True
    return False


def require_mixing(submission, x: torch.Tensor, **request) -> None:
    """Fails the check (inert) when no output depends on another position's token."""
    if not mixes_positions(submission, x, **request):
        fail(inert("CausalSelfAttention's outputs, when token 0 or the last token changes",
                   "unchanged at every other position: no position depends on another's token",
                   "a change (attention mixes the positions), so that the property checked here "
                   "means something"))


def leaks_future(submission, dim: int, num_heads: int, **request) -> str:
    """'' if forward(x) without a mask is causal on one random input (outputs at positions < 4
    unchanged when only the tokens after them change), else what moved, in words."""
    seq_len, split = 8, 4
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, seq_len, dim, generator=generator).repeat(2, 1, 1)
    x[1, split:] = torch.randn(seq_len - split, dim, generator=generator)
    qkv_weight = torch.randn(3 * dim, dim, generator=generator) / dim ** 0.5
    out_weight = torch.randn(dim, dim, generator=generator) / dim ** 0.5
    out = run_attention(submission, dim=dim, num_heads=num_heads, qkv_weight=qkv_weight,
                        out_weight=out_weight, x=x, **request).out
    moved = (out[1, :split] - out[0, :split]).abs().nan_to_num(float("inf")).max()
    if moved <= rubric.TOLERANCES.causal.atol:
        return ""
    return (f"forward(x) without a mask is not causal (outputs at positions 0-{split - 1} moved by "
            f"{float(moved):.2g} when only tokens {split}-{seq_len - 1} changed)")


# -- the mask as the one difference: every key allowed ------------------------------------------

# Masks that allow every key, under the contract's reading (1 = may attend, float or bool) and
# under the opposite one (1 = blocked): with every key allowed, no masking bug can act.
EVERY_KEY = (("a mask of ones", lambda n: torch.ones(n, n)),
             ("a bool mask of all True", lambda n: torch.ones(n, n, dtype=torch.bool)),
             ("a mask of zeros (which allows every key when 1 is read as blocked)",
              lambda n: torch.zeros(n, n)))


def with_every_key(submission, *, x, **request):
    """(form, AttentionRun) of the student's attention run with each of EVERY_KEY's masks that it
    runs with (one that raises is skipped), in order: a generator."""
    for form, make in EVERY_KEY:
        run, error = attempt_attention(submission, x=x, mask=make(x.shape[1]), **request)
        if not error:
            yield form, run


def mask_only_difference(submission, actual_of, expected: list, *, x, **request) -> str:
    """'' unless the student's attention, with a mask that allows every key passed, gives one of
    `expected` (the reference's values without a mask, one per RoPE pairing): then everything
    but the masking is right, and the difference measured with the causal mask is the mask's;
    returns the mask form that showed it. actual_of(run) is the value compared (out, grad_x)."""
    for form, run in with_every_key(submission, x=x, **request):
        if any(compare.close(actual_of(run), e, TOLERANCE) for e in expected):
            return form
    return ""


def mask_note(what: str, form: str) -> str:
    """The note of a check that found the mask to be the only difference."""
    return (f"{what} differs from the reference's, but with {form} passed, every key allowed, "
            "your attention equals the reference's without a mask: the difference lies in how "
            "the causal mask is applied, which the causal_mask tests grade, not this one")


def with_mask_if_not_causal(submission, leak: str, seq_len: int) -> torch.Tensor:
    """The model's mask after a leak found by leaks_future, with the note that says so."""
    submission.note(f"{leak}; the causal_mask tests grade that; this check then passed the model's "
                    f"mask torch.tril(torch.ones({seq_len}, {seq_len}))")
    return model_mask(seq_len)
