"""The machinery of test_causal_mask.py: probes of causality that the submission's process cannot
shape, and the Verdicts on what they find.

A probe is a base sequence and copies of it with later tokens changed, sent as one batch in a
shuffled order: outputs at positions before the change must not move. Code can pass that while
leaking the future, by keeping state between calls (an attention that remembers the rows it
computed for a prefix answers every copy alike) or by masking only in some calls (only while
autograd records). So each probe is also:

- run in eval and train mode, with autograd recording, under torch.no_grad() and under
  torch.inference_mode(), in an order drawn per grading;
- compared with its witness: the base's tokens before a cut drawn per grading, then new tokens,
  run in another worker process that never saw the base (and the base's process never sees the
  witness). Outputs before the cut must equal the base's. Nothing in the witness's process tells
  what the base's later tokens are, so no state kept there can make the two agree unless each
  output depends on its prefix only.

Every value comes from the grading's secret (grading_seed.py), so nothing is known in advance.
"""

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from .. import grading_seed, rubric
from ..verdict import Failed, Verdict, fail
from . import attribution, compare, diagnoses, oracle
from .adapters import ATTENTION, attempt_attention, attempt_attention_runs, run_model_runs, run_rmsnorm
from .submission import raised

ATOL = rubric.TOLERANCES.causal.atol
DIM, HEADS, SEQ = 32, 4, 8
MODEL = dict(vocab_size=32, dim=32, num_layers=2, num_heads=4, ff_hidden_dim=64, max_seq_len=16,
             dropout=0.0)
MODEL_SEQ = 12
MODES = {"eval": False, "train": True}
AUTOGRAD = {"enabled": "with autograd recording", "no_grad": "under torch.no_grad()",
            "inference_mode": "under torch.inference_mode()"}
EVERY_RUN = tuple((mode, autograd) for mode in MODES for autograd in AUTOGRAD)
EVAL_RUNS = tuple(("eval", autograd) for autograd in AUTOGRAD)
ATTENTION_LENGTHS = (1, 2, 17, 64)
MODEL_LENGTHS = (1, 2, 9, MODEL["max_seq_len"])

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
MODEL_LEAK_HINT = ("The model passes its causal mask (torch.tril(torch.ones(T, T)), 1 = may attend, "
                   "0 = masked) to every attention layer, and your attention lets an earlier position "
                   "see a later token with it: the mask may be missing, applied after the softmax, or "
                   "read the wrong way round, or the softmax taken over the queries rather than the keys.")
# The checks perturb copies of one sequence within a batch and compare the copies, which
# assumes each sequence is computed on its own. A leak seen only with the copies batched
# together comes from mixing the sequences of a batch, not from the mask: it is measured again
# one sequence at a time, and charged to attention's batch test instead.
BATCH_MIXING = ("outputs of one sequence changed when other sequences of the batch changed, but "
                "run one sequence at a time the {what} is causal: mixing the sequences of a batch "
                "is graded by the attention test 'Each sequence of a batch is attended to on its "
                "own', not here")
WITNESS_HINT = ("Within one call your outputs before token {cut} did not move when later tokens "
                "changed, but for a sequence that shares only tokens 0-{last} with it, computed in "
                "a fresh process, they differ: the output at position t depends on more than tokens "
                "0..t (on later tokens, or on what earlier calls computed, such as remembered "
                "outputs), or on randomness that torch.manual_seed does not fix.")


# -- probes ---------------------------------------------------------------------------------------

def spans(seq_len):
    """Token spans (first, last) to change: every single token, then every suffix of 2+ tokens."""
    return [(s, s) for s in range(1, seq_len)] + [(s, seq_len - 1) for s in range(1, seq_len - 1)]


@dataclass(frozen=True)
class Probe:
    """rows (n, seq, ...): row 0 the base, row i its copy with spans[i - 1] changed; the batch
    sent is rows[order]. witness (1, seq, ...): the base's tokens before `cut`, then new ones
    (None at length 1). runs: the (mode, autograd) it is measured under, in the order sent.
    For the attention: weights ([W_q; W_k; W_v], W_o) and the mask passed (None: its own);
    for the model: the seed it is built with."""

    rows: torch.Tensor
    spans: list
    order: torch.Tensor
    witness: Optional[torch.Tensor]
    cut: int
    runs: tuple
    weights: tuple = ()
    mask: Optional[torch.Tensor] = None
    seed: int = 0

    @property
    def seq_len(self) -> int:
        return self.rows.shape[1]

    @property
    def batch(self) -> torch.Tensor:
        return self.rows[self.order]

    def unshuffled(self, out: torch.Tensor) -> torch.Tensor:
        """The outputs of the batch sent, put back in the order of rows."""
        result = torch.empty_like(out)
        result[self.order] = out
        return result


