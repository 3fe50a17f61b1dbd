"""rope: TODO 2's rotary embedding, as the student's attention applies it.

Three properties, each measured by its own test on a readout probe of the student's attention:
(a) the scores change with the relative position m - n, and only with it;
(b) the queries and the keys are both rotated, the values are not;
(c) the angles are RoPE's, t * base^(-2i/head_dim), within each head: with one head, and with
    two heads (head_dim < dim), where a RoPE built for the model dim shows.

The probe reads the attention weights off the output of one head. Token j is [c_j ; e_j]
(content c_j, one-hot position code e_j); W_q and W_k read only the content, W_v copies the
one-hot code and out_proj is the identity, so output i holds row i of the attention weights A in
the one-hot dims and zeros elsewhere. log A[i, j] is the score of query i and key j up to a
per-row constant (the softmax's normaliser). The fits below also allow a per-column constant and
a scale factor, and the references include every attention bug test_attention.py names (q/k
split order swapped, ...), so attention bugs cost no rope points; only entries j < i are used,
which every causal mask (or a missing one) leaves visible. A mask bug that makes the weights
unreadable (zeroed after the softmax, a triu mask) costs no rope points when the output is
correct RoPE with that bug (diagnoses.CAUSAL_MASK_VARIANTS); when forward(x) without a mask
raises, or is not causal and unreadable, the probe is run with the model's mask passed
(attribution.attention).

With the same content at every position the scores depend on the positions only: rotating the
query and the key of token t by the same angles makes them depend on i - j; rotating only one of
them, or neither, leaves them flat (a per-row or per-column constant). Swapping q and k (an
attention bug) and reversing the positions (a RoPE bug) give identical weights there, so the
angles are checked with different content at every position. When those weights are not RoPE's
and no known bug names why, the probe is repeated with the template's RotaryPositionalEmbedding
in place of self.rope, and attribution.rope_difference decides whether the difference is RoPE's.
"""

import pytest
import torch
import torch.nn.functional as F

from .. import rubric
from ..verdict import fail
from . import attribution, compare, diagnoses, oracle

TOLERANCE = rubric.TOLERANCES.rope
WHAT = "CausalSelfAttention"
SEQ, CONTENT = 12, 4
HEAD_DIM = CONTENT + SEQ
QK_NORM = 4.0
LOWER = torch.ones(SEQ, SEQ, dtype=torch.bool).tril(-1)  # [i, j]: j < i
ROWS, COLS = torch.nonzero(LOWER, as_tuple=True)
OFFSETS = torch.arange(SEQ)[:, None] - torch.arange(SEQ)  # [i, j]: i - j
DISTANCES = [(OFFSETS == d).double() for d in range(1, SEQ)]
ANGLES = "t * base^(-2i/head_dim)"


def _probe(generator, constant: bool, num_heads: int = 1):
    """x (1, SEQ, dim), qkv_weight and out_weight of the readout probe; with several heads, head 0
    is the probe and the others have zero weights."""
    dim = HEAD_DIM * num_heads
    content = torch.randn(1 if constant else SEQ, CONTENT, generator=generator).expand(SEQ, -1)
    x = torch.zeros(1, SEQ, dim)
    x[0, :, :CONTENT] = content
    x[0, :, CONTENT:HEAD_DIM] = torch.eye(SEQ)
    qkv_weight = torch.zeros(3, dim, dim)
    for projection in qkv_weight[:2]:
        weight = torch.randn(HEAD_DIM, CONTENT, generator=generator)
        # queries and keys of RMS norm QK_NORM: score differences of order one, so the softmax
        # is neither flat nor saturated
        rms = (content @ weight.T).norm(dim=1).pow(2).mean().sqrt()
        projection[:HEAD_DIM, :CONTENT] = weight * QK_NORM / rms
    qkv_weight[2, CONTENT:HEAD_DIM, CONTENT:HEAD_DIM] = torch.eye(SEQ)
    return x, qkv_weight.reshape(3 * dim, dim), torch.eye(dim)


def _attention(submission, x, **request) -> dict:
    result = attribution.attention(submission, WHAT, x=x, **request)
    if result["out"].shape != x.shape:
        pytest.fail(f"CausalSelfAttention returned shape {tuple(result['out'].shape)} for an input "
                    f"of shape {tuple(x.shape)}; expected the input's shape", pytrace=False)
    return result


