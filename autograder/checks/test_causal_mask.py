"""causal_mask: TODO 2's mask. No output or gradient at position t depends on a token after t, in
the attention module and through the whole model, in eval and train mode, with autograd recording
or not; yet every position still sees itself and its past. The attention checks leave forward's
mask out, so the module's own mask is graded; the model (and one attention case in
test_sequence_lengths) passes the causal mask, so reading a passed mask is graded too. How the
probes defeat code that keeps state between calls is in causality.py."""

from dataclasses import replace

import pytest
import torch

from .. import grading_seed, rubric
from ..grading_plugin import CONTEXT
from ..verdict import Verdict, fail
from . import margin
from .causality import (ATOL, ATTENTION_LENGTHS, BATCH_MIXING, DIM, EVAL_RUNS, EVERY_RUN, HEADS,
                        MODEL, MODEL_LENGTHS, MODEL_SEQ, MODES, ONLY_FIRST, ONLY_FIRST_HINT, SEQ,
                        UNKNOWN_LEAK, attention, attention_causality, by_run, first_of,
                        future_gradients, in_context, inert_verdict, known_bug, model_causality,
                        not_finite, past_gradients,
                        plan, random_weights, run_witnesses)


def test_attention_ignores_future_tokens(submission, probes, witnesses):
    key = ("attention", SEQ, False)
    failures = attention_causality(submission, probes[key], witnesses.outputs.get(key))
    if failures:
        fail(by_run(failures, EVERY_RUN))


def test_attention_future_gradients_are_zero(submission, probes, witnesses, extra):
    key = ("gradients", SEQ, False)
    probe, alone = probes[key], witnesses.outputs.get(key)
    failures = {}
    for mode, train in MODES.items():
        got = attention(submission, **probe.request(train))
        problem = not_finite(got.out, "the attention output", False)
        if problem is not None:
            failures[mode, "enabled"] = problem
            continue
        size = future_gradients(got.rows)
        leaky = torch.nonzero(~(size <= ATOL))  # NaN counts as leaking
        margin.record(extra, margin.at_most(size.max(), ATOL, "max |gradient from a future token| <= atol"))
        if not len(leaky):
            if not bool((past_gradients(got.rows) > ATOL).any()):
                failures[mode, "enabled"] = replace(
                    inert_verdict("the gradients of the outputs"),
                    found="zero from every earlier token: no position depends on its past")
            continue
        known = known_bug(got.out, got.own_weights, probe.x, probe.weights)
        # Each sequence on its own, run in the process that never saw this batch (so no rows
        # remembered from it): a leak that is not there comes from mixing the batch's sequences.
        if known is None and isinstance(alone, dict) and all(
                torch.all(future_gradients(rows) <= ATOL) for rows in alone[mode]):
            submission.note(BATCH_MIXING.format(what="attention"))
            continue
        t = int(leaky[0, 0])
        s = int(size[t].nan_to_num(float("inf")).argmax())
        if known:
            cause, hint = known.cause, known.hint
        elif not leaky[:, 0].any():
            cause, hint = ONLY_FIRST, ONLY_FIRST_HINT
        else:
            cause, hint = "", (UNKNOWN_LEAK + " Weights zeroed after the softmax still pass "
                               "gradient to later keys through its normalisation.")
        failures[mode, "enabled"] = Verdict(
            measured=f"the gradient of the output at position {t} with respect to input token {s}",
            found=f"{float(size[t, s]):.2g} (max |.|)",
            expected=f"0 (allowed {ATOL:g}) for every token after {t}", cause=cause, hint=hint,
            kind="property")
    if failures:
        fail(by_run(failures, (("eval", "enabled"), ("train", "enabled"))))


