"""mastery: the course's optional bonus, a key/value cache for generation, graded from behaviour.

On the student's own model with seeded order-one weights, greedy decoding through the cached
path the worker finds must give the tokens of greedy decoding by full forward passes of the same
model, and its logits at every step must match theirs, for prompts of 1 token up to nearly
max_seq_len, batch 3; its speed-up is measured for information. A submission without a cache
loses nothing: both tests say "not attempted" (skipped: 0 points, status failed,
extra_data["attempted"] False, left out of the TA report's pass rates). How the path is found,
compared and diagnosed is
kv_cache_decoding.py's.
"""

import pytest
import torch

from ..verdict import Verdict, fail
from . import kv_cache_decoding
from .kv_cache_decoding import ATOL, RTOL, SPEC, Case
from .adapters import run_kv_cache_hypotheses, run_kv_cache_speed
from .submission import describe


def test_kv_cache_matches_full_forward(submission):
    cases = kv_cache_decoding.graded_cases()
    result = kv_cache_decoding.decode(submission, cases)
    if not result.found:
        crashed = kv_cache_decoding.attempt_crashed(result.searched)
        if crashed is not None:
            fail(crashed)
        pytest.skip(kv_cache_decoding.not_found(result.searched))
    crash = kv_cache_decoding.top_k_crash(submission, cases, result)
    if crash is not None:
        fail(crash)
    compared = [Case(spec, r) for spec, r in zip(cases, result.cases)]
    problems = []
    for case in compared:
        if case.result.error:
            case.problem = f"it raised {describe(case.result.error)}"
            problems.append(f"{case.title()}: {case.problem}")
            continue
        case.compare()
        if case.problem:
            problems.append(f"{case.title()}: {case.problem}")
    failing = [case for case in compared if case.problem]
    for case in failing:
        case.diagnose_full_forward()
        case.diagnose_cache_contract()
        case.diagnose_prompt_pass()
    if not any(case.cause for case in failing):
        # The longest prompt tells RoPE bugs apart best: with a 1-token prompt, rotating keys
        # after the concatenation and rotating new tokens at position 0 compute the same thing.
        later = max((case for case in failing if case.step), key=lambda case: case.length, default=None)
        if later is not None:
            hypotheses = run_kv_cache_hypotheses(submission, config=SPEC.model.kwargs(), seed=SPEC.seed,
                                                 path=result.path, greedy="top_k", prompt=later.prompt,
                                                 new_tokens=later.new, tokens=later.result.tokens)
            later.diagnose_positions(hypotheses)
    if problems:
        diagnosed = next((case for case in failing if case.cause), None)
        fail(Verdict(measured=f"{result.call}, against greedy decoding by full forward passes of the "
                              f"same model{kv_cache_decoding.greedy_note(result)}",
                     found="\n  " + "\n  ".join(problems),
                     expected="the same tokens, and logits within the tolerance at every step",
                     cause=diagnosed.cause if diagnosed else "",
                     hint=f"{diagnosed.evidence} {diagnosed.hint}" if diagnosed else "",
                     kind="property"))
    worst = max(case.max_error for case in compared)
    submission.note(f"{result.call} decodes like full forward passes{kv_cache_decoding.greedy_note(result)} for "
                 f"prompts of {', '.join(str(c.length) for c in compared)} tokens (batch "
                 f"{SPEC.batch}, up to max_seq_len {SPEC.model.max_seq_len}): the same "
                 f"tokens, logits within {worst:.2g} of theirs at every step (allowed {ATOL:g} + "
                 f"{RTOL:g} * |logit|).")


def test_kv_cache_speedup(submission, extra):
    found = kv_cache_decoding.decode(submission, [])
    if not found.found:
        crashed = kv_cache_decoding.attempt_crashed(found.searched)
        pytest.skip(kv_cache_decoding.not_found(found.searched) if crashed is None
                    else f"not measured: {crashed.headline()}.")
    speed = SPEC.speed
    prompt = torch.randint(speed.model.vocab_size, (1, speed.prompt),
                           generator=torch.Generator().manual_seed(SPEC.seed))
    seconds = run_kv_cache_speed(submission, config=speed.model.kwargs(), seed=SPEC.seed,
                                 path=found.path, greedy=None, prompt=prompt,
                                 new_tokens=speed.new_tokens)
    cached, full = seconds.cached_seconds, seconds.full_seconds
    ratio = full / cached if cached > 0 else float("inf")
    extra["kv_cache_speedup"] = round(ratio, 2)
    model = speed.model
    submission.note(f"Speed-up of {found.path} over full forward passes: {ratio:.1f}x "
                 f"({speed.new_tokens} new tokens after a {speed.prompt}-token prompt, batch "
                 f"1, a model of dim {model.dim}, {model.num_layers} layers, "
                 f"{model.num_heads} heads: {1000 * cached / speed.new_tokens:.1f} ms per "
                 f"token cached, {1000 * full / speed.new_tokens:.1f} ms by full passes, CPU "
                 "time on one thread). For information only; whether the cache is correct is the "
                 "other mastery test.")
