"""rope: TODO 2's rotary embedding, as the student's attention applies it.

The probe reads the attention weights off the output of one head. Token j is [c_j ; e_j]
(content c_j, one-hot position code e_j); W_q and W_k read only the content, W_v copies the
one-hot code and out_proj is the identity, so output i holds row i of the attention weights A in
the one-hot dims and zeros elsewhere. log A[i, j] is the score of query i and key j up to a
per-row constant (the softmax's normaliser). The fits below also allow a per-column constant and
a scale factor, and the references include every attention bug test_attention.py names (q/k
split order swapped, ...), so attention bugs cost no rope points; only entries j < i are used,
which every causal mask (or a missing one) leaves visible. A mask bug that makes the weights
unreadable (zeroed after the softmax, a triu mask) costs no rope points when the output is
correct RoPE with that bug (diagnoses.CAUSAL_MASK_VARIANTS).

With the same content at every position the scores depend on the positions only, which shows
the relative-position property plainly; but there, swapping q and k (an attention bug) and
reversing the positions (a RoPE bug) give identical weights, so RoPE's own scores are checked
with different content at every position. A RoPE built for the model dim instead of head_dim is
invisible with one head (head_dim = dim), so that check is repeated with a second head of zero
weights; a head split or merge bug garbles that probe, and there only a recognised RoPE bug
fails the test.
"""

import pytest
import torch
import torch.nn.functional as F

from .. import rubric
from . import compare, diagnoses, oracle

TOLERANCE = rubric.TOLERANCES["rope"]
SEQ, CONTENT = 12, 4
HEAD_DIM = CONTENT + SEQ
QK_NORM = 4.0
LOWER = torch.ones(SEQ, SEQ, dtype=torch.bool).tril(-1)  # [i, j]: j < i
ROWS, COLS = torch.nonzero(LOWER, as_tuple=True)
OFFSETS = torch.arange(SEQ)[:, None] - torch.arange(SEQ)  # [i, j]: i - j
DISTANCES = [(OFFSETS == d).double() for d in range(1, SEQ)]


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


def _run(student, probe, num_heads: int = 1) -> torch.Tensor:
    x, qkv_weight, out_weight = probe
    out = student.call("attention", "CausalSelfAttention", dim=x.shape[-1], num_heads=num_heads,
                       qkv_weight=qkv_weight, out_weight=out_weight, x=x)["out"]
    if out.shape != x.shape:
        pytest.fail(f"CausalSelfAttention returned shape {tuple(out.shape)} for an input of shape "
                    f"{tuple(x.shape)}; expected the input's shape", pytrace=False)
    return out


def _distinct_content(student, generator, num_heads: int = 1):
    """(log-weights or None, probe) of the probe with different content at every position."""
    probe = _probe(generator, constant=False, num_heads=num_heads)
    return _log_weights(_run(student, probe, num_heads)), probe


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
    atol = TOLERANCE["atol"]
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


def _fits(log_weights: torch.Tensor, variant, probe, num_heads: int) -> bool:
    """Whether the student's log-weights are a positive multiple of the variant's, up to the
    per-row and per-column constants, for either RoPE pairing."""
    x, qkv_weight, out_weight = probe
    for rope in oracle.ROPE_CONVENTIONS.values():
        expected = _log_weights(variant(x, qkv_weight, out_weight, num_heads, rope))
        if expected is not None:
            (scale,), residual = _fit(log_weights, expected)
            if residual <= TOLERANCE["log_weights"] and scale >= TOLERANCE["min_scale"]:
                return True
    return False


# Correct RoPE, inside a correct attention or one with a bug that test_attention.py grades.
CORRECT_ROPE = [oracle.attention, *diagnoses.ATTENTION_VARIANTS.values()]


def _matches_rope(log_weights, probe, num_heads: int = 1) -> bool:
    return any(_fits(log_weights, variant, probe, num_heads) for variant in CORRECT_ROPE)


