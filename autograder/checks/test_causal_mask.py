"""causal_mask: TODO 2's mask. No output or gradient at position t depends on a token after t, in
the attention module and through the whole model, in eval and train mode; yet every position still
sees itself and its past. The attention checks leave forward's mask out, so the module's own mask
is graded; the model (and one attention case in test_sequence_lengths) passes the causal mask, so
reading a passed mask is graded too."""

import math

import pytest
import torch

from .. import rubric
from . import attribution, compare, diagnoses

ATOL = rubric.TOLERANCES.causal.atol
DIM, HEADS, SEQ = 32, 4, 8
MODEL = dict(vocab_size=32, dim=32, num_layers=2, num_heads=4, ff_hidden_dim=64, max_seq_len=16,
             dropout=0.0)
MODES = {"eval": False, "train": True}
ONLY_FIRST_HINT = ("only position 0 sees later tokens: a mask that hides the diagonal leaves "
                   "position 0 no allowed key, and a finite fill such as -1e9 then spreads its "
                   "softmax over every key; let every position attend to itself")
NAN_HINTS = {  # by whether forward got the model's mask
    False: "a row of the mask that allows no key at all (position 0, when the mask hides the "
           "diagonal too) makes the softmax NaN: let every position attend to itself "
           "(torch.tril with diagonal=0)",
    True: "forward got the model's causal mask (torch.tril(torch.ones(T, T)), 1 = may attend, "
          "0 = masked) and some row of the mask your attention applies allows no key at all, so "
          "its softmax is NaN: the passed mask may be read as 1 = blocked, or the diagonal "
          "masked too",
}


def _weights(generator, dim=DIM):
    """Random [W_q; W_k; W_v] and W_o, scaled so scores and outputs are of order one."""
    return (torch.randn(3 * dim, dim, generator=generator) / math.sqrt(dim),
            torch.randn(dim, dim, generator=generator) / math.sqrt(dim))


def _spans(seq_len):
    """Token spans (first, last) to change: every single token, then every suffix of 2+ tokens."""
    return [(s, s) for s in range(1, seq_len)] + [(s, seq_len - 1) for s in range(1, seq_len - 1)]


def _batch(base, spans, replace):
    """base (seq, ...) as row 0, then one copy per span with those tokens replaced."""
    rows = [base]
    for first, last in spans:
        row = base.clone()
        row[first:last + 1] = replace(row[first:last + 1])
        rows.append(row)
    return torch.stack(rows)


def _not_finite(out, what, mask_passed):
    """A message if `out` (batch, seq, ...) has NaN or inf, naming the first such position."""
    bad = ~torch.isfinite(out)
    if not bad.any():
        return ""
    position = int(torch.nonzero(bad)[0][1])
    return (f"NaN or inf in {what} at position {position} for finite inputs, so causality cannot "
            f"be checked. Likely cause: {NAN_HINTS[mask_passed]}")


def _leak(out, spans):
    """(position, span, max |delta|) of the earliest output that moved when only later tokens
    changed (preferring a single changed token, then the largest move), and whether every move
    was at position 0 while later positions could have moved too (at length 2 only position 0
    has a later token, so a leak there says nothing about where else the mask fails)."""
    worst, key, only_first = None, None, any(first >= 2 for first, _ in spans)
    for row, (first, last) in enumerate(spans, start=1):
        delta = (out[row, :first] - out[0, :first]).abs().flatten(1).amax(1)  # per position
        moved = torch.nonzero(delta > ATOL).flatten().tolist()
        if moved:
            only_first &= moved == [0]
            position = moved[0]
            candidate = (position, first != last, -float(delta[position]))
            if key is None or candidate < key:
                key, worst = candidate, (position, (first, last), float(delta[position]))
    return worst, only_first


def _describe_leak(what, leak):
    position, (first, last), delta = leak
    changed = f"token {first} was" if first == last else f"tokens {first}-{last} were"
    return (f"{what} at position {position} changed (max |delta| {delta:.2g}, allowed {ATOL:g}) "
            f"when {changed} perturbed")


def _mode_hint(failures):
    """A hint when only one of eval/train mode leaked: the mask depends on self.training."""
    if len(failures) == 1:
        mode = next(iter(failures))
        other = "train" if mode == "eval" else "eval"
        return (f"\nIn {other} mode it was causal: is the mask applied only when self.training is "
                f"{other == 'train'}? It must be applied in both modes.")
    return ""


def _attention(submission, **request) -> dict:
    """The attention result. A forward(x) that raises without a mask fails the test, saying
    whether it runs with the model's mask passed (then the missing default is the cause)."""
    result, error = submission.attempt("attention", "CausalSelfAttention", **request)
    if error and request.get("mask") is None:
        seq_len = request["x"].shape[1]
        _, masked_error = submission.attempt("attention", "CausalSelfAttention", **{
            **request, "mask": attribution.model_mask(seq_len)})
        pytest.fail(f"CausalSelfAttention.forward(x) raised {error} when no mask was passed"
                    + ("" if masked_error else
                       f". With the model's mask torch.tril(torch.ones({seq_len}, {seq_len})) "
                       "passed it runs: forward(x, mask=None) must build its own causal mask "
                       "when no mask is passed (the template's contract: the class is causal "
                       "on its own)"), pytrace=False)
    if error:
        pytest.fail(f"CausalSelfAttention raised {error}", pytrace=False)
    return result