def _probe(base, replace_tokens, generator, runs, **kind) -> Probe:
    seq_len = base.shape[0]
    changed = spans(seq_len)
    rows = [base]
    for first, last in changed:
        row = base.clone()
        row[first:last + 1] = replace_tokens(row[first:last + 1])
        rows.append(row)
    witness, cut = None, 0
    if seq_len > 1:
        cut = int(torch.randint(1, seq_len, (), generator=generator))
        witness = base.clone()
        witness[cut:] = replace_tokens(witness[cut:])
        witness = witness[None]
    order = torch.randperm(len(rows), generator=generator)
    runs = tuple(runs[i] for i in torch.randperm(len(runs), generator=generator))
    return Probe(torch.stack(rows), changed, order, witness, cut, runs, **kind)


def random_weights(generator) -> tuple:
    """Random [W_q; W_k; W_v] and W_o, scaled so scores and outputs are of order one."""
    return (torch.randn(3 * DIM, DIM, generator=generator) / math.sqrt(DIM),
            torch.randn(DIM, DIM, generator=generator) / math.sqrt(DIM))


def future_gradients(rows) -> torch.Tensor:
    """[t, s]: the largest |gradient| of the output at position t with respect to input token
    s > t (0 for s <= t), from rows[t], the gradient of <out[:, t], grad_out[:, t]> w.r.t. x
    (batch, seq, dim)."""
    seq_len = rows.shape[0]
    future = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
    return rows.abs().amax(dim=(1, 3)).masked_fill(~future, 0.0)


def past_gradients(rows) -> torch.Tensor:
    """[t, s]: as future_gradients, for input tokens s < t (0 elsewhere)."""
    seq_len = rows.shape[0]
    past = torch.ones(seq_len, seq_len, dtype=torch.bool).tril(-1)
    return rows.abs().amax(dim=(1, 3)).masked_fill(~past, 0.0)


def attention_probe(generator, seq_len, pass_mask, runs) -> Probe:
    """Random weights and a random base."""
    weights = random_weights(generator)
    return _probe(torch.randn(seq_len, DIM, generator=generator),
                  lambda old: torch.randn(old.shape, generator=generator), generator, runs,
                  weights=weights, mask=attribution.model_mask(seq_len) if pass_mask else None)


def model_probe(generator, seq_len, runs) -> Probe:
    """A random base of token ids; a changed token always differs from the base's."""
    vocab = MODEL["vocab_size"]
    seed = int(torch.randint(2**31 - 1, (), generator=generator))
    return _probe(torch.randint(vocab, (seq_len,), generator=generator),
                  lambda old: (old + torch.randint(1, vocab, old.shape, generator=generator)) % vocab,
                  generator, runs, seed=seed)


@dataclass(frozen=True)
class GradientProbe:
    """Inputs x and output gradients grad_out (2, seq, dim) and weights for the gradient check."""

    x: torch.Tensor
    grad_out: torch.Tensor
    weights: tuple

    def request(self, train: bool, x=None, grad_out=None) -> dict:
        """The attention request (adapters.run_attention's arguments) of one gradient run."""
        return dict(dim=DIM, num_heads=HEADS, qkv_weight=self.weights[0], out_weight=self.weights[1],
                    x=self.x if x is None else x, grad_out=self.grad_out if grad_out is None else grad_out,
                    train=train, per_position_grads=True, own_weights_fallback=True)


