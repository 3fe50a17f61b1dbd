"""attention: TODO 2's attention computation against the reference, with the same random weights.

The template's RotaryPositionalEmbedding stands in for the student's self.rope (the worker's
rope="template"), so a bug in the student's RoPE module costs rope points only; either RoPE
pairing is correct. A difference is charged as attribution.attention_difference says: an output
that equals the reference's with a RoPE or causal-mask bug those tests name passes here with a
note (that bug costs its points in its own category, once); any other difference fails, named
when it matches a known attention bug. The checks that leave forward's mask out measure with the
model's mask passed when forward(x) raises or is not causal without one, and say so.
"""

import math

import torch

from .. import rubric
from ..verdict import Verdict, fail
from ..worker.gradients import inner_product
from . import attribution, compare, diagnoses, margin, oracle
from .diagnoses import Diagnosis, explained

TOLERANCE = rubric.TOLERANCES.attention
DIM, HEADS, BATCH, SEQ = 32, 4, 2, 12
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
        return torch.autograd.grad(inner_product(out, grad_out), x)[0]
    return gradient


SEQUENCES_MIXED = Diagnosis(
    "the sequences of a batch are mixed: each sequence run on its own gives the reference's "
    "output, and batched together they do not",
    "look for an operation across the batch dimension (dim 0), or a view or transpose that mixes "
    "it with the sequence or the heads (the layout is (batch, seq, dim))")


def _right_alone(submission, x, mask, expected, **request) -> bool:
    """Whether each sequence of x, run in a batch of its own, gives its rows of one of the
    `expected` outputs (one per RoPE pairing)."""
    alone = torch.cat([attribution.attention(submission, x=row, mask=mask, **request).run.out
                       for row in x.split(1)])
    return any(compare.close(alone, e, TOLERANCE) for e in expected)


def _check(submission, measured, inputs, mask=None, gradient=False):
    """Pass if the student's output (or with `gradient`, its input gradient) is the reference's,
    or the reference's with another category's bug; else fail. `measured` names it. Returns
    its margin (margin.allclose) when it matched the reference."""
    x, qkv_weight, out_weight, grad_out = inputs
    measurement = attribution.attention(submission, x=x, mask=mask, dim=DIM, num_heads=HEADS,
                                        qkv_weight=qkv_weight, out_weight=out_weight,
                                        grad_out=grad_out if gradient else None, rope="template")
    run = measurement.run
    attribution.note_rope_source(submission, run)
    passed = mask is not None or measurement.mask_passed
    what = measured + (f" with the model's mask torch.tril(torch.ones({SEQ}, {SEQ})) passed"
                       if passed else " with forward's mask left out")
    actual = run.grad_x if gradient else run.out
    measure = (lambda variant: _gradient(variant, grad_out)) if gradient else (lambda v: v)
    expected = attribution.pairings(measure(oracle.attention), x, qkv_weight, out_weight, HEADS)
    close = [e for e in expected if compare.close(actual, e, TOLERANCE)]
    if close:
        submission.note(f"{what}: max abs error {compare.max_error(actual, close[0])[0]:.2g}")
        return margin.allclose(actual, close[0], TOLERANCE)
    attributed = attribution.attention_difference(actual, x, qkv_weight, out_weight, HEADS, measure)
    if attributed.category != "attention":
        submission.note(f"{what} equals the reference's with a {attributed.category} bug, which "
                        f"the {attributed.category} tests grade, not this one "
                        f"({attributed.diagnosis})")
        return
    if mask is None and not measurement.mask_passed:
        leak = attribution.leaks_future(submission, DIM, HEADS, rope="template")
        if leak:
            return _check(submission, measured, inputs, attribution.with_mask_if_not_causal(
                submission, leak, SEQ), gradient)
    unmasked = attribution.pairings(measure(diagnoses.UNMASKED_ATTENTION), x, qkv_weight,
                                    out_weight, HEADS)
    form = attribution.mask_only_difference(
        submission, (lambda run: run.grad_x) if gradient else (lambda run: run.out), unmasked,
        x=x, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight,
        grad_out=grad_out if gradient else None, rope="template")
    if form:
        submission.note(attribution.mask_note(what, form))
        return
    diagnosis = attributed.diagnosis
    if diagnosis is None and not gradient and _right_alone(
            submission, x, attribution.model_mask(SEQ) if passed else None, expected, dim=DIM,
            num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight, rope="template"):
        diagnosis = SEQUENCES_MIXED
    nearest = min(expected, key=lambda e: compare.max_error(actual, e)[0])
    fail(compare.mismatch(what, actual, nearest, TOLERANCE, against="reference",
                          **explained(diagnosis, otherwise=HINT)))


