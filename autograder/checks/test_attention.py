"""attention: TODO 2's attention computation against the reference, with the same random weights.

Either RoPE pairing (rotate-half or interleaved) is correct. An output that equals the
reference's with one of the RoPE or causal-mask bugs the rope and causal_mask tests name also
passes here, with a note: that bug costs its points in its own category, once. Any other
difference fails, named when it matches a known attention bug (diagnoses.ATTENTION_VARIANTS).
"""

import math

import pytest
import torch

from .. import rubric
from . import compare, diagnoses, oracle

TOLERANCE = rubric.TOLERANCES["attention"]
DIM, HEADS, BATCH, SEQ = 32, 4, 2, 12
OTHER_CATEGORIES = {"rope": diagnoses.ROPE_VARIANTS, "causal_mask": diagnoses.CAUSAL_MASK_VARIANTS}
HINT = ("Expected, per head of size head_dim: softmax over the keys of the causally masked "
        "scores rope(q) rope(k)^T / sqrt(head_dim), times v; then the heads merged back to "
        "(batch, seq, dim) and projected with out_proj.")


def _inputs(generator):
    """x, [W_q; W_k; W_v], W_o (scores and outputs of order one) and a gradient for the output."""
    x = torch.randn(BATCH, SEQ, DIM, generator=generator)
    qkv_weight = torch.randn(3 * DIM, DIM, generator=generator) / math.sqrt(DIM)
    out_weight = torch.randn(DIM, DIM, generator=generator) / math.sqrt(DIM)
    return x, qkv_weight, out_weight, torch.randn(BATCH, SEQ, DIM, generator=generator)


def _gradient(variant, grad_out):
    """The variant turned into the gradient of <its output, grad_out> w.r.t. x."""
    def gradient(x, qkv_weight, out_weight, num_heads, rope):
        x = x.clone().requires_grad_(True)
        out = variant(x, qkv_weight, out_weight, num_heads, rope)
        return torch.autograd.grad(out, x, grad_out)[0]
    return gradient


def _check(student, actual, what, inputs, measure=lambda variant: variant):
    """Pass if `actual` is measure(variant)'s value for the reference, or for it with another
    category's bug; else fail."""
    x, qkv_weight, out_weight, _ = inputs

    def match(variants: dict) -> str:
        measured = {description: measure(variant) for description, variant in variants.items()}
        for rope in oracle.ROPE_CONVENTIONS.values():
            cause = diagnoses.first_match(actual, measured, x, qkv_weight, out_weight, HEADS, rope,
                                          **TOLERANCE)
            if cause:
                return cause
        return ""

    expected = [measure(oracle.attention)(x, qkv_weight, out_weight, HEADS, rope)
                for rope in oracle.ROPE_CONVENTIONS.values()]
    close = [e for e in expected if compare.close(actual, e, **TOLERANCE)]
    if close:
        student.note(f"{what}: max abs error {compare.max_error(actual, close[0])[0]:.2g}")
        return
    for category, variants in OTHER_CATEGORIES.items():
        bug = match(variants)
        if bug:
            student.note(f"{what} equals the reference's with a {category} bug, which costs "
                         f"points in the {category} tests only ({bug})")
            return
    cause = match(diagnoses.ATTENTION_VARIANTS)
    nearest = min(expected, key=lambda e: compare.max_error(actual, e)[0])
    pytest.fail(compare.mismatch(what, actual, nearest, **TOLERANCE)
                + (f"\nLikely cause: {cause}." if cause else f"\n{HINT}"), pytrace=False)


def _output(student, inputs, mask=None):
    x, qkv_weight, out_weight, _ = inputs
    return student.call("attention", "CausalSelfAttention", dim=DIM, num_heads=HEADS,
                        qkv_weight=qkv_weight, out_weight=out_weight, x=x, mask=mask)["out"]


def test_output_matches_reference(student, generator):
    inputs = _inputs(generator)
    _check(student, _output(student, inputs), f"CausalSelfAttention(dim={DIM}, num_heads={HEADS}) "
           f"output on input {(BATCH, SEQ, DIM)} with forward's mask left out", inputs)


def test_explicit_mask_matches_reference(student, generator):
    inputs = _inputs(generator)
    mask = torch.tril(torch.ones(SEQ, SEQ))  # what DecoderOnlyTransformer passes: 1 = may attend
    _check(student, _output(student, inputs, mask), f"CausalSelfAttention output with the "
           f"model's mask torch.tril(torch.ones({SEQ}, {SEQ})) passed", inputs)


def test_gradients_match_reference(student, generator):
    inputs = _inputs(generator)
    x, qkv_weight, out_weight, grad_out = inputs
    got = student.call("attention", "CausalSelfAttention", dim=DIM, num_heads=HEADS,
                       qkv_weight=qkv_weight, out_weight=out_weight, x=x, grad_out=grad_out)
    _check(student, got["grad_x"], "gradient of <attention output, g> w.r.t. the input", inputs,
           measure=lambda variant: _gradient(variant, grad_out))


# Dropout probability the module is built with. A correct module's two eval-mode calls are
# bitwise equal (reference, single thread); with half the attention weights dropped, dropout left
# on in eval mode moves the output by O(1) (F.dropout without the training flag: 3.7).
EVAL_DROPOUT = 0.5
DROPOUT_IN_EVAL_CAUSE = (
    "dropout applied whatever self.training is, e.g. F.dropout(weights, p) without "
    "training=self.training (its training argument defaults to True), "
    "F.scaled_dot_product_attention(..., dropout_p=p) without `p if self.training else 0.0`, or "
    "an nn.Dropout created inside forward (a new module is in training mode). Apply the module's "
    "own nn.Dropout (self.attn_dropout), which model.eval() turns off")


def _same(actual, expected) -> bool:
    """Equal within the attention tolerance, NaN where the other has NaN (a mask bug, graded in
    causal_mask, must not fail this check)."""
    return actual.shape == expected.shape and torch.allclose(actual, expected, equal_nan=True,
                                                             **TOLERANCE)


def test_deterministic_in_eval_mode(student, generator):
    """Built with dropout EVAL_DROPOUT, as given to the constructor (not zeroed), and put in eval
    mode, the attention gives the same output on two calls, equal to its output when built with
    dropout 0. The module is compared with itself, so its own weights do when the grader's
    cannot be mapped onto its layers."""
    x, qkv_weight, out_weight, _ = _inputs(generator)
    weights = dict(dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight, x=x,
                   own_weights_fallback=True)  # compares the module with itself only
    built = f"CausalSelfAttention(dim={DIM}, num_heads={HEADS}, dropout={EVAL_DROPOUT}) in eval mode"
    got = student.call("attention", "CausalSelfAttention", dropout=EVAL_DROPOUT, repeat=True,
                       **weights)
    if not _same(got["again"], got["out"]):
        difference = float((got["again"] - got["out"]).abs().nan_to_num().max())
        pytest.fail(f"{built} gave different outputs on two calls with the same input (max "
                    f"|difference| {difference:.2g}): it is random in eval mode, so evaluation "
                    f"and generation are random too.\nLikely cause: {DROPOUT_IN_EVAL_CAUSE}.",
                    pytrace=False)
    without = student.call("attention", "CausalSelfAttention", **weights)["out"]
    if not _same(got["out"], without):
        pytest.fail(compare.mismatch(f"{built}, against the same module built with dropout=0.0",
                                     got["out"], without, **TOLERANCE)
                    + "\nIn eval mode dropout must have no effect: the output may not depend on "
                      "the dropout probability.", pytrace=False)
    student.note("two calls gave the same output, equal to the dropout=0.0 module's")
