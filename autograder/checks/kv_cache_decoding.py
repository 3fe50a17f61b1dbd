"""How the mastery tests (test_mastery.py) find and compare the cached decoding path.

The worker (worker/ops/generation.py) finds the cached decoding path (a method named like
generate_cached, generate(use_cache=True), or generate itself) by measuring it: after the
prompt, a cached step feeds fewer positions to attention than the sequence holds, so the
template's generate does not count. Then, on the student's own model with seeded order-one
weights, greedy decoding through that path must give the tokens of greedy decoding by full
forward passes of the same model, and its logits at every step must match theirs, for prompts of
1 token up to nearly max_seq_len, batch 3. Greedy through the template's sampling API: top_k=1
(or, for a path without top_k, temperature 1e-6). A failure names the first step that departs and,
when this run's measurements support it, the cause. The speed-up of the cached path is measured
for information.
"""

from dataclasses import replace

import torch

from .. import rubric
from ..verdict import Verdict
from .adapters import run_kv_cache_decode
from .submission import describe

SPEC = rubric.MASTERY
RTOL, ATOL = SPEC.tolerance.rtol, SPEC.tolerance.atol
NOT_GRADED = "the optional mastery bonus; nothing is lost"
NOT_ATTEMPTED = "not attempted: no KV-cache path found"  # the output's start (the TA report reads it)