def test_output_matches_reference(submission, generator, extra):
    margin.record(extra, _check(submission, f"CausalSelfAttention(dim={DIM}, num_heads={HEADS}) "
                                f"output on input {(BATCH, SEQ, DIM)}", _inputs(generator)))


def test_explicit_mask_matches_reference(submission, generator, extra):
    margin.record(extra, _check(submission, "CausalSelfAttention output", _inputs(generator),
                                mask=attribution.model_mask(SEQ)))


def test_gradients_match_reference(submission, generator, extra):
    margin.record(extra, _check(submission, "gradient of <attention output, g> w.r.t. the input",
                                _inputs(generator), gradient=True))


# Dropout probability the module is built with. A correct module's two eval-mode calls are
# bitwise equal (reference, single thread); with half the attention weights dropped, dropout left
# on in eval mode moves the output by O(1) (F.dropout without the training flag: 3.7).
EVAL_DROPOUT = 0.5
DROPOUT_IN_EVAL = Diagnosis(
    "dropout applied whatever self.training is, e.g. F.dropout(weights, p) without "
    "training=self.training (its training argument defaults to True), "
    "F.scaled_dot_product_attention(..., dropout_p=p) without `p if self.training else 0.0`, or "
    "an nn.Dropout created inside forward (a new module is in training mode)",
    "apply the module's own nn.Dropout (self.attn_dropout), which model.eval() turns off")


def _same(actual, expected) -> bool:
    """Equal within the attention tolerance, NaN where the other has NaN (a mask bug, graded in
    causal_mask, must not fail this check)."""
    return actual.shape == expected.shape and torch.allclose(actual, expected, equal_nan=True,
                                                             rtol=TOLERANCE.rtol, atol=TOLERANCE.atol)


def test_deterministic_in_eval_mode(submission, generator):
    """Built with dropout EVAL_DROPOUT, as given to the constructor (not zeroed), and put in eval
    mode, the attention gives the same output on two calls, equal to its output when built with
    dropout 0. The module is compared with itself, so its own weights do when the grader's
    cannot be mapped onto its layers."""
    x, qkv_weight, out_weight, _ = _inputs(generator)
    weights = dict(dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight, x=x,
                   own_weights_fallback=True)  # compares the module with itself only
    built = f"CausalSelfAttention(dim={DIM}, num_heads={HEADS}, dropout={EVAL_DROPOUT}) in eval mode"
    attribution.require_mixing(submission, **weights)
    measurement = attribution.attention(submission, dropout=EVAL_DROPOUT, repeat=True, **weights)
    got = measurement.run
    if not _same(got.again, got.out):
        difference = float((got.again - got.out).abs().nan_to_num().max())
        fail(Verdict(measured=f"{built}, two calls with the same input", kind="property",
                     found=f"outputs differing by up to {difference:.2g}",
                     expected="the same output (else evaluation and generation are random too)",
                     **explained(DROPOUT_IN_EVAL)))
    mask = attribution.model_mask(SEQ) if measurement.mask_passed else None
    without = attribution.attention(submission, mask=mask, **weights).run.out
    if not _same(got.out, without):
        fail(compare.mismatch(f"{built}, against the same module built with dropout=0.0",
                              got.out, without, TOLERANCE, against="own output",
                              hint="In eval mode dropout must have no effect: the output may not "
                                   "depend on the dropout probability."))
    submission.note("two calls gave the same output, equal to the dropout=0.0 module's")


def test_sequences_attended_independently(submission, generator):
    """Each sequence of a batch is computed from its own tokens only: when every sequence but the
    first changes, the first one's output stays the same. Measured with the model's mask passed
    and the template's RoPE, so a causal-mask or RoPE bug cannot move it."""
    x, qkv_weight, out_weight, _ = _inputs(generator)
    others = x.clone()
    others[1:] = torch.randn(others[1:].shape, generator=generator)
    attribution.require_mixing(submission, x=x, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight,
                               out_weight=out_weight, own_weights_fallback=True)
    request = dict(dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight,
                   mask=attribution.model_mask(SEQ), rope="template", own_weights_fallback=True)
    first = attribution.attention(submission, x=x, **request).run.out[0]
    again = attribution.attention(submission, x=others, **request).run.out[0]
    if not _same(again, first):
        moved = float((again - first).abs().nan_to_num(nan=float("inf")).max())
        fail(Verdict(measured=f"CausalSelfAttention output of sequence 0 in a batch of {BATCH}, "
                              "when only the other sequences change",
                     found=f"moved by up to {moved:.2g}", kind="property",
                     expected="unchanged: each sequence attends to its own tokens only",
                     hint="Look for an operation across the batch (dim 0): a softmax, max, mean "
                          "or sum over dim=0, or a view or transpose that mixes the batch "
                          "dimension with the sequence or the heads."))
    submission.note(f"sequence 0 unchanged when the other {BATCH - 1} changed")