def _known_bug(got, x, qkv_weight, out_weight) -> str:
    """The known mask bug the attention output matches, or ''; '' when the module ran with its
    own weights (the grader's could not be mapped onto its layers), which no variant reproduces."""
    if got["own_weights"]:
        return ""
    return diagnoses.causal_mask_bug(got["out"], x, qkv_weight, out_weight, HEADS,
                                     rubric.TOLERANCES.attention)


def _attention_causality(submission, generator, seq_len, train, pass_mask=False):
    """'' if CausalSelfAttention is causal at this length, else why not; forward gets no mask, or
    with pass_mask the model's torch.tril(torch.ones(T, T))."""
    qkv_weight, out_weight = _weights(generator)
    spans = _spans(seq_len)
    x = _batch(torch.randn(seq_len, DIM, generator=generator), spans,
               lambda old: torch.randn(old.shape, generator=generator))
    got = _attention(submission, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight,
                     out_weight=out_weight, x=x, train=train,
                     mask=attribution.model_mask(seq_len) if pass_mask else None,
                     own_weights_fallback=True)
    out = got["out"]
    if out.shape != x.shape:
        return (f"CausalSelfAttention returned shape {tuple(out.shape)} for an input of shape "
                f"{tuple(x.shape)}; expected the input's shape")
    problem = _not_finite(out, "the attention output", pass_mask)
    if problem:
        return problem
    leak, only_first = _leak(out, spans)
    if leak is None:
        return ""
    cause = _known_bug(got, x, qkv_weight, out_weight)
    if not cause and only_first:
        cause = ONLY_FIRST_HINT
    return (_describe_leak("outputs", leak) + ": "
            + (cause or "the causal mask is missing or applied after the softmax"))


def _norm_works(submission, reference, generator):
    """Whether the student's RMSNorm runs and matches; if not, the model checks use
    torch.nn.RMSNorm instead, so an RMSNorm bug costs points in rmsnorm only."""
    x = torch.randn(2, 5, 8, generator=generator)
    try:
        got = submission.call("rmsnorm", "RMSNorm", dim=8, eps=1e-6, scale=torch.ones(8), x=x,
                           grad_out=torch.ones_like(x))
    except pytest.fail.Exception:
        return False
    return compare.close(got["out"], reference.RMSNorm(8, eps=1e-6)(x).detach(),
                         rubric.TOLERANCES.rmsnorm)


def _model_causality(submission, generator, seq_len, train, substitute_norm):
    """'' if the model's logits are causal at this length, else why not."""
    vocab = MODEL["vocab_size"]
    spans = _spans(seq_len)
    ids = _batch(torch.randint(vocab, (seq_len,), generator=generator), spans,  # all tokens differ
                 lambda old: (old + torch.randint(1, vocab, old.shape, generator=generator))
                 % vocab)
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    logits = submission.call("model_logits", "DecoderOnlyTransformer", config=MODEL, seed=seed,
                          inputs=[ids], train=train, substitute_norm=substitute_norm)["logits"][0]
    expected = (*ids.shape, vocab)
    if tuple(logits.shape) != expected:
        return (f"DecoderOnlyTransformer returned logits of shape {tuple(logits.shape)} for input "
                f"ids of shape {tuple(ids.shape)}; expected {expected}")
    problem = _not_finite(logits, "the model's logits", True)
    if problem:
        return problem
    leak, _ = _leak(logits, spans)
    if leak is None:
        return ""
    return (_describe_leak("the model's logits", leak) + ": the model passes its causal mask "
            "(torch.tril(torch.ones(T, T)), 1 = may attend, 0 = masked) to every attention layer; "
            "your attention lets an earlier position see a later token with it. The mask may be "
            "missing, applied after the softmax, or read the wrong way round")


def test_attention_ignores_future_tokens(submission, generator):
    failures = {}
    for mode, train in MODES.items():
        problem = _attention_causality(submission, generator, SEQ, train)
        if problem:
            failures[mode] = f"In {mode} mode, {problem}."
    if failures:
        pytest.fail("\n".join(failures.values()) + _mode_hint(failures), pytrace=False)


