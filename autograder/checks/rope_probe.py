"""The readout probe of the rope tests (test_rope.py): the student's attention run on inputs and
weights from which its attention weights can be read, the fits of their log, and the reasons a
probe output is charged elsewhere.

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
(attribution.attention); when the output is still unreadable, with a mask that allows every key
(attribution.EVERY_KEY): a mask bug, whatever its form, then costs no rope points.

With the same content at every position the scores depend on the positions only: rotating the
query and the key of token t by the same angles makes them depend on i - j; rotating only one of
them, or neither, leaves them flat (a per-row or per-column constant). Swapping q and k (an
attention bug) and reversing the positions (a RoPE bug) give identical weights there, so the
angles are checked with different content at every position. When those weights are not RoPE's
and no known bug names why, the probe is repeated with the template's RotaryPositionalEmbedding
in place of self.rope, and attribution.rope_difference decides whether the difference is RoPE's.
"""

import torch
import torch.nn.functional as F

from .. import rubric
from ..verdict import Verdict, fail
from . import attribution, diagnoses, oracle

TOLERANCE = rubric.TOLERANCES.rope
SEQ, CONTENT = 12, 4
HEAD_DIM = CONTENT + SEQ
QK_NORM = 4.0
LOWER = torch.ones(SEQ, SEQ, dtype=torch.bool).tril(-1)  # [i, j]: j < i
ROWS, COLS = torch.nonzero(LOWER, as_tuple=True)
OFFSETS = torch.arange(SEQ)[:, None] - torch.arange(SEQ)  # [i, j]: i - j
DISTANCES = [(OFFSETS == d).double() for d in range(1, SEQ)]
ANGLES = "t * base^(-2i/head_dim)"


def make_probe(generator, constant: bool, num_heads: int = 1):
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


def run_probe(submission, probe, num_heads: int = 1, rope: str = "own") -> attribution.Measurement:
    """The attention run on the probe (rope="template": with the template's RoPE in place of
    self.rope where it can stand in). An unreadable output of a forward(x) that is not causal
    without a mask is measured again with the model's mask passed."""
    x, qkv_weight, out_weight = probe
    request = dict(dim=x.shape[-1], num_heads=num_heads, qkv_weight=qkv_weight,
                   out_weight=out_weight, rope=rope)
    measurement = attribution.attention(submission, x=x, **request)
    if read_log_weights(measurement.run.out) is None and not measurement.mask_passed:
        leak = attribution.leaks_future(submission, x.shape[-1], num_heads)
        if leak:
            mask = attribution.with_mask_if_not_causal(submission, leak, SEQ)
            measurement = attribution.Measurement(attribution.attention(submission, x=x, mask=mask,
                                                                        **request).run,
                                                  mask_passed=True)
    if read_log_weights(measurement.run.out) is None:
        tried = "the model's mask" if measurement.mask_passed else "forward's own mask"
        for form, run in attribution.with_every_key(submission, x=x, **request):
            if read_log_weights(run.out) is not None:
                submission.note(f"the attention weights could not be read off the probe with {tried}; "
                                f"with {form} passed, every key allowed, they could, and RoPE was read "
                                "from them: how the causal mask is applied is graded by the "
                                "causal_mask tests only")
                return attribution.Measurement(run, mask_passed=True)
    return measurement


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


def read_log_weights(out: torch.Tensor):
    """log A[i, j] (SEQ, SEQ) if the output reads as attention weights, else None."""
    weights, measured = _readout(out)
    atol = TOLERANCE.atol
    if (measured["elsewhere"] > atol or not measured["smallest"] > 0
            or measured["negative"] < -atol or measured["sums"] > atol):
        return None
    return weights.double().log()


def fit(log_weights: torch.Tensor, *columns) -> tuple:
    """Least squares of log A[i, j] (j < i) by sum(coef * column) + r_i + c_j: (coefs, largest
    residual). The per-row and per-column constants absorb the softmax's normaliser."""
    design = torch.stack([c[LOWER] for c in columns]
                         + [*F.one_hot(ROWS, SEQ).double().T, *F.one_hot(COLS, SEQ).double().T], 1)
    target = log_weights[LOWER].unsqueeze(1)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    return solution[:len(columns), 0].tolist(), float((design @ solution - target).abs().max())


def misfit_to(log_weights: torch.Tensor, variant, probe, num_heads: int) -> float:
    """How far the student's log-weights are from a positive multiple of the variant's, up to the
    per-row and per-column constants, for the nearer RoPE pairing (inf if none is readable)."""
    best = float("inf")
    for output in attribution.pairings(variant, *probe, num_heads):
        expected = read_log_weights(output)
        if expected is not None:
            (scale,), residual = fit(log_weights, expected)
            if scale >= TOLERANCE.min_scale:
                best = min(best, residual)
    return best