def plan(seed: int) -> dict:
    """Every probe of test_causal_mask.py, by (what, sequence length, mask passed), drawn from
    the grading's secret."""
    generator = grading_seed.generator(seed, "test_causal_mask.py/probes")
    probes = {("attention", SEQ, False): attention_probe(generator, SEQ, False, EVERY_RUN),
              ("model", MODEL_SEQ, True): model_probe(generator, MODEL_SEQ, EVERY_RUN)}
    for seq_len in ATTENTION_LENGTHS:
        for pass_mask in (False, True):
            probes["attention", seq_len, pass_mask] = attention_probe(generator, seq_len, pass_mask,
                                                                      EVAL_RUNS)
    for seq_len in MODEL_LENGTHS:
        probes.setdefault(("model", seq_len, True), model_probe(generator, seq_len, EVAL_RUNS))
    weights = random_weights(generator)
    probes["gradients", SEQ, False] = GradientProbe(torch.randn(2, SEQ, DIM, generator=generator),
                                                    torch.randn(2, SEQ, DIM, generator=generator),
                                                    weights)
    return probes


# -- requests -------------------------------------------------------------------------------------

def _attention_runs(submission, probe, inputs) -> tuple:
    """attempt_attention_runs of each input (batch, seq, dim) under each of probe.runs:
    ({run: (outputs per input)}, own_weights) or (None, the error described)."""
    qkv_weight, out_weight = probe.weights
    requests = [dict(x=x, mask=probe.mask, train=MODES[mode], autograd=autograd)
                for mode, autograd in probe.runs for x in inputs]
    got, error = attempt_attention_runs(submission, DIM, HEADS, qkv_weight, out_weight, requests)
    if error:
        return None, error
    outs = iter(got.outs)
    return {run: [next(outs) for _ in inputs] for run in probe.runs}, got.own_weights


def _model_runs(submission, probe, inputs, substitute_norm) -> dict:
    requests = [dict(ids=ids, train=MODES[mode], autograd=autograd)
                for mode, autograd in probe.runs for ids in inputs]
    logits = iter(run_model_runs(submission, MODEL, probe.seed, requests, substitute_norm))
    return {run: [next(logits) for _ in inputs] for run in probe.runs}


@dataclass
class Witnesses:
    """What the witnesses gave, computed in a worker process that never sees the bases:
    {probe key: {run: output (1, seq, ...)}, or the Verdict of its failure}, and whether the
    model probes use torch.nn.RMSNorm (decided there, once)."""

    outputs: dict
    substitute_norm: bool


def norm_works(submission, generator) -> bool:
    """Whether the student's RMSNorm runs and matches; if not, the model probes use
    torch.nn.RMSNorm instead, so an RMSNorm bug costs points in rmsnorm only."""
    x = torch.randn(2, 5, 8, generator=generator)
    try:
        got = run_rmsnorm(submission, dim=8, eps=1e-6, scale=torch.ones(8), x=x, grad_out=torch.ones_like(x))
    except Failed:
        return False
    expected = oracle.reference().RMSNorm(8, eps=1e-6)(x).detach()
    return compare.close(got.out, expected, rubric.TOLERANCES.rmsnorm)


def run_witnesses(submission, probes: dict, generator) -> Witnesses:
    """Run every probe's witness (and the gradient probe's sequences one at a time) in the
    current worker, then retire it: the probes' bases go to a fresh process, which has seen none
    of the witnesses, and this one never sees the bases."""
    substitute_norm = not norm_works(submission, generator)
    outputs = {}
    for key, probe in probes.items():
        try:
            if key[0] == "gradients":
                # each sequence on its own, for telling a leak from batch mixing (test_causal_mask)
                outputs[key] = {mode: [attention(submission, **probe.request(train, x, grad_out)).rows
                                       for x, grad_out in zip(probe.x.split(1), probe.grad_out.split(1))]
                                for mode, train in MODES.items()}
                continue
            if probe.witness is None:
                continue
            if key[0] == "attention":
                got, error = _attention_runs(submission, probe, [probe.witness])
                if error:
                    fail(raised(ATTENTION, error))
            else:
                got = _model_runs(submission, probe, [probe.witness], substitute_norm)
            outputs[key] = {run: outs[0] for run, outs in got.items()}
        except Failed as failure:
            outputs[key] = failure.verdict
    submission.fresh_process()
    return Witnesses(outputs, substitute_norm)


# -- what a probe finds ---------------------------------------------------------------------------

def not_finite(out, what, mask_passed):
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