def test_attention_sees_itself_and_past(submission, generator, extra):
    qkv_weight, out_weight = random_weights(generator)
    # W_q = 0 makes every score 0, so each allowed key gets the same weight and the gradient on
    # token s reaches output t only through s's value: it is non-zero exactly when t sees s.
    qkv_weight[:DIM] = 0.0
    x = torch.randn(2, SEQ, DIM, generator=generator)
    grad_out = torch.randn(2, SEQ, DIM, generator=generator)
    got = attention(submission, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight,
                    out_weight=out_weight, x=x, grad_out=grad_out, per_position_grads=True,
                    own_weights_fallback=True)
    problem = not_finite(got.out, "the attention output", False)
    if problem is not None:
        fail(problem)
    size = got.rows.abs().amax(dim=(1, 3))  # [t, s]
    if not size.max() > 0:
        fail(Verdict(measured="the gradient of the attention output with respect to its input x",
                     found="none reached it", kind="property",
                     hint="Is the attention output computed from x with differentiable torch operations?"))
    # A hidden key's gradient is exactly 0; a seen one's is |W_v^T W_o^T grad_out| / (t + 1),
    # measured >= 0.054 of the largest over 50 seeds, so 1e-3 of the largest separates them.
    # A module whose projections the grader cannot map runs with its own initial weights (not
    # uniform attention): the reference so initialised, >= 0.065 of the largest over 30 seeds.
    seen = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    blind = (size <= 1e-3 * size.max()) & seen
    margin.record(extra, margin.at_least(size[seen].min() / size.max(), 1e-3,
                                         "smallest |gradient from a seen token| / largest >= 1e-3"))
    expected = f"above {1e-3:g} of the largest (position t sees every token s <= t)"
    if blind.diagonal().any():
        t = int(torch.nonzero(blind.diagonal())[0])
        fail(Verdict(measured=f"the dependence of the output at position {t} on its own token",
                     found=f"gradient {float(size[t, t]):.2g} through the value of token {t}",
                     expected=expected, cause="the mask hides the diagonal", kind="property",
                     hint="Position t must attend to every s <= t, itself included: mask only s > t "
                          "(torch.tril(ones) keeps, or torch.triu(ones, diagonal=1) blocks)."))
    if blind.any():
        t, s = (int(i) for i in torch.nonzero(blind)[0])
        fail(Verdict(measured=f"the dependence of the output at position {t} on the earlier token {s}",
                     found=f"gradient {float(size[t, s]):.2g} through its value", expected=expected,
                     cause="the mask is too strict or hides the past", kind="property",
                     hint="Position t must attend to every s <= t, and only s > t may be masked."))


def test_model_ignores_future_tokens(submission, probes, witnesses):
    key = ("model", MODEL_SEQ, True)
    failures = model_causality(submission, probes[key], witnesses.outputs.get(key),
                               witnesses.substitute_norm)
    if failures:
        fail(by_run(failures, EVERY_RUN))


def test_sequence_lengths(submission, probes, witnesses):
    problems = {}  # what was run -> {sequence length: {(mode, autograd): Verdict}}
    for seq_len in ATTENTION_LENGTHS:
        for pass_mask, how in ((False, "no mask passed"), (True, "the model's mask passed")):
            key = ("attention", seq_len, pass_mask)
            problems.setdefault(f"CausalSelfAttention with {how}", {})[seq_len] = attention_causality(
                submission, probes[key], witnesses.outputs.get(key))
    for seq_len in MODEL_LENGTHS:
        key = ("model", seq_len, True)
        problems.setdefault(f"DecoderOnlyTransformer (max_seq_len {MODEL['max_seq_len']})", {})[
            seq_len] = model_causality(submission, probes[key], witnesses.outputs.get(key),
                                       witnesses.substitute_norm)
    verdicts = []
    for what, by_length in problems.items():
        failing = [seq_len for seq_len, failures in by_length.items() if failures]
        if failing:
            verdict = in_context(f"{what}, sequence length {failing[0]}",
                                 by_run(by_length[failing[0]], EVAL_RUNS))
            also = f"Also at length {', '.join(map(str, failing[1:]))}." if failing[1:] else ""
            verdicts.append(replace(verdict, hint="\n".join(line for line in (verdict.hint, also) if line)))
    if verdicts:
        fail(first_of(verdicts))


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def probes(pytestconfig) -> dict:
    """Every probe of this file, drawn from the grading's secret (causality.plan)."""
    return plan(pytestconfig.stash[CONTEXT].seed)


@pytest.fixture(scope="module")
def witnesses(pytestconfig, probes):
    """The probes' witnesses, run before any base in a worker process that is then retired, under
    a time limit of their own (the longest of this category's)."""
    context = pytestconfig.stash[CONTEXT]
    seconds = max(rule.timeout for rule in rubric.RULES if rule.category == "causal_mask")
    with context.submission.aside("the causal checks' witnesses", seconds):
        return run_witnesses(context.submission, probes,
                             grading_seed.generator(context.seed, "test_causal_mask.py/witnesses"))