def test_attention_future_gradients_are_zero(submission, generator):
    qkv_weight, out_weight = _weights(generator)
    x = torch.randn(2, SEQ, DIM, generator=generator)
    grad_out = torch.randn(2, SEQ, DIM, generator=generator)
    future = torch.ones(SEQ, SEQ, dtype=torch.bool).triu(1)  # [t, s]: s > t
    failures = {}
    for mode, train in MODES.items():
        got = _attention(submission, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight,
                         out_weight=out_weight, x=x, train=train, grad_out=grad_out,
                         per_position_grads=True, own_weights_fallback=True)
        problem = _not_finite(got["out"], "the attention output", False)
        if problem:
            failures[mode] = f"In {mode} mode, {problem}."
            continue
        # rows[t]: gradient of <out[:, t], grad_out[:, t]> w.r.t. x, shape (batch, seq, dim)
        size = got["rows"].abs().amax(dim=(1, 3)).masked_fill(~future, 0.0)  # [t, s]
        leaky = torch.nonzero(~(size <= ATOL))  # NaN counts as leaking
        if not len(leaky):
            continue
        t = int(leaky[0, 0])
        s = int(size[t].nan_to_num(float("inf")).argmax())
        cause = _known_bug(got, x, qkv_weight, out_weight)
        if not cause:
            cause = ONLY_FIRST_HINT if not leaky[:, 0].any() else (
                "the causal mask is missing or applied after the softmax (weights zeroed after "
                "the softmax still pass gradient to later keys through its normalisation)")
        failures[mode] = (f"In {mode} mode, the gradient of the output at position {t} with "
                          f"respect to input token {s} is {float(size[t, s]):.2g} (max |.|); "
                          f"expected 0 (allowed {ATOL:g}) for every token after {t}: {cause}.")
    if failures:
        pytest.fail("\n".join(failures.values()) + _mode_hint(failures), pytrace=False)


def test_attention_sees_itself_and_past(submission, generator):
    qkv_weight, out_weight = _weights(generator)
    # W_q = 0 makes every score 0, so each allowed key gets the same weight and the gradient on
    # token s reaches output t only through s's value: it is non-zero exactly when t sees s.
    qkv_weight[:DIM] = 0.0
    x = torch.randn(2, SEQ, DIM, generator=generator)
    grad_out = torch.randn(2, SEQ, DIM, generator=generator)
    got = _attention(submission, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight,
                     out_weight=out_weight, x=x, grad_out=grad_out, per_position_grads=True,
                     own_weights_fallback=True)
    problem = _not_finite(got["out"], "the attention output", False)
    if problem:
        pytest.fail(problem + ".", pytrace=False)
    size = got["rows"].abs().amax(dim=(1, 3))  # [t, s]
    if not size.max() > 0:
        pytest.fail("no gradient reached the input x: is the attention output computed from x "
                    "with differentiable torch operations?", pytrace=False)
    # A hidden key's gradient is exactly 0; a seen one's is |W_v^T W_o^T grad_out| / (t + 1),
    # measured >= 0.054 of the largest over 50 seeds, so 1e-3 of the largest separates them.
    # A module whose projections the grader cannot map runs with its own initial weights (not
    # uniform attention): the reference so initialised, >= 0.065 of the largest over 30 seeds.
    blind = (size <= 1e-3 * size.max()) & torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    if blind.diagonal().any():
        t = int(torch.nonzero(blind.diagonal())[0])
        pytest.fail(f"the output at position {t} does not depend on its own token (gradient "
                    f"{float(size[t, t]):.2g} through the value of token {t}): the mask hides the "
                    "diagonal. Position t must attend to every s <= t, itself included: mask only "
                    "s > t (torch.tril(ones) keeps, or torch.triu(ones, diagonal=1) blocks).",
                    pytrace=False)
    if blind.any():
        t, s = (int(i) for i in torch.nonzero(blind)[0])
        pytest.fail(f"the output at position {t} does not depend on the earlier token {s} "
                    f"(gradient {float(size[t, s]):.2g} through its value): the mask is too "
                    "strict or hides the past; position t must attend to every s <= t, and only "
                    "s > t may be masked.", pytrace=False)


def test_model_ignores_future_tokens(submission, reference, generator):
    substitute_norm = not _norm_works(submission, reference, generator)
    failures = {}
    for mode, train in MODES.items():
        problem = _model_causality(submission, generator, 12, train, substitute_norm)
        if problem:
            failures[mode] = f"In {mode} mode, {problem}."
    if failures:
        pytest.fail("\n".join(failures.values()) + _mode_hint(failures), pytrace=False)


def test_sequence_lengths(submission, reference, generator):
    problems = {}  # what was run -> {sequence length: problem or ''}
    for seq_len in (1, 2, 17, 64):
        for pass_mask, how in ((False, "no mask passed"), (True, "the model's mask passed")):
            problems.setdefault(f"CausalSelfAttention with {how}", {})[seq_len] = (
                _attention_causality(submission, generator, seq_len, False, pass_mask))
    substitute_norm = not _norm_works(submission, reference, generator)
    for seq_len in (1, 2, 9, MODEL["max_seq_len"]):
        problems.setdefault(f"DecoderOnlyTransformer (max_seq_len {MODEL['max_seq_len']})", {})[
            seq_len] = _model_causality(submission, generator, seq_len, False, substitute_norm)
    failures = []
    for what, by_length in problems.items():
        failing = [seq_len for seq_len, problem in by_length.items() if problem]
        if failing:
            failures.append(f"{what}, sequence length {failing[0]}: {by_length[failing[0]]}."
                            + (f" (Also at length {', '.join(map(str, failing[1:]))}.)"
                               if failing[1:] else ""))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