def leak(out, changed):
    """(position, span, max |delta|) of the earliest output that moved when only later tokens
    changed (preferring a single changed token, then the farthest one, which tells how far
    ahead it sees whatever the inputs), and whether every move was at position 0 while later
    positions could have moved too (at length 2 only position 0 has a later token, so a leak
    there says nothing about where else the mask fails)."""
    worst, key, only_first = None, None, any(first >= 2 for first, _ in changed)
    for row, (first, last) in enumerate(changed, start=1):
        delta = (out[row, :first] - out[0, :first]).abs().flatten(1).amax(1)  # per position
        moved = torch.nonzero(~(delta <= ATOL)).flatten().tolist()  # NaN counts as moved
        if moved:
            only_first &= moved == [0]
            position = moved[0]
            candidate = (position, first != last, -first)
            if key is None or candidate < key:
                key, worst = candidate, (position, (first, last), float(delta[position]))
    return worst, only_first


def attends_to_past(out, changed) -> Optional[bool]:
    """Whether some output moved when only tokens before it changed (a position that sees its
    past); None when no position comes after a changed token (sequences of length <= 2)."""
    measurable = False
    for row, (_first, last) in enumerate(changed, start=1):
        if last + 1 < out.shape[1]:
            measurable = True
            if bool(((out[row, last + 1:] - out[0, last + 1:]).abs() > ATOL).any()):
                return True
    return False if measurable else None


def inert_verdict(what) -> Verdict:
    """The Verdict on outputs that no earlier token moves: causality holds, but vacuously."""
    return attribution.inert(f"{what} at the positions after a changed token",
                             "never changed: no position depends on the tokens before it",
                             "a change wherever an earlier token changed (attention to the "
                             "past), so that ignoring the future means something")


def leak_verdict(what, found, cause="", hint="") -> Verdict:
    position, (first, last), delta = found
    changed = f"token {first} was" if first == last else f"tokens {first}-{last} were"
    return Verdict(measured=f"{what} at position {position} when {changed} perturbed",
                   found=f"changed (max |delta| {delta:.2g})", expected=f"no change (allowed {ATOL:g})",
                   cause=cause, hint=hint, kind="property")


def _witness_verdict(what, base_out, witness, cut) -> Optional[Verdict]:
    """The Verdict if the witness's outputs (seq, ...) before `cut` differ from the base's."""
    if isinstance(witness, Verdict):
        return replace(witness, measured=f"in a fresh worker process, {witness.measured}")
    delta = (witness[0, :cut] - base_out[:cut]).abs().flatten(1).amax(1)
    moved = torch.nonzero(~(delta <= ATOL)).flatten().tolist()
    if not moved:
        return None
    position = moved[0]
    return Verdict(measured=f"{what} at position {position} for two sequences equal in tokens "
                            f"0-{cut - 1}, the second run in a fresh worker process",
                   found=f"differed (max |delta| {float(delta[position]):.2g})",
                   expected=f"equal (allowed {ATOL:g})",
                   hint=WITNESS_HINT.format(cut=cut, last=cut - 1), kind="property")


def known_bug(out, own_weights, x, weights):
    """The Diagnosis of the known bug the attention output `out` on `x` matches: a mask bug,
    else an attention bug that leaks the future with the mask right (a softmax over the
    queries), or None; None when the module ran with its own weights (the grader's could not be
    mapped onto its layers), which no variant reproduces."""
    if own_weights:
        return None
    qkv_weight, out_weight = weights
    return (attribution.causal_mask_bug(out, x, qkv_weight, out_weight, HEADS)
            or attribution.known_bug(out, diagnoses.ATTENTION_VARIANTS, x, qkv_weight,
                                     out_weight, HEADS))


def _square(x: torch.Tensor) -> torch.Tensor:
    """x's first sequence repeated into a batch as long as the sequence (seq, seq, dim)."""
    return x[:1].expand(x.shape[1], -1, -1).contiguous()


def _own_mask_cause(runs_square) -> str:
    """Why forward(x) raises without a mask while it runs with the model's, from one more run
    (runs_square() -> whether it runs without a mask on a batch as long as the sequence)."""
    if runs_square():
        return ("forward(x, mask=None) builds its own mask from the batch size, not the sequence "
                "length: it runs only when the batch is as long as the sequence (x is (batch, "
                "seq, dim): the sequence length is x.shape[1])")
    return "forward(x, mask=None) builds no causal mask of its own, or builds one that fails"


