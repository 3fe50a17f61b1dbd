"""rope: TODO 2's rotary embedding, as the student's attention applies it.

Three properties, each measured by its own test on a readout probe of the student's attention:
(a) the scores change with the relative position m - n, and only with it;
(b) the queries and the keys are both rotated, the values are not;
(c) the angles are RoPE's, t * base^(-2i/head_dim), within each head: with one head, and with
    two heads (head_dim < dim), where a RoPE built for the model dim shows.

How the probe reads the attention weights off the output, fits them, and tells RoPE's
differences from other categories' bugs is rope_probe.py's.
"""

import torch

from ..verdict import Verdict, fail
from . import attribution, compare, diagnoses, margin, rope_probe
from .adapters import run_rope


def test_rope_module_relative_property(submission, generator):
    """The provided module on its own: the same q (and k) at every position."""
    batch, heads, seq, head_dim = 2, 3, 16, 8
    q = torch.randn(batch, heads, 1, head_dim, generator=generator).expand(-1, -1, seq, -1)
    k = torch.randn(batch, heads, 1, head_dim, generator=generator).expand(-1, -1, seq, -1)
    got = run_rope(submission, dim=head_dim, max_seq_len=64, q=q.contiguous(), k=k.contiguous())
    for name, rotated, original in (("q", got.q, q), ("k", got.k, k)):
        if not compare.close(rotated.norm(dim=-1), original.norm(dim=-1), rope_probe.TOLERANCE):
            fail(compare.mismatch(f"norm of the rotated {name} (a rotation keeps norms)",
                                  rotated.norm(dim=-1), original.norm(dim=-1), rope_probe.TOLERANCE,
                                  against="own output"))
        if not compare.close(rotated[..., 0, :], original[..., 0, :], rope_probe.TOLERANCE):
            fail(compare.mismatch(f"rotated {name} at position 0 (angle 0: unchanged)",
                                  rotated[..., 0, :], original[..., 0, :], rope_probe.TOLERANCE,
                                  against="own output"))
    scores = got.q @ got.k.transpose(-2, -1)  # [m, n]: depends on m - n only
    if not compare.close(scores[..., 1:, 1:], scores[..., :-1, :-1], rope_probe.TOLERANCE):
        fail(compare.mismatch("scores <rot(q)_m+1, rot(k)_n+1> against <rot(q)_m, rot(k)_n>",
                              scores[..., 1:, 1:], scores[..., :-1, :-1], rope_probe.TOLERANCE,
                              against="own output"))
    expected = attribution.rotations(q)
    if not any(compare.close(got.q, e, rope_probe.TOLERANCE) for e in expected):
        nearest = min(expected, key=lambda e: compare.max_error(got.q, e)[0])
        fail(compare.mismatch(f"rotated q against RoPE's angles {rope_probe.ANGLES} (either pairing)",
                              got.q, nearest, rope_probe.TOLERANCE, against="reference"))


def test_attention_scores_depend_on_relative_position(submission, generator, extra):
    """(a) The scores change with the relative position m - n, and only with it."""
    log_weights, probe = rope_probe.same_content_probe(submission, generator)
    if log_weights is None:
        return
    _, spread = rope_probe.fit(log_weights)
    if spread <= rope_probe.TOLERANCE.min_spread:
        fail(rope_probe.flat_verdict(submission, generator, spread))
    _, residual = rope_probe.fit(log_weights, *rope_probe.DISTANCES)
    extra[margin.KEY] = margin.at_most(residual, rope_probe.TOLERANCE.log_weights,
                                       "misfit of log A[i, j] by i - j <= log_weights")
    if residual > rope_probe.TOLERANCE.log_weights:
        known = rope_probe.rope_bug(log_weights, probe, diagnoses.ROPE_VARIANTS)
        fail(Verdict(measured="log A[i, j] - log A[i, i] with the same query and the same key at "
                              "every position", kind="property",
                     found=f"depends on the absolute positions too (misfit {residual:.2g})",
                     expected=(f"a function of i - j only (misfit at most "
                               f"{rope_probe.TOLERANCE.log_weights:g}), as when the query and the key of "
                               f"token t are rotated by the same angles {rope_probe.ANGLES}"),
                     **diagnoses.explained(known)))


