"""causal_mask: TODO 2's mask. No output or gradient at position t depends on a token after t, in
the attention module and through the whole model, in eval and train mode; yet every position still
sees itself and its past. The attention checks leave forward's mask out, so the module's own mask
is graded; the model (and one attention case in test_sequence_lengths) passes the causal mask, so
reading a passed mask is graded too."""

import math
from dataclasses import replace

import torch

from .. import rubric
from ..verdict import Failed, Verdict, fail
from . import attribution, compare, diagnoses, margin
from .adapters import ATTENTION, attempt_attention, run_model_logits, run_rmsnorm
from .submission import raised

ATOL = rubric.TOLERANCES.causal.atol
DIM, HEADS, SEQ = 32, 4, 8
MODEL = dict(vocab_size=32, dim=32, num_layers=2, num_heads=4, ff_hidden_dim=64, max_seq_len=16,
             dropout=0.0)
MODES = {"eval": False, "train": True}
ONLY_FIRST = ("a mask that hides the diagonal leaves position 0 no allowed key, and a finite fill "
              "such as -1e9 then spreads its softmax over every key")
ONLY_FIRST_HINT = "Only position 0 sees later tokens: let every position attend to itself."
NOT_FINITE = {  # by whether forward got the model's mask: (cause, hint)
    False: ("a row of the mask that allows no key at all (position 0, when the mask hides the "
            "diagonal too) makes the softmax NaN",
            "Let every position attend to itself (torch.tril with diagonal=0)."),
    True: ("some row of the mask your attention applies allows no key at all, so its softmax is NaN",
           "forward got the model's causal mask (torch.tril(torch.ones(T, T)), 1 = may attend, "
           "0 = masked): the passed mask may be read as 1 = blocked, or the diagonal masked too."),
}
UNKNOWN_LEAK = ("Where to look: a causal mask that is missing, applied after the softmax or read "
                "the wrong way round, or an operation that mixes positions (a softmax over the "
                "queries rather than the keys).")


def _weights(generator, dim=DIM):
    """Random [W_q; W_k; W_v] and W_o, scaled so scores and outputs are of order one."""
    return (torch.randn(3 * dim, dim, generator=generator) / math.sqrt(dim),
            torch.randn(dim, dim, generator=generator) / math.sqrt(dim))


def _spans(seq_len):
    """Token spans (first, last) to change: every single token, then every suffix of 2+ tokens."""
    return [(s, s) for s in range(1, seq_len)] + [(s, seq_len - 1) for s in range(1, seq_len - 1)]


def _batch(base, spans, replace_tokens):
    """base (seq, ...) as row 0, then one copy per span with those tokens replaced."""
    rows = [base]
    for first, last in spans:
        row = base.clone()
        row[first:last + 1] = replace_tokens(row[first:last + 1])
        rows.append(row)
    return torch.stack(rows)


def _not_finite(out, what, mask_passed):
    """The Verdict if `out` (batch, seq, ...) has NaN or inf, naming the first such position;
    None if it is finite."""
    bad = ~torch.isfinite(out)
    if not bad.any():
        return None
    position = int(torch.nonzero(bad)[0][1])
    cause, hint = NOT_FINITE[mask_passed]
    return Verdict(measured=f"{what} for finite inputs", found=f"NaN or inf at position {position}",
                   expected="finite values, so that causality can be checked", cause=cause,
                   hint=hint, kind="property")


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


# The checks perturb copies of one sequence within a batch and compare the copies, which
# assumes each sequence is computed on its own. A leak seen only with the copies batched
# together comes from mixing the sequences of a batch, not from the mask: it is measured again
# one sequence at a time, and charged to attention's batch test instead.
BATCH_MIXING = ("outputs of one sequence changed when other sequences of the batch changed, but "
                "run one sequence at a time the {what} is causal: mixing the sequences of a batch "
                "is graded by the attention test 'Each sequence of a batch is attended to on its "
                "own', not here")


def _causal_one_at_a_time(submission, what, run_alone, rows, spans) -> bool:
    """Whether the outputs are causal when each sequence of `rows` (batch, seq, ...) runs alone:
    run_alone(rows) gives them, each computed in a batch of one. If so, the check's leak was the
    batch's, and a note says so."""
    if _leak(run_alone(rows), spans)[0] is not None:
        return False
    submission.note(BATCH_MIXING.format(what=what))
    return True