def _no_default_mask(submission, seq_len, error, retry, runs_square) -> None:
    """Fails the test for a forward(x) that raised without a mask, saying whether it runs with
    the model's mask passed (retry(mask) -> whether it ran; then the missing default is the
    cause, told apart by runs_square: see _own_mask_cause)."""
    runs = retry(attribution.model_mask(seq_len))
    fail(Verdict(measured="CausalSelfAttention.forward(x)",
                 found=f"raised {error} when no mask was passed"
                       + (f". With the model's mask torch.tril(torch.ones({seq_len}, {seq_len})) "
                          "passed it runs" if runs else ""),
                 cause=_own_mask_cause(runs_square) if runs else "",
                 hint=("forward(x, mask=None) must build its own causal mask when no mask is "
                       "passed (the template's contract: the class is causal on its own)."
                       if runs else ""), kind="raised"))


def attention(submission, **request):
    """One run of the attention (adapters.AttentionRun) for the gradient checks. A forward(x)
    that raises without a mask fails the test, saying whether it runs with the model's mask."""
    result, error = attempt_attention(submission, **request)
    if error and request.get("mask") is None:
        forward_only = {key: value for key, value in request.items()
                        if key not in ("grad_out", "per_position_grads")}
        _no_default_mask(submission, request["x"].shape[1], error, lambda mask: not attempt_attention(
            submission, **{**request, "mask": mask})[1], lambda: not attempt_attention(
            submission, **{**forward_only, "x": _square(request["x"])})[1])
    if error:
        fail(raised(ATTENTION, error))
    return result


_UNKNOWN = object()  # not yet measured


def attention_causality(submission, probe, witness) -> dict:
    """{(mode, autograd): Verdict} for every run of the probe in which CausalSelfAttention is
    not causal (empty if it is); `witness` is what the probe's witness gave (Witnesses.outputs)."""
    got, own_weights = _attention_runs(submission, probe, [probe.batch])
    if got is None:
        error = own_weights
        if probe.mask is None:
            _no_default_mask(submission, probe.seq_len, error, lambda mask: _attention_runs(
                submission, replace(probe, mask=mask), [probe.batch])[0] is not None,
                lambda: _attention_runs(submission, probe, [_square(probe.batch)])[0] is not None)
        fail(raised(ATTENTION, error))
    # whether a leak was the batch's, and the known bug it matches: measured once per probe
    failures, mixing, known = {}, None, _UNKNOWN
    for run in sorted(probe.runs, key=EVERY_RUN.index):
        out = probe.unshuffled(got[run][0])
        problem = not_finite(out, "the attention output", probe.mask is not None)
        found, only_first = (None, False) if problem else leak(out, probe.spans)
        base = out[0]  # what the witness must agree with: the base as computed alone, if it was
        if found is not None and known is _UNKNOWN:
            # on the base and the copy that leaked: a variant computes each row on its own
            rows = [0, probe.spans.index(found[1]) + 1]
            known = known_bug(out[rows], own_weights, probe.rows[rows], probe.weights)
        # a known bug computes every row on its own: only an unknown leak may be the batch's
        if found is not None and known is None and mixing is not False:
            alone = _attention_runs(submission, replace(probe, runs=(run,)), list(probe.rows.split(1)))[0]
            mixing = alone is not None and leak(torch.cat(alone[run]), probe.spans)[0] is None
            if mixing:
                submission.note(BATCH_MIXING.format(what="attention"))
                found, base = None, alone[run][0][0]
        if found is not None:
            cause, hint = ((known.cause, known.hint) if known else
                           (ONLY_FIRST, ONLY_FIRST_HINT) if only_first else ("", UNKNOWN_LEAK))
            problem = leak_verdict("outputs", found, cause=cause, hint=hint)
        if problem is None and attends_to_past(out, probe.spans) is False:
            problem = inert_verdict("outputs")
        if problem is None and probe.witness is not None:
            problem = _witness_verdict("outputs", base, witness[run] if isinstance(witness, dict)
                                       else witness, probe.cut)
        if problem is not None:
            failures[run] = problem
    return failures