def prompt_ids(length: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Random prompts; row 1 repeats row 0 except the last token, so a prompt pass that is causal
    gives rows 0 and 1 the same outputs before the last position."""
    prompt = torch.randint(SPEC.model.vocab_size, (batch, length), generator=generator)
    if length > 1:
        prompt[1, :-1] = prompt[0, :-1]
    return prompt


def graded_cases():
    generator = torch.Generator().manual_seed(SPEC.seed)
    return [{"prompt": prompt_ids(length, SPEC.batch, generator), "new_tokens": new}
            for length, new in SPEC.cases]


def decode(submission, cases, greedy="top_k"):
    length, new = SPEC.probe
    probe = {"prompt": prompt_ids(length, 2, torch.Generator().manual_seed(SPEC.seed + 1)),
             "new_tokens": new}
    return run_kv_cache_decode(submission, config=SPEC.model.kwargs(), seed=SPEC.seed, probe=probe,
                               cases=cases, greedy=greedy)


def _lengths(lengths) -> str:
    return ", ".join(map(str, lengths[:6])) + (", ..." if len(lengths) > 6 else "")


def not_found(searched: list) -> str:
    """Why no path counts as a cache: what each candidate did on the probe."""
    tried = []
    for entry in searched:
        if entry.error:
            tried.append(f"{entry.path} raised {describe(entry.error)}, so whether it caches "
                         "could not be measured")
        else:
            tried.append(f"{entry.path} recomputes the whole sequence at every step (its first "
                         f"attention layer saw {_lengths(entry.lengths)} positions)")
    return (f"{NOT_ATTEMPTED} ({NOT_GRADED}): DecoderOnlyTransformer has no method named "
            "like generate_cached, and generate() takes no use_cache-like keyword or does not use "
            "one. " + "; ".join(tried) + ". To have a cache graded, add generate(..., "
            "use_cache=True) or generate_cached(input_ids, max_new_tokens, temperature, top_k) "
            "(see generate's docstring in the template).")


SHARED_CACHE = ("every attention layer gets the same cache object, so the layers read and overwrite "
                "each other's keys and values")
SHARED_CACHE_FIX = ("Give each layer its own cache, e.g. [{} for _ in self.blocks] ([{}] * num_layers "
                    "repeats one dict).")


def attempt_crashed(searched: list):
    """The Verdict on a path the student named as cached (a method or a keyword) that raised on
    the probe, or None."""
    for entry in searched:
        if entry.error and entry.path != "generate()":
            shared = entry.layers_sharing_an_argument
            return Verdict(measured=f"{entry.path} decoding 3 tokens after a 4-token prompt (batch 2, "
                                    "its default sampling)", found=f"raised {describe(entry.error)}",
                           kind="raised", **(dict(cause=SHARED_CACHE, hint=(
                               f"While decoding, {shared} attention layers were passed one and the "
                               f"same object. {SHARED_CACHE_FIX}")) if shared > 1 else {}))
    return None


def _allowed(expected: torch.Tensor) -> torch.Tensor:
    return ATOL + RTOL * expected.abs()


def _excess(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per step (dim 1): how far the worst logit is outside its allowance (> 0: outside)."""
    return ((actual - expected).abs() - _allowed(expected)).amax(dim=(0, 2))


def _ordinal(step: int) -> str:
    return {0: "new token 1 (from the prompt pass)"}.get(step, f"new token {step + 1}")


class Case:
    """One prompt's comparison: where the cached path first departs from full passes, and how.
    result: the adapters' DecodedCase. cause: the likely cause, when this run's measurements
    support one; evidence: those measurements; hint: what to change."""

    def __init__(self, spec: dict, result):
        self.prompt, self.new = spec["prompt"], spec["new_tokens"]
        self.length = self.prompt.shape[1]
        self.result = result
        self.step, self.problem = None, ""
        self.cause, self.evidence, self.hint = "", "", ""
        self.max_error = 0.0

    def title(self) -> str:
        return f"prompt of {self.length} token(s), batch {self.prompt.shape[0]}, {self.new} new tokens"

    def compare(self) -> None:
        r = self.result
        tokens, full = r.tokens, r.full_tokens
        if tokens is None:
            return
        if tuple(tokens.shape) != tuple(full.shape):
            self.problem = (f"returned ids of shape {tuple(tokens.shape)}, expected "
                            f"{tuple(full.shape)} (the prompt followed by the new tokens)")
            return
        if not torch.equal(tokens[:, :self.length], self.prompt):
            self.problem = "returned ids that do not start with the prompt"
            return
        differs = (tokens[:, self.length:] != full[:, self.length:]).any(0)
        token_step = int(differs.nonzero()[0]) if differs.any() else None
        logits = r.step_logits
        if logits is not None and tuple(logits.shape) == tuple(r.full_logits.shape):
            # Steps up to the first token that differs have the same prefix in both decodings.
            last = self.new if token_step is None else token_step + 1
            excess = _excess(logits[:, :last], r.full_logits[:, :last])
            self.max_error = float((logits[:, :last] - r.full_logits[:, :last]).abs().max())
            outside = (excess > 0).nonzero()
            if len(outside):
                self.step = int(outside[0])
                error = float((logits[:, self.step] - r.full_logits[:, self.step]).abs().max())
                self.problem = (f"at {_ordinal(self.step)} its logits differ from the full "
                                f"passes' by up to {error:.3g} (allowed {ATOL:g} + {RTOL:g} * |logit|)"
                                + (f"; the {self.step} token(s) before matched" if self.step else ""))
                return
        if token_step is not None and not self._tie(token_step):
            self.step = token_step
            row = int((tokens[:, self.length + token_step] != full[:, self.length + token_step]).nonzero()[0])
            self.problem = (f"at {_ordinal(token_step)} it chose token "
                            f"{int(tokens[row, self.length + token_step])} in row {row}, where greedy "
                            f"full passes choose {int(full[row, self.length + token_step])}"
                            + (" although its logits agree: it does not decode greedily with the "
                               "arguments above" if logits is not None else ""))

    def _tie(self, step: int) -> bool:
        """Whether the full passes' two best tokens at this step are within the tolerance."""
        top = self.result.full_logits[:, step].topk(2, dim=-1).values
        return bool(((top[:, 0] - top[:, 1]) <= _allowed(top[:, 0])).any())

    def diagnose_full_forward(self) -> None:
        """Full passes that are not causal cannot be matched by any cache: say so."""
        full, length = self.result.full_prompt_logits, self.length
        if length < 2 or full is None or full.shape[0] < 2:
            return
        moved = float((full[0, :length - 1] - full[1, :length - 1]).abs().max())
        if moved > ATOL:
            self.cause = "your model's full forward pass is not causal, so no cache can match it"
            self.evidence = (f"Its logits at prompt positions 0..{length - 2} changed by up to "
                             f"{moved:.3g} when only the last prompt token changed (rows 0 and 1 of "
                             "the batch).")
            self.hint = "Fix the causal mask first (see the causal_mask tests)."

    def diagnose_cache_contract(self) -> None:
        """Causes in how the cache is held: one cache object handed to every layer, or a cache
        left over from the previous call (the same case, decoded as the first call of a freshly
        built model, gives the full passes' tokens)."""
        r = self.result
        if self.cause:
            return
        if r.layers_sharing_an_argument > 1:
            self.cause = SHARED_CACHE
            self.evidence = (f"While decoding, {r.layers_sharing_an_argument} attention layers were "
                             "passed one and the same object.")
            self.hint = SHARED_CACHE_FIX
            return
        fresh = r.fresh_model
        if (fresh and fresh["error"] is None and fresh["tokens"] is not None
                and torch.equal(fresh["tokens"], r.full_tokens)):
            self.cause = ("the cache is not reset between calls: a call continues from the keys and "
                          "values the previous call left")
            self.evidence = ("Decoded as the first call of a freshly built model, the same prompt "
                             "gives the full passes' tokens; after earlier calls on the same model it "
                             + ("raised." if r.error else "did not."))
            self.hint = ("Start every generate call with an empty cache (create it inside generate, "
                         "or clear the one kept on the model at its start).")

    def diagnose_prompt_pass(self) -> None:
        """Causes visible in the prompt pass itself (the first new token already departs)."""
        r, length = self.result, self.length
        if self.step != 0 or length < 2 or self.cause:
            return
        if r.embedded and r.embedded[0] < length:
            self.cause = ("the first forward step embeds only part of the prompt, so the cache "
                          "never holds the rest of the prompt")
            self.evidence = (f"Its first forward step embedded only {r.embedded[0]} of the {length} "
                             "prompt tokens.")
            self.hint = ("Run the whole prompt through the model once to fill the cache, then one "
                         "new token per step.")
            return
        for what, cached, full in (("logits", r.prefill_logits, r.full_prompt_logits),
                                   ("first attention layer's output", r.prefill_attention,
                                    r.full_prompt_attention)):
            if cached is None or full is None or cached.shape != full.shape:
                continue
            early = slice(0, length - 1)
            moved = float((cached[0, early] - cached[1, early]).abs().max())
            full_moved = float((full[0, early] - full[1, early]).abs().max())
            if moved > ATOL and full_moved <= ATOL:
                self.cause = "the prompt pass is not causal when the cache is on"
                self.evidence = (f"Its {what} at prompt positions 0..{length - 2} changed by up to "
                                 f"{moved:.3g} when only the last prompt token changed (rows 0 and 1 "
                                 "of the batch), while the full forward pass's did not move.")
                self.hint = ("Apply the causal mask in the prompt pass too (with a cache, a query "
                             "at position t may see keys 0..t only).")
                return

    def diagnose_positions(self, hypotheses) -> None:
        """Causes in RoPE's positions, from the worker's reruns (adapters.RopeHypotheses)."""
        if not hypotheses.rope_modules:
            return
        off = hypotheses.without_rope
        if off.error or off.tokens is None or not torch.equal(off.tokens, off.full_tokens):
            return
        if off.step_logits is not None and (off.step_logits.shape != off.full_logits.shape or (
                _excess(off.step_logits, off.full_logits) > 0).any()):
            return
        first = self.length + self.step - 1  # the position the first wrong cached step feeds
        zero = hypotheses.position_zero
        logits = self.result.step_logits
        if zero.calls and logits is not None and zero.logits.shape == logits.shape:
            last = self.step + 1
            gap = float((logits[:, :last] - zero.logits[:, :last]).abs().max())
            if (_excess(logits[:, :last], zero.logits[:, :last]) <= 0).all():
                self.cause = ("each new token's query and key are rotated at position 0 instead of "
                              "their own position")
                self.evidence = (f"The cached steps' logits match, within {gap:.2g}, the same "
                                 "model's full passes with every position after the prompt "
                                 f"({self.length}, {self.length + 1}, ...) rotated at position 0, "
                                 "and with RoPE switched off the cached path matches full passes.")
                self.hint = ("Rotate the new token at its position, the number of cached positions "
                             "(e.g. an offset into RoPE's cos/sin tables).")
                return
        self.cause = "RoPE positions are wrong in the cached steps"
        self.evidence = (f"From the step feeding position {first} on: with RoPE switched off in the "
                         "same model, the cached path matches full passes, and the logits do not "
                         "match rotating the new tokens at position 0 either.")
        self.hint = ("Common causes: the keys rotated after they are concatenated with the cache "
                     "(the cached keys get rotated again, or all at the new token's position), or a "
                     "wrong position offset; rotate only the new queries and keys, at their own "
                     "positions, before caching the keys.")


def greedy_note(result) -> str:
    if result.greedy:
        return ""
    return (f" ({result.call} takes neither top_k nor temperature, so it was called with its "
            "own sampling)")


def top_k_crash(submission, cases, result):
    """The Verdict when the cached path raised with top_k=1, saying how it does without top_k;
    None when it did not raise."""
    index = next((i for i, c in enumerate(result.cases) if c.error), None)
    if index is None or "top_k" not in result.call:
        return None
    crashed = result.cases[index]
    contract = Case(cases[index], crashed)
    contract.diagnose_cache_contract()
    if contract.cause:  # it raised for another reason (decoded fresh, with top_k, it does not)
        return None
    verdict = Verdict(measured=result.call, found=f"raised {describe(crashed.error)}", kind="raised",
                      cause="the cached path breaks when top_k is given")
    retry = decode(submission, cases, greedy="temperature")
    if retry.found and "temperature" in retry.call:
        if any(c.error for c in retry.cases):
            return replace(verdict, cause="", hint=f"Without top_k ({retry.call}) it raised too.")
        good = [Case(spec, c) for spec, c in zip(cases, retry.cases)]
        for case in good:
            case.compare()
        if not any(case.problem for case in good):
            return replace(verdict, hint=f"Without top_k ({retry.call}) it decodes exactly like the "
                                         "full forward passes: check its top_k filtering with a batch "
                                         "of several sequences.")
    return verdict