def _leak_verdict(what, leak, cause="", hint="") -> Verdict:
    position, (first, last), delta = leak
    changed = f"token {first} was" if first == last else f"tokens {first}-{last} were"
    return Verdict(measured=f"{what} at position {position} when {changed} perturbed",
                   found=f"changed (max |delta| {delta:.2g})", expected=f"no change (allowed {ATOL:g})",
                   cause=cause, hint=hint, kind="property")


def _in(context: str, verdict: Verdict) -> Verdict:
    """The verdict of one run, its measurement placed in the run's context ("In eval mode")."""
    return replace(verdict, measured=f"{context}, {verdict.measured}")


def _first_of(verdicts: list) -> Verdict:
    """One Verdict for several failed runs of a check: the first, the others listed after its
    hint (with their cause when it differs)."""
    first = verdicts[0]
    lines = [first.hint]
    for other in verdicts[1:]:
        differs = other.cause not in ("", first.cause)
        lines.append(f"Also: {other.headline()}" + (f" (likely cause: {other.cause})" if differs else ""))
    return replace(first, hint="\n".join(line for line in lines if line))


def _by_mode(failures: dict) -> Verdict:
    """One Verdict for the modes that failed ({mode: Verdict}). When only one did, the mask
    depends on self.training: that is the likely cause, and the failure's own is the hint's."""
    if len(failures) > 1:
        return _first_of([_in(f"In {mode} mode", verdict) for mode, verdict in failures.items()])
    mode, verdict = next(iter(failures.items()))
    other = "train" if mode == "eval" else "eval"
    hint = (f"In {other} mode it was causal: the mask must be applied in both modes."
            + (f" In {mode} mode: {verdict.cause}." if verdict.cause else ""))
    return replace(_in(f"In {mode} mode", verdict),
                   cause=f"the mask is applied only when self.training is {other == 'train'}",
                   hint="\n".join(line for line in (hint, verdict.hint) if line))


def _attention(submission, **request):
    """The attention's run (adapters.AttentionRun). A forward(x) that raises without a mask
    fails the test, saying whether it runs with the model's mask passed (then the missing
    default is the cause)."""
    result, error = attempt_attention(submission, **request)
    if error and request.get("mask") is None:
        seq_len = request["x"].shape[1]
        _, masked_error = attempt_attention(submission,
                                            **{**request, "mask": attribution.model_mask(seq_len)})
        runs = not masked_error
        fail(Verdict(measured="CausalSelfAttention.forward(x)",
                     found=f"raised {error} when no mask was passed"
                           + (f". With the model's mask torch.tril(torch.ones({seq_len}, {seq_len})) "
                              "passed it runs" if runs else ""),
                     cause=_own_mask_cause(submission, request) if runs else "",
                     hint=("forward(x, mask=None) must build its own causal mask when no mask is "
                           "passed (the template's contract: the class is causal on its own)."
                           if runs else ""), kind="raised"))
    if error:
        fail(raised(ATTENTION, error))
    return result


def _own_mask_cause(submission, request) -> str:
    """Why forward(x) raises without a mask while it runs with the model's, from one more run:
    its own mask sized from the batch axis when it runs on a batch as long as the sequence."""
    x = request["x"]
    square = x[:1].expand(x.shape[1], -1, -1).contiguous()
    forward_only = {key: value for key, value in request.items() if key not in ("grad_out", "per_position_grads")}
    _, error = attempt_attention(submission, **{**forward_only, "x": square})
    if not error:
        return ("forward(x, mask=None) builds its own mask from the batch size, not the sequence "
                "length: it runs only when the batch is as long as the sequence (x is (batch, "
                "seq, dim): the sequence length is x.shape[1])")
    return "forward(x, mask=None) builds no causal mask of its own, or builds one that fails"


def _known_bug(got, x, qkv_weight, out_weight):
    """The Diagnosis of the known bug the attention output matches: a mask bug, else an
    attention bug that leaks the future with the mask right (a softmax over the queries), or
    None; None when the module ran with its own weights (the grader's could not be mapped onto
    its layers), which no variant reproduces."""
    if got.own_weights:
        return None
    return (attribution.causal_mask_bug(got.out, x, qkv_weight, out_weight, HEADS)
            or attribution.known_bug(got.out, diagnoses.ATTENTION_VARIANTS, x, qkv_weight,
                                     out_weight, HEADS))