def _rope_bug(log_weights, probe, variants: dict, num_heads: int = 1) -> str:
    return next((description for description, variant in variants.items()
                 if _fits(log_weights, variant, probe, num_heads)), "")


def _unreadable(out, probe) -> str:
    _, measured = _readout(out)
    x, qkv_weight, out_weight = probe
    cause = ""
    for rope in oracle.ROPE_CONVENTIONS.values():
        cause = cause or diagnoses.first_match(out, diagnoses.ROPE_TENSOR_VARIANTS, x,
                                               qkv_weight, out_weight, 1, rope,
                                               **rubric.TOLERANCES["attention"])
    return (f"With W_v copying a one-hot position code and out_proj the identity, the output "
            f"should be the attention weights (> 0 for the keys before each query, rows summing "
            f"to 1) and 0 in the other dims; measured: largest |output| in the other dims "
            f"{measured['elsewhere']:.3g}, smallest weight {measured['smallest']:.3g}, largest "
            f"|row sum - 1| {measured['sums']:.3g} (allowed {TOLERANCE['atol']:g}). "
            + (f"Likely cause: {cause}." if cause else "Are the values combined with the "
               "attention weights unchanged (no RoPE on the values)?"))


def _mask_bug_with_correct_rope(student, generator, out, probe) -> bool:
    """Whether an unreadable probe output is correct RoPE inside attention with one of the mask
    bugs test_causal_mask.py grades (weights zeroed after the softmax leave rows that do not sum
    to 1; a triu mask hides the past keys the probe reads). Then, with a note, it costs no rope
    points. Both probes (the same and different content at every position) must match the bug."""
    tolerance = rubric.TOLERANCES["attention"]
    cause = diagnoses.causal_mask_bug(out, *probe, 1, **tolerance)
    if not cause:
        return False
    distinct = _probe(generator, constant=False)
    if diagnoses.causal_mask_bug(_run(student, distinct), *distinct, 1, **tolerance) != cause:
        return False
    student.note("the attention weights could not be read off the probe, but your attention "
                 "equals correct RoPE with a causal-mask bug, which costs points in the "
                 f"causal_mask tests only ({cause})")
    return True


def test_rope_module_relative_property(student, generator):
    """The provided module on its own: the same q (and k) at every position."""
    batch, heads, seq, head_dim = 2, 3, 16, 8
    q = torch.randn(batch, heads, 1, head_dim, generator=generator).expand(-1, -1, seq, -1)
    k = torch.randn(batch, heads, 1, head_dim, generator=generator).expand(-1, -1, seq, -1)
    got = student.call("rope", "RotaryPositionalEmbedding", dim=head_dim, max_seq_len=64,
                       q=q.contiguous(), k=k.contiguous())
    tolerance = dict(rtol=TOLERANCE["rtol"], atol=TOLERANCE["atol"])
    for name, rotated, original in (("q", got["q"], q), ("k", got["k"], k)):
        if rotated.shape != original.shape:
            pytest.fail(f"RotaryPositionalEmbedding returned {name} of shape "
                        f"{tuple(rotated.shape)}; expected {tuple(original.shape)}", pytrace=False)
        if not compare.close(rotated.norm(dim=-1), original.norm(dim=-1), **tolerance):
            pytest.fail(compare.mismatch(f"norm of the rotated {name} (a rotation keeps norms)",
                                         rotated.norm(dim=-1), original.norm(dim=-1), **tolerance),
                        pytrace=False)
        if not compare.close(rotated[..., 0, :], original[..., 0, :], **tolerance):
            pytest.fail(compare.mismatch(f"rotated {name} at position 0 (angle 0: unchanged)",
                                         rotated[..., 0, :], original[..., 0, :], **tolerance),
                        pytrace=False)
    scores = got["q"] @ got["k"].transpose(-2, -1)  # [m, n]: depends on m - n only
    if not compare.close(scores[..., 1:, 1:], scores[..., :-1, :-1], **tolerance):
        pytest.fail(compare.mismatch("scores <rot(q)_m+1, rot(k)_n+1> against <rot(q)_m, rot(k)_n>",
                                     scores[..., 1:, 1:], scores[..., :-1, :-1], **tolerance),
                    pytrace=False)