def _run(submission, probe, num_heads: int = 1, rope: str = "own") -> dict:
    """The worker's attention result on the probe (rope="template": with the template's RoPE in
    place of self.rope where it can stand in). An unreadable output of a forward(x) that is not
    causal without a mask is measured again with the model's mask passed."""
    x, qkv_weight, out_weight = probe
    request = dict(dim=x.shape[-1], num_heads=num_heads, qkv_weight=qkv_weight,
                   out_weight=out_weight, rope=rope)
    result = _attention(submission, x, **request)
    if _log_weights(result["out"]) is None and not result.get("mask_passed"):
        leak = attribution.leaks_future(submission, WHAT, x.shape[-1], num_heads)
        if leak:
            mask = attribution.with_mask_if_not_causal(submission, leak, SEQ)
            result = {**_attention(submission, x, mask=mask, **request), "mask_passed": True}
    return result


def _largest(t: torch.Tensor) -> float:
    return float(t.abs().nan_to_num(float("inf")).max())


def _readout(out: torch.Tensor):
    """A (SEQ, SEQ) off the one-hot dims, and how far the output is from attention weights:
    |output| elsewhere, the smallest A[i, j] for j < i, the most negative A, and how far the rows
    (or else the columns: a softmax over the queries, graded in test_attention.py) are from
    summing to 1. Row 0 is left out: a mask that hides the diagonal makes it NaN."""
    weights = out[0, :, CONTENT:HEAD_DIM]
    rest = out[0, 1:].clone()
    rest[:, CONTENT:HEAD_DIM] = 0
    sums = min(_largest(weights[1:].sum(1) - 1), _largest(weights.sum(0) - 1))
    return weights, dict(elsewhere=_largest(rest), smallest=float(weights[LOWER].min()),
                         negative=float(weights[1:].min()), sums=sums)


def _log_weights(out: torch.Tensor):
    """log A[i, j] (SEQ, SEQ) if the output reads as attention weights, else None."""
    weights, measured = _readout(out)
    atol = TOLERANCE.atol
    if (measured["elsewhere"] > atol or not measured["smallest"] > 0
            or measured["negative"] < -atol or measured["sums"] > atol):
        return None
    return weights.double().log()


def _fit(log_weights: torch.Tensor, *columns) -> tuple:
    """Least squares of log A[i, j] (j < i) by sum(coef * column) + r_i + c_j: (coefs, largest
    residual). The per-row and per-column constants absorb the softmax's normaliser."""
    design = torch.stack([c[LOWER] for c in columns]
                         + [*F.one_hot(ROWS, SEQ).double().T, *F.one_hot(COLS, SEQ).double().T], 1)
    target = log_weights[LOWER].unsqueeze(1)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    return solution[:len(columns), 0].tolist(), float((design @ solution - target).abs().max())


def _misfit(log_weights: torch.Tensor, variant, probe, num_heads: int) -> float:
    """How far the student's log-weights are from a positive multiple of the variant's, up to the
    per-row and per-column constants, for the nearer RoPE pairing (inf if none is readable)."""
    x, qkv_weight, out_weight = probe
    best = float("inf")
    for rope in oracle.ROPE_CONVENTIONS.values():
        expected = _log_weights(variant(x, qkv_weight, out_weight, num_heads, rope))
        if expected is not None:
            (scale,), residual = _fit(log_weights, expected)
            if scale >= TOLERANCE.min_scale:
                best = min(best, residual)
    return best


def _fits(log_weights: torch.Tensor, variant, probe, num_heads: int) -> bool:
    return _misfit(log_weights, variant, probe, num_heads) <= TOLERANCE.log_weights


# Correct RoPE, inside a correct attention or one with a bug that test_attention.py grades.
CORRECT_ROPE = [oracle.attention, *diagnoses.ATTENTION_VARIANTS.values()]


def _matches_rope(log_weights, probe, num_heads: int = 1) -> bool:
    return any(_fits(log_weights, variant, probe, num_heads) for variant in CORRECT_ROPE)


def _rope_bug(log_weights, probe, variants: dict, num_heads: int = 1) -> str:
    return next((description for description, variant in variants.items()
                 if _fits(log_weights, variant, probe, num_heads)), "")


def _unreadable(out, probe, num_heads: int = 1) -> str:
    _, measured = _readout(out)
    x, qkv_weight, out_weight = probe
    cause = ""
    for rope in oracle.ROPE_CONVENTIONS.values():
        cause = cause or diagnoses.first_match(out, diagnoses.ROPE_TENSOR_VARIANTS, x,
                                               qkv_weight, out_weight, num_heads, rope,
                                               tolerance=rubric.TOLERANCES.attention)
    return (f"With W_v copying a one-hot position code and out_proj the identity, the output "
            f"should be the attention weights (> 0 for the keys before each query, rows summing "
            f"to 1) and 0 in the other dims; measured: largest |output| in the other dims "
            f"{measured['elsewhere']:.3g}, smallest weight {measured['smallest']:.3g}, largest "
            f"|row sum - 1| {measured['sums']:.3g} (allowed {TOLERANCE.atol:g}). Expected so "
            f"when the values reach the output unrotated (RoPE rotates only the queries and keys)."
            + (f" Likely cause: {cause}." if cause else ""))