def _attention_causality(submission, generator, seq_len, train, pass_mask=False):
    """None if CausalSelfAttention is causal at this length, else the Verdict why not; forward
    gets no mask, or with pass_mask the model's torch.tril(torch.ones(T, T))."""
    qkv_weight, out_weight = _weights(generator)
    spans = _spans(seq_len)
    x = _batch(torch.randn(seq_len, DIM, generator=generator), spans,
               lambda old: torch.randn(old.shape, generator=generator))
    request = dict(dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight, x=x,
                   train=train, mask=attribution.model_mask(seq_len) if pass_mask else None,
                   own_weights_fallback=True)
    got = _attention(submission, **request)
    if got.out.shape != x.shape:
        return Verdict(measured="the shape of CausalSelfAttention's output",
                       found=f"{tuple(got.out.shape)} for an input of shape {tuple(x.shape)}",
                       expected="the input's shape")
    problem = _not_finite(got.out, "the attention output", pass_mask)
    if problem is not None:
        return problem
    leak, only_first = _leak(got.out, spans)
    if leak is None or _causal_one_at_a_time(
            submission, "attention", lambda rows: torch.cat(
                [_attention(submission, **{**request, "x": row}).out for row in rows.split(1)]),
            x, spans):
        return None
    known = _known_bug(got, x, qkv_weight, out_weight)
    if known:
        return _leak_verdict("outputs", leak, cause=known.cause, hint=known.hint)
    if only_first:
        return _leak_verdict("outputs", leak, cause=ONLY_FIRST, hint=ONLY_FIRST_HINT)
    return _leak_verdict("outputs", leak, hint=UNKNOWN_LEAK)


def _norm_works(submission, reference, generator):
    """Whether the student's RMSNorm runs and matches; if not, the model checks use
    torch.nn.RMSNorm instead, so an RMSNorm bug costs points in rmsnorm only."""
    x = torch.randn(2, 5, 8, generator=generator)
    try:
        got = run_rmsnorm(submission, dim=8, eps=1e-6, scale=torch.ones(8), x=x, grad_out=torch.ones_like(x))
    except Failed:
        return False
    return compare.close(got.out, reference.RMSNorm(8, eps=1e-6)(x).detach(),
                         rubric.TOLERANCES.rmsnorm)


def _model_causality(submission, generator, seq_len, train, substitute_norm):
    """None if the model's logits are causal at this length, else the Verdict why not."""
    vocab = MODEL["vocab_size"]
    spans = _spans(seq_len)
    ids = _batch(torch.randint(vocab, (seq_len,), generator=generator), spans,  # all tokens differ
                 lambda old: (old + torch.randint(1, vocab, old.shape, generator=generator))
                 % vocab)
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    (logits,) = run_model_logits(submission, config=MODEL, seed=seed, inputs=[ids], train=train,
                                 substitute_norm=substitute_norm)
    expected = (*ids.shape, vocab)
    if tuple(logits.shape) != expected:
        return Verdict(measured="the shape of DecoderOnlyTransformer's logits",
                       found=f"{tuple(logits.shape)} for input ids of shape {tuple(ids.shape)}",
                       expected=f"{expected}")
    problem = _not_finite(logits, "the model's logits", True)
    if problem is not None:
        return problem
    leak, _ = _leak(logits, spans)
    if leak is None or _causal_one_at_a_time(
            submission, "model", lambda rows: torch.cat(run_model_logits(
                submission, config=MODEL, seed=seed, inputs=list(rows.split(1)), train=train,
                substitute_norm=substitute_norm)), ids, spans):
        return None
    return _leak_verdict("the model's logits", leak,
                         hint="The model passes its causal mask (torch.tril(torch.ones(T, T)), 1 = "
                              "may attend, 0 = masked) to every attention layer, and your attention "
                              "lets an earlier position see a later token with it: the mask may be "
                              "missing, applied after the softmax, or read the wrong way round, or "
                              "the softmax taken over the queries rather than the keys.")


def test_attention_ignores_future_tokens(submission, generator):
    failures = {}
    for mode, train in MODES.items():
        problem = _attention_causality(submission, generator, SEQ, train)
        if problem is not None:
            failures[mode] = problem
    if failures:
        fail(_by_mode(failures))