def test_attention_scores_depend_on_relative_position(student, generator):
    # The same content at every position: scores then depend on the positions only.
    probe = _probe(generator, constant=True)
    out = _run(student, probe)
    log_weights = _log_weights(out)
    if log_weights is None:
        if _mask_bug_with_correct_rope(student, generator, out, probe):
            return
        pytest.fail(_unreadable(out, probe), pytrace=False)
    _, flat = _fit(log_weights)
    if flat <= TOLERANCE["min_spread"]:
        distinct, probe = _distinct_content(student, generator)
        cause = "" if distinct is None else _rope_bug(distinct, probe,
                                                      diagnoses.ROPE_TENSOR_VARIANTS)
        pytest.fail(f"With the same query and the same key at every position, your attention "
                    f"weights do not change with the distance i - j (log-weights deviate from a "
                    f"per-row/per-column constant by at most {flat:.2g}). "
                    + (f"Likely cause: {cause}." if cause else "RoPE is not applied to the "
                       "queries and keys (or to only one of them, or at position 0 for every "
                       "token)."), pytrace=False)
    _, residual = _fit(log_weights, *DISTANCES)
    if residual > TOLERANCE["log_weights"]:
        cause = _rope_bug(log_weights, probe, diagnoses.ROPE_VARIANTS)
        pytest.fail(f"With the same query and the same key at every position, log A[i, j] - "
                    f"log A[i, i] should depend only on i - j; it also depends on the absolute "
                    f"positions (misfit {residual:.2g}, allowed {TOLERANCE['log_weights']:g}). "
                    + (f"Likely cause: {cause}." if cause else "Rotate the query and the key of "
                       "token t by the same angles t * theta_i."), pytrace=False)

    # Different content at every position: the scores must be RoPE's.
    for num_heads in (1, 2):
        log_weights, probe = _distinct_content(student, generator, num_heads)
        if log_weights is not None and _matches_rope(log_weights, probe, num_heads):
            continue
        cause = "" if log_weights is None else _rope_bug(log_weights, probe,
                                                         diagnoses.ROPE_VARIANTS, num_heads)
        if num_heads == 2 and not cause:
            # A head split or merge bug garbles this probe: test_attention.py grades those.
            student.note("the two-head RoPE check could not read your attention weights; it was "
                         "skipped (see the attention tests)")
            continue
        setting = "one head" if num_heads == 1 else f"two heads of size {HEAD_DIM}"
        pytest.fail(f"With {setting} and a different query and key at every position, your "
                    f"attention weights do not match RoPE's (rotate-half or interleaved pairing, "
                    f"angles t * base^(-2i/head_dim)). "
                    + (f"Likely cause: {cause}." if cause else "Rotate the queries and keys of "
                       "each head by their position, after splitting the heads."), pytrace=False)


def test_rope_applied_to_queries_and_keys_not_values(student, generator):
    probe = _probe(generator, constant=True)
    out = _run(student, probe)
    if _log_weights(out) is None:
        if _mask_bug_with_correct_rope(student, generator, out, probe):
            return
        pytest.fail(_unreadable(out, probe), pytrace=False)

    log_weights, probe = _distinct_content(student, generator)
    rotates_both = log_weights is not None and (
        _matches_rope(log_weights, probe)
        or bool(_rope_bug(log_weights, probe, diagnoses.ROPE_POSITION_VARIANTS)))
    if not rotates_both:
        cause = "" if log_weights is None else _rope_bug(log_weights, probe,
                                                         diagnoses.ROPE_TENSOR_VARIANTS)
        pytest.fail("With a different query and key at every position, your attention weights "
                    "are not those of RoPE applied to both the queries and the keys. "
                    + (f"Likely cause: {cause}." if cause else "Apply self.rope to the queries "
                       "and keys (not the values), after splitting the heads."), pytrace=False)