def _fits(log_weights: torch.Tensor, variant, probe, num_heads: int) -> bool:
    return misfit_to(log_weights, variant, probe, num_heads) <= TOLERANCE.log_weights


# Correct RoPE, inside a correct attention or one with a bug that test_attention.py grades.
CORRECT_ROPE = [oracle.attention, *diagnoses.ATTENTION_VARIANTS.values()]


def matches_rope(log_weights, probe, num_heads: int = 1) -> bool:
    return any(_fits(log_weights, variant, probe, num_heads) for variant in CORRECT_ROPE)


def rope_bug(log_weights, probe, variants: dict, num_heads: int = 1):
    """The Diagnosis of the first of `variants` whose weights the log-weights fit, or None."""
    return next((diagnosis for diagnosis, variant in variants.items()
                 if _fits(log_weights, variant, probe, num_heads)), None)


def unreadable_verdict(out, probe, num_heads: int = 1, setting: str = "", attributed=None) -> Verdict:
    """The Verdict on a probe output that does not read as attention weights; `attributed`: the
    Diagnosis attribution.rope_difference gave, if any."""
    _, measured = _readout(out)
    known = attribution.known_bug(out, diagnoses.ROPE_TENSOR_VARIANTS, *probe, num_heads) or attributed
    return Verdict(
        measured=(f"with {setting}: " if setting else "") + "your attention's output on the "
                 "readout probe (W_v copying a one-hot position code, out_proj the identity)",
        found=(f"largest |output| in the other dims {measured['elsewhere']:.3g}, smallest weight "
               f"{measured['smallest']:.3g}, largest |row sum - 1| {measured['sums']:.3g}"),
        expected=(f"the attention weights (> 0 for the keys before each query, rows summing to 1) "
                  f"and 0 in the other dims, within {TOLERANCE.atol:g}, as when the values "
                  "reach the output unrotated (RoPE rotates only the queries and keys)"),
        **diagnoses.explained(known), kind="property")


def _mask_bug_with_correct_rope(submission, generator, out, probe) -> bool:
    """Whether an unreadable probe output is correct RoPE inside attention with one of the mask
    bugs test_causal_mask.py grades (weights zeroed after the softmax leave rows that do not sum
    to 1; a triu mask hides the past keys the probe reads). Then, with a note, it costs no rope
    points. Both probes (the same and different content at every position) must match the bug."""
    found = attribution.causal_mask_bug(out, *probe, 1)
    if not found:
        return False
    distinct = make_probe(generator, constant=False)
    distinct_out = run_probe(submission, distinct).run.out
    if attribution.causal_mask_bug(distinct_out, *distinct, 1) != found:
        return False
    submission.note("the attention weights could not be read off the probe, but your attention "
                    "equals correct RoPE with a causal-mask bug, which the causal_mask tests "
                    f"grade, not this one ({found})")
    return True


def same_content_probe(submission, generator):
    """(log-weights, probe) with the same content at every position. Fails the test when the
    output does not read as attention weights; log-weights None when a causal-mask bug explains
    that (the test then passes, with a note)."""
    probe = make_probe(generator, constant=True)
    out = run_probe(submission, probe).run.out
    log_weights = read_log_weights(out)
    if log_weights is None:
        if _mask_bug_with_correct_rope(submission, generator, out, probe):
            return None, probe
        fail(unreadable_verdict(out, probe))
    return log_weights, probe


def flat_verdict(submission, generator, spread: float) -> Verdict:
    """The Verdict on weights that do not change with the positions."""
    probe = make_probe(generator, constant=False)
    distinct = read_log_weights(run_probe(submission, probe).run.out)
    known = None if distinct is None else rope_bug(distinct, probe, diagnoses.ROPE_TENSOR_VARIANTS)
    return Verdict(
        measured="your attention weights with the same query and the same key at every position",
        found=(f"log-weights within {spread:.2g} of a per-row plus per-column constant (they do "
               "not change with the positions)"),
        expected=(f"a spread above {TOLERANCE.min_spread:g}: weights that change with i - j, "
                  "as they do when the query and the key of token t are both rotated by the "
                  f"angles {ANGLES}"),
        **diagnoses.explained(known, otherwise="Rotating only the queries, only the keys, or "
                                                "neither leaves them like this."), kind="property")