def test_rope_applied_to_queries_and_keys_not_values(submission, generator, extra):
    """(b) Both the queries and the keys are rotated; the values are not. Values that reach the
    output unchanged make the probe's output readable as attention weights; with the same content
    at every position, scores that change with the positions need both q and k rotated (one of
    them alone, or neither, leaves them flat)."""
    log_weights, _ = rope_probe.same_content_probe(submission, generator)
    if log_weights is None:
        return
    _, spread = rope_probe.fit(log_weights)
    extra[margin.KEY] = margin.at_least(spread, rope_probe.TOLERANCE.min_spread,
                                        "spread of log A[i, j] over positions >= min_spread")
    if spread <= rope_probe.TOLERANCE.min_spread:
        fail(rope_probe.flat_verdict(submission, generator, spread))


def test_rope_angles_in_each_head(submission, generator):
    """(c) The angles are t * base^(-2i/head_dim) in each head, with one head and with two."""
    same, _ = rope_probe.same_content_probe(submission, generator)
    if same is None:
        return
    relative = rope_probe.fit(same)[1] > rope_probe.TOLERANCE.min_spread and (
        rope_probe.fit(same, *rope_probe.DISTANCES)[1] <= rope_probe.TOLERANCE.log_weights)
    one_head_is_rope = False
    for num_heads in (1, 2):
        setting = "one head" if num_heads == 1 else f"two heads of size {rope_probe.HEAD_DIM}"
        probe = rope_probe.make_probe(generator, constant=False, num_heads=num_heads)
        out = rope_probe.run_probe(submission, probe, num_heads).run.out
        own = rope_probe.read_log_weights(out)
        if own is not None and rope_probe.matches_rope(own, probe, num_heads):
            one_head_is_rope = num_heads == 1
            continue
        known = None if own is None else rope_probe.rope_bug(own, probe, diagnoses.ROPE_VARIANTS, num_heads)
        substituted, substituted_matches = "", False
        if not known:
            run = rope_probe.run_probe(submission, probe, num_heads, rope="template").run
            substituted = run.rope
            weights = rope_probe.read_log_weights(run.out)
            substituted_matches = weights is not None and rope_probe.matches_rope(weights, probe, num_heads)
        attributed = attribution.rope_difference(num_heads, known, substituted,
                                                 substituted_matches, readable=own is not None)
        if attributed.category != "rope":
            submission.note(f"the RoPE check with {setting} was not counted: "
                            f"{attributed.diagnosis}")
            continue
        diagnosis = attributed.diagnosis
        if own is None:
            fail(rope_probe.unreadable_verdict(out, probe, num_heads, setting, diagnosis))
        misfit = min(rope_probe.misfit_to(own, variant, probe, num_heads) for variant in rope_probe.CORRECT_ROPE)
        misfit = (f"log-weight misfit {misfit:.2g}" if misfit < float("inf") else
                  "log-weights that are no positive multiple of RoPE's, up to per-row and "
                  "per-column constants")
        measured = ""
        if one_head_is_rope:
            measured = (f"With one head of size {rope_probe.HEAD_DIM} they were RoPE's: the difference shows "
                        "only when head_dim < dim.")
        elif relative:
            measured = ("Measured in this check: with the same content at every position the "
                        "weights change with i - j only, so the queries and keys are rotated "
                        "alike, but by other angles than RoPE's.")
        explanation = diagnoses.explained(diagnosis)
        fail(Verdict(measured=f"your attention weights with {setting} and a different query and "
                              "key at every position", found=misfit,
                     expected=(f"RoPE's with the angles {rope_probe.ANGLES} (rotate-half or interleaved "
                               f"pairing), log-weight misfit at most {rope_probe.TOLERANCE.log_weights:g}"),
                     cause=explanation["cause"],
                     hint=" ".join(filter(None, (measured, explanation["hint"])))))