def model_causality(submission, probe, witness, substitute_norm) -> dict:
    """{(mode, autograd): Verdict} for every run in which the model's logits are not causal."""
    got = _model_runs(submission, probe, [probe.batch], substitute_norm)
    failures, mixing = {}, None
    for run in sorted(probe.runs, key=EVERY_RUN.index):
        logits = probe.unshuffled(got[run][0])
        problem = not_finite(logits, "the model's logits", True)
        found = None if problem else leak(logits, probe.spans)[0]
        base = logits[0]  # as for the attention
        if found is not None and mixing is not False:
            alone = _model_runs(submission, replace(probe, runs=(run,)), list(probe.rows.split(1)),
                                substitute_norm)
            mixing = leak(torch.cat(alone[run]), probe.spans)[0] is None
            if mixing:
                submission.note(BATCH_MIXING.format(what="model"))
                found, base = None, alone[run][0][0]
        if found is not None:
            problem = leak_verdict("the model's logits", found, hint=MODEL_LEAK_HINT)
        if problem is None and attends_to_past(logits, probe.spans) is False:
            problem = inert_verdict("the model's logits")
        if problem is None and probe.witness is not None:
            problem = _witness_verdict("the model's logits", base, witness[run] if isinstance(
                witness, dict) else witness, probe.cut)
        if problem is not None:
            failures[run] = problem
    return failures


# -- one Verdict for several runs -----------------------------------------------------------------

def in_context(context: str, verdict: Verdict) -> Verdict:
    """The verdict of one run, its measurement placed in the run's context ("In eval mode")."""
    measured = verdict.measured
    return replace(verdict, measured=f"{context}, {measured[0].lower() + measured[1:] if measured.startswith('In ') else measured}")


def first_of(verdicts: list) -> Verdict:
    """One Verdict for several failed runs of a check: the first, the others listed after its
    hint (with their cause when it differs)."""
    first = verdicts[0]
    lines = [first.hint]
    for other in verdicts[1:]:
        differs = other.cause not in ("", first.cause)
        lines.append(f"Also: {other.headline()}" + (f" (likely cause: {other.cause})" if differs else ""))
    return replace(first, hint="\n".join(line for line in lines if line))


def _run_words(run) -> str:
    mode, autograd = run
    return f"In {mode} mode {AUTOGRAD[autograd]}"


def by_run(failures: dict, runs) -> Verdict:
    """One Verdict for the runs that failed ({(mode, autograd): Verdict}) of `runs`. When
    exactly the runs of some modes failed, or exactly those of some autograd states, the mask
    depends on that: it is the likely cause, and the failure's own is the hint's."""
    first_run = next(iter(failures))
    verdict = failures[first_run]
    own = f" {_run_words(first_run)}: {verdict.cause}." if verdict.cause else ""
    for axis, words in ((1, AUTOGRAD), (0, MODES)):
        failed = {run[axis] for run in failures}
        every = {run[axis] for run in runs}
        if failed == every or set(failures) != {run for run in runs if run[axis] in failed}:
            continue
        passed = [value for value in words if value in every - failed]
        if axis == 1:
            cause = ("the mask is applied only while autograd records (for example under "
                     "torch.is_grad_enabled() or x.requires_grad)" if "enabled" in passed else
                     "the mask depends on whether autograd records")
            hint = (f"{AUTOGRAD[passed[0]].capitalize()} it was causal: forward must apply the mask "
                    "however it is called (the model is evaluated and generates under "
                    f"torch.no_grad()).{own}")
        else:
            cause = f"the mask is applied only when self.training is {passed[0] == 'train'}"
            hint = (f"In {passed[0]} mode it was causal: the mask must be applied in both modes."
                    + (f" In {first_run[0]} mode: {verdict.cause}." if verdict.cause else ""))
        return replace(in_context(_run_words(first_run), verdict), cause=cause,
                       hint="\n".join(line for line in (hint, verdict.hint) if line))
    if set(failures) == set(runs):
        modes = [mode for mode in MODES if mode in {run[0] for run in runs}]
        states = [state for state in AUTOGRAD if state in {run[1] for run in runs}]
        recording = AUTOGRAD[states[0]] if len(states) == 1 else "with autograd recording or not"
        return in_context(f"In {' and '.join(modes)} mode {recording}", verdict)
    return first_of([in_context(_run_words(run), failure) for run, failure in failures.items()])