def _future_gradients(rows) -> torch.Tensor:
    """[t, s]: the largest |gradient| of the output at position t with respect to input token
    s > t (0 for s <= t), from rows[t], the gradient of <out[:, t], grad_out[:, t]> w.r.t. x
    (batch, seq, dim)."""
    seq_len = rows.shape[0]
    future = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
    return rows.abs().amax(dim=(1, 3)).masked_fill(~future, 0.0)


def test_attention_future_gradients_are_zero(submission, generator, extra):
    qkv_weight, out_weight = _weights(generator)
    x = torch.randn(2, SEQ, DIM, generator=generator)
    grad_out = torch.randn(2, SEQ, DIM, generator=generator)
    failures = {}
    for mode, train in MODES.items():
        request = dict(dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight, out_weight=out_weight,
                       train=train, per_position_grads=True, own_weights_fallback=True)
        got = _attention(submission, x=x, grad_out=grad_out, **request)
        problem = _not_finite(got.out, "the attention output", False)
        if problem is not None:
            failures[mode] = problem
            continue
        size = _future_gradients(got.rows)
        leaky = torch.nonzero(~(size <= ATOL))  # NaN counts as leaking
        margin.record(extra, margin.at_most(size.max(), ATOL, "max |gradient from a future token| <= atol"))
        if not len(leaky):
            continue
        if all(torch.all(_future_gradients(_attention(submission, x=row, grad_out=row_grad, **request).rows)
                         <= ATOL) for row, row_grad in zip(x.split(1), grad_out.split(1))):
            submission.note(BATCH_MIXING.format(what="attention"))
            continue
        t = int(leaky[0, 0])
        s = int(size[t].nan_to_num(float("inf")).argmax())
        known = _known_bug(got, x, qkv_weight, out_weight)
        if known:
            cause, hint = known.cause, known.hint
        elif not leaky[:, 0].any():
            cause, hint = ONLY_FIRST, ONLY_FIRST_HINT
        else:
            cause, hint = "", (UNKNOWN_LEAK + " Weights zeroed after the softmax still pass "
                               "gradient to later keys through its normalisation.")
        failures[mode] = Verdict(
            measured=f"the gradient of the output at position {t} with respect to input token {s}",
            found=f"{float(size[t, s]):.2g} (max |.|)",
            expected=f"0 (allowed {ATOL:g}) for every token after {t}", cause=cause, hint=hint,
            kind="property")
    if failures:
        fail(_by_mode(failures))


def test_attention_sees_itself_and_past(submission, generator, extra):
    qkv_weight, out_weight = _weights(generator)
    # W_q = 0 makes every score 0, so each allowed key gets the same weight and the gradient on
    # token s reaches output t only through s's value: it is non-zero exactly when t sees s.
    qkv_weight[:DIM] = 0.0
    x = torch.randn(2, SEQ, DIM, generator=generator)
    grad_out = torch.randn(2, SEQ, DIM, generator=generator)
    got = _attention(submission, dim=DIM, num_heads=HEADS, qkv_weight=qkv_weight,
                     out_weight=out_weight, x=x, grad_out=grad_out, per_position_grads=True,
                     own_weights_fallback=True)
    problem = _not_finite(got.out, "the attention output", False)
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


def test_model_ignores_future_tokens(submission, reference, generator):
    substitute_norm = not _norm_works(submission, reference, generator)
    failures = {}
    for mode, train in MODES.items():
        problem = _model_causality(submission, generator, 12, train, substitute_norm)
        if problem is not None:
            failures[mode] = problem
    if failures:
        fail(_by_mode(failures))


def test_sequence_lengths(submission, reference, generator):
    problems = {}  # what was run -> {sequence length: Verdict or None}
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
        failing = [seq_len for seq_len, problem in by_length.items() if problem is not None]
        if failing:
            verdict = _in(f"{what}, sequence length {failing[0]}", by_length[failing[0]])
            also = f"Also at length {', '.join(map(str, failing[1:]))}." if failing[1:] else ""
            failures.append(replace(verdict, hint="\n".join(line for line in (verdict.hint, also) if line)))
    if failures:
        fail(_first_of(failures))