def _mask_bug_with_correct_rope(submission, generator, out, probe) -> bool:
    """Whether an unreadable probe output is correct RoPE inside attention with one of the mask
    bugs test_causal_mask.py grades (weights zeroed after the softmax leave rows that do not sum
    to 1; a triu mask hides the past keys the probe reads). Then, with a note, it costs no rope
    points. Both probes (the same and different content at every position) must match the bug."""
    tolerance = rubric.TOLERANCES.attention
    cause = diagnoses.causal_mask_bug(out, *probe, 1, tolerance)
    if not cause:
        return False
    distinct = _probe(generator, constant=False)
    distinct_out = _run(submission, distinct)["out"]
    if diagnoses.causal_mask_bug(distinct_out, *distinct, 1, tolerance) != cause:
        return False
    submission.note("the attention weights could not be read off the probe, but your attention "
                 "equals correct RoPE with a causal-mask bug, which costs points in the "
                 f"causal_mask tests only ({cause})")
    return True


def _same_content_probe(submission, generator):
    """(log-weights, probe) with the same content at every position. Fails the test when the
    output does not read as attention weights; log-weights None when a causal-mask bug explains
    that (the test then passes, with a note)."""
    probe = _probe(generator, constant=True)
    out = _run(submission, probe)["out"]
    log_weights = _log_weights(out)
    if log_weights is None:
        if _mask_bug_with_correct_rope(submission, generator, out, probe):
            return None, probe
        pytest.fail(_unreadable(out, probe), pytrace=False)
    return log_weights, probe


def _flat(submission, generator, spread: float) -> str:
    """The message for weights that do not change with the positions."""
    probe = _probe(generator, constant=False)
    distinct = _log_weights(_run(submission, probe)["out"])
    cause = "" if distinct is None else _rope_bug(distinct, probe, diagnoses.ROPE_TENSOR_VARIANTS)
    return (f"With the same query and the same key at every position, your attention weights do "
            f"not change with the positions: measured log-weights within {spread:.2g} of a "
            f"per-row plus per-column constant (allowed {TOLERANCE.min_spread:g}); expected "
            f"them to change with i - j, as they do when the query and the key of token t are "
            f"both rotated by the angles {ANGLES}; rotating only the queries, only the keys, or "
            f"neither leaves them like this."
            + (f" Likely cause: {cause}." if cause else ""))


def test_rope_module_relative_property(submission, generator):
    """The provided module on its own: the same q (and k) at every position."""
    batch, heads, seq, head_dim = 2, 3, 16, 8
    q = torch.randn(batch, heads, 1, head_dim, generator=generator).expand(-1, -1, seq, -1)
    k = torch.randn(batch, heads, 1, head_dim, generator=generator).expand(-1, -1, seq, -1)
    got = submission.call("rope", "RotaryPositionalEmbedding", dim=head_dim, max_seq_len=64,
                       q=q.contiguous(), k=k.contiguous())
    for name, rotated, original in (("q", got["q"], q), ("k", got["k"], k)):
        if rotated.shape != original.shape:
            pytest.fail(f"RotaryPositionalEmbedding returned {name} of shape "
                        f"{tuple(rotated.shape)}; expected {tuple(original.shape)}", pytrace=False)
        if not compare.close(rotated.norm(dim=-1), original.norm(dim=-1), TOLERANCE):
            fail(compare.mismatch(f"norm of the rotated {name} (a rotation keeps norms)",
                                         rotated.norm(dim=-1), original.norm(dim=-1), TOLERANCE))
        if not compare.close(rotated[..., 0, :], original[..., 0, :], TOLERANCE):
            fail(compare.mismatch(f"rotated {name} at position 0 (angle 0: unchanged)",
                                         rotated[..., 0, :], original[..., 0, :], TOLERANCE))
    scores = got["q"] @ got["k"].transpose(-2, -1)  # [m, n]: depends on m - n only
    if not compare.close(scores[..., 1:, 1:], scores[..., :-1, :-1], TOLERANCE):
        fail(compare.mismatch("scores <rot(q)_m+1, rot(k)_n+1> against <rot(q)_m, rot(k)_n>",
                                     scores[..., 1:, 1:], scores[..., :-1, :-1], TOLERANCE))
    expected = [rope(q) for rope in oracle.ROPE_CONVENTIONS.values()]
    if not any(compare.close(got["q"], e, TOLERANCE) for e in expected):
        nearest = min(expected, key=lambda e: compare.max_error(got["q"], e)[0])
        fail(compare.mismatch(f"rotated q against RoPE's angles {ANGLES} (either pairing)",
                                     got["q"], nearest, TOLERANCE))


def test_attention_scores_depend_on_relative_position(submission, generator):
    """(a) The scores change with the relative position m - n, and only with it."""
    log_weights, probe = _same_content_probe(submission, generator)
    if log_weights is None:
        return
    _, spread = _fit(log_weights)
    if spread <= TOLERANCE.min_spread:
        pytest.fail(_flat(submission, generator, spread), pytrace=False)
    _, residual = _fit(log_weights, *DISTANCES)
    if residual > TOLERANCE.log_weights:
        cause = _rope_bug(log_weights, probe, diagnoses.ROPE_VARIANTS)
        pytest.fail(f"With the same query and the same key at every position, log A[i, j] - "
                    f"log A[i, i] should depend only on i - j; it also depends on the absolute "
                    f"positions (misfit {residual:.2g}, allowed {TOLERANCE.log_weights:g}); "
                    f"expected the query and the key of token t rotated by the same angles "
                    f"{ANGLES}." + (f" Likely cause: {cause}." if cause else ""), pytrace=False)


def test_rope_applied_to_queries_and_keys_not_values(submission, generator):
    """(b) Both the queries and the keys are rotated; the values are not. Values that reach the
    output unchanged make the probe's output readable as attention weights; with the same content
    at every position, scores that change with the positions need both q and k rotated (one of
    them alone, or neither, leaves them flat)."""
    log_weights, _ = _same_content_probe(submission, generator)
    if log_weights is None:
        return
    _, spread = _fit(log_weights)
    if spread <= TOLERANCE.min_spread:
        pytest.fail(_flat(submission, generator, spread), pytrace=False)


def test_rope_angles_in_each_head(submission, generator):
    """(c) The angles are t * base^(-2i/head_dim) in each head, with one head and with two."""
    same, _ = _same_content_probe(submission, generator)
    if same is None:
        return
    relative = _fit(same)[1] > TOLERANCE.min_spread and (
        _fit(same, *DISTANCES)[1] <= TOLERANCE.log_weights)
    one_head_is_rope = False
    for num_heads in (1, 2):
        setting = "one head" if num_heads == 1 else f"two heads of size {HEAD_DIM}"
        probe = _probe(generator, constant=False, num_heads=num_heads)
        out = _run(submission, probe, num_heads)["out"]
        own = _log_weights(out)
        if own is not None and _matches_rope(own, probe, num_heads):
            one_head_is_rope = num_heads == 1
            continue
        known = "" if own is None else _rope_bug(own, probe, diagnoses.ROPE_VARIANTS, num_heads)
        substituted, substituted_matches = "", False
        if not known:
            result = _run(submission, probe, num_heads, rope="template")
            substituted = result.get("rope", "own")
            weights = _log_weights(result["out"])
            substituted_matches = weights is not None and _matches_rope(weights, probe, num_heads)
        verdict = attribution.rope_difference(num_heads, known, substituted, substituted_matches,
                                              readable=own is not None)
        if verdict.category != "rope":
            submission.note(f"the RoPE check with {setting} was not counted: {verdict.cause}")
            continue
        if own is None:
            pytest.fail(f"With {setting}: {_unreadable(out, probe, num_heads)} {verdict.cause}",
                        pytrace=False)
        misfit = min(_misfit(own, variant, probe, num_heads) for variant in CORRECT_ROPE)
        misfit = (f"log-weight misfit {misfit:.2g}, allowed {TOLERANCE.log_weights:g}"
                  if misfit < float("inf") else "their log-weights are no positive multiple of "
                  "RoPE's, up to per-row and per-column constants")
        measured = ""
        if one_head_is_rope:
            measured = (f" With one head of size {HEAD_DIM} they were RoPE's: the difference shows "
                        "only when head_dim < dim.")
        elif relative:
            measured = (" Measured in this check: with the same content at every position the "
                        "weights change with i - j only, so the queries and keys are rotated "
                        "alike, but by other angles than RoPE's.")
        pytest.fail(f"With {setting} and a different query and key at every position, your "
                    f"attention weights are not RoPE's with the angles {ANGLES} (rotate-half or "
                    f"interleaved pairing): {misfit}.{measured} {verdict.cause}".rstrip(),
                    pytrace=False)
