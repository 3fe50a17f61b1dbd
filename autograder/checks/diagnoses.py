"""Known wrong versions of each component, to name the likely bug when a check fails.

When a student's output misses the reference, the check compares it with each variant here; a
match names the bug: its Diagnosis, the cause (a Verdict's `cause`, the same words for every
submission with that bug) and the fix (the Verdict's hint). Only those words reach the student,
never code. Matching the attention variants under either RoPE pairing is attribution.py's.
"""

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..rubric_records import Tolerance
from . import oracle


@dataclass(frozen=True)
class Diagnosis:
    """A known bug. cause: what the output matches, in words, without measured numbers (the TA
    report groups by it); fix: what to do, '' when the cause says it."""

    cause: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.cause}: {self.fix}" if self.fix else self.cause

    @property
    def hint(self) -> str:
        """The fix as a sentence, for a Verdict's hint ('' without one)."""
        if not self.fix:
            return ""
        return self.fix[0].upper() + self.fix[1:] + ("" if self.fix.endswith(".") else ".")


def explained(diagnosis: Optional[Diagnosis], otherwise: str = "") -> dict:
    """A Verdict's cause and hint: the diagnosis's cause and fix, or with no diagnosis no cause
    and the hint `otherwise`."""
    if diagnosis is None:
        return dict(cause="", hint=otherwise)
    return dict(cause=diagnosis.cause, hint=diagnosis.hint)


def _rms(x, eps):
    return torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


RMSNORM_VARIANTS = {
    Diagnosis("the mean subtracted (your output matches LayerNorm)",
              "RMSNorm does not subtract the mean"):
        lambda x, scale, eps: (x - x.mean(-1, keepdim=True))
        / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * scale,
    Diagnosis("eps added outside the square root", "use sqrt(mean(x^2) + eps)"):
        lambda x, scale, eps: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * scale,
    Diagnosis("RMSNorm without eps"):
        lambda x, scale, eps: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * scale,
    Diagnosis("RMSNorm without the learnable scale", "multiply by self.scale"):
        lambda x, scale, eps: x / _rms(x, eps),
    Diagnosis("the standard deviation instead of the root mean square"):
        lambda x, scale, eps: x / torch.sqrt(x.var(-1, keepdim=True) + eps) * scale,
    Diagnosis("dividing by mean(|x|) instead of the root mean square"):
        lambda x, scale, eps: x / (x.abs().mean(-1, keepdim=True) + eps) * scale,
    Diagnosis("normalising over the wrong dimension", "use the last one (dim=-1)"):
        lambda x, scale, eps: x / torch.sqrt(x.pow(2).mean(dim=-2, keepdim=True) + eps) * scale,
    Diagnosis("normalising over dim 1 (the sequence axis of a (batch, seq, dim) input), not the "
              "last dimension", "use dim=-1, which is the features for inputs of any rank"):
        lambda x, scale, eps: x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + eps) * scale,
    Diagnosis("the gain applied as (1 + scale) (the Gemma parametrisation)",
              "the template's scale starts at ones and multiplies directly, x / rms * scale"):
        lambda x, scale, eps: x / _rms(x, eps) * (1 + scale),
    # eps fixed whatever the constructor is given: a hard-coded value, or nn.RMSNorm /
    # F.rms_norm called without eps (they then use torch.finfo(dtype).eps).
    **{Diagnosis(f"eps fixed at {fixed:.3g} whatever eps RMSNorm is given",
                 f"use the eps passed to the constructor (self.eps){how}"):
           (lambda fixed: lambda x, scale, eps: x / _rms(x, fixed) * scale)(fixed)
       for fixed, how in ((1e-6, ""), (1e-5, ""), (1e-8, ""),
                          (torch.finfo(torch.float32).eps, ", and pass it to nn.RMSNorm or "
                           "F.rms_norm (without it they use torch.finfo(dtype).eps)"))},
}


def matches(actual: torch.Tensor, variants: dict, *args, tolerance: Tolerance):
    """The Diagnoses of the variants ({Diagnosis: variant}) whose output variant(*args) equals
    `actual`, in order (a generator). An `actual` without one finite value matches nothing: NaN
    everywhere tells no bug from another."""
    if not actual.isfinite().any():
        return
    for diagnosis, variant in variants.items():
        try:
            expected = variant(*args)
        except (RuntimeError, IndexError):
            continue
        # NaN where the variant has NaN is part of its signature (a row that masks every key)
        if expected.shape == actual.shape and torch.allclose(
                actual, expected, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True):
            yield diagnosis


def first_match(actual: torch.Tensor, variants: dict, *args,
                tolerance: Tolerance) -> Optional[Diagnosis]:
    """The Diagnosis of the first variant whose output equals `actual`, or None."""
    return next(matches(actual, variants, *args, tolerance=tolerance), None)


def _attention_with(make_mask=None, **options):
    """oracle.attention with the bool mask make_mask(seq) (True = allowed) and the options."""
    def variant(x, qkv_weight, out_weight, num_heads, rope):
        mask = make_mask(x.shape[1]) if make_mask else None
        return oracle.attention(x, qkv_weight, out_weight, num_heads, rope, mask=mask, **options)
    return variant


# Attention with every key allowed: what a correct attention gives when passed a mask of ones.
UNMASKED_ATTENTION = _attention_with(lambda n: torch.ones(n, n, dtype=torch.bool))

CAUSAL_MASK_VARIANTS = {
    Diagnosis("attention with no mask at all",
              "note that masked_fill is not in-place: assign its result "
              "(scores = scores.masked_fill(...)), and build the causal mask yourself when forward "
              "gets none"): UNMASKED_ATTENTION,
    Diagnosis("zeroing the attention weights after the softmax (the future keys still enter the "
              "softmax's normalisation)", "mask the scores (with -inf) before the softmax"):
        _attention_with(mask_after_softmax=True),
    Diagnosis("a mask that hides the diagonal too, so position 0 has no key left and its softmax "
              "is NaN", "let every position attend to itself (torch.tril with diagonal=0)"):
        _attention_with(lambda n: torch.ones(n, n, dtype=torch.bool).tril(-1)),
    Diagnosis("a mask that keeps the future and hides the past (torch.triu where torch.tril "
              "belongs)"): _attention_with(lambda n: torch.ones(n, n, dtype=torch.bool).triu()),
    Diagnosis("a mask that lets each position t also see the next token t + 1 (a mask built with "
              "diagonal=1, or a larger mask sliced one row off)",
              "position t may attend to keys s <= t only"):
        _attention_with(lambda n: torch.ones(n, n, dtype=torch.bool).tril(1)),
}


# -- rope and attention: wrong versions of CausalSelfAttention, with the variant signature above --

def _with_weights(transform):
    """oracle.attention on the weights transform(qkv_weight, out_weight, num_heads) returns."""
    def variant(x, qkv_weight, out_weight, num_heads, rope):
        return oracle.attention(x, *transform(qkv_weight, out_weight, num_heads), num_heads, rope)
    return variant


def _with_rope(transform):
    """oracle.attention with the RoPE pairing `rope` replaced by transform(rope, dim)."""
    def variant(x, qkv_weight, out_weight, num_heads, rope):
        return oracle.attention(x, qkv_weight, out_weight, num_heads, transform(rope, x.shape[-1]))
    return variant


def _unscaled(qkv_weight, out_weight, num_heads):
    """Scores without 1/sqrt(head_dim) are the scores of queries sqrt(head_dim) times larger."""
    dim = out_weight.shape[0]
    return torch.cat([qkv_weight[:dim] * math.sqrt(dim // num_heads), qkv_weight[dim:]]), out_weight


def _scaled_by_dim(qkv_weight, out_weight, num_heads):
    """Scores divided by sqrt(dim) are those of queries sqrt(head_dim / dim) times smaller."""
    dim = out_weight.shape[0]
    return torch.cat([qkv_weight[:dim] / math.sqrt(num_heads), qkv_weight[dim:]]), out_weight


def _split_as(order):
    """The weights of a student who writes `a, b, c = qkv_proj(x).split(...)`, (a, b, c) = order."""
    def transform(qkv_weight, out_weight, num_heads):
        chunks = qkv_weight.chunk(3)
        return torch.cat([chunks[order.index(name)] for name in "qkv"]), out_weight
    return transform


def _rope_tables_cut(t, dim):
    """The template's (rotate-half) RoPE built for `dim`, its cos/sin tables cut to head_dim."""
    angles = oracle.rope_angles(t.shape[-2], dim)
    angles = torch.cat([angles, angles], dim=-1)[:, :t.shape[-1]]
    first, second = t.chunk(2, dim=-1)
    return t * angles.cos() + torch.cat([-second, first], dim=-1) * angles.sin()


def _rope_before_split(t, rope):
    """RoPE over the model dim of (batch, heads, seq, head_dim) merged back to (batch, seq, dim)."""
    batch, heads, seq_len, head_dim = t.shape
    merged = rope(t.transpose(1, 2).reshape(batch, seq_len, heads * head_dim))
    return merged.view(batch, seq_len, heads, head_dim).transpose(1, 2)


# Which tensors RoPE rotates (the rope test of queries/keys/values names these).
ROPE_TENSOR_VARIANTS = {
    Diagnosis("no RoPE at all (or RoPE at position 0 for every token)",
              "apply self.rope to the queries and keys after splitting the heads"):
        _attention_with(rope_on=""),
    Diagnosis("RoPE applied to the queries only", "rotate the keys too"):
        _attention_with(rope_on="q"),
    Diagnosis("RoPE applied to the keys only", "rotate the queries too"):
        _attention_with(rope_on="k"),
    Diagnosis("RoPE also applied to the values", "rotate only the queries and keys"):
        _attention_with(rope_on="qkv"),
}
# How they are rotated (positions and frequencies).
ROPE_POSITION_VARIANTS = {
    Diagnosis("RoPE with the rotation reversed, which the positions reversed (the last token "
              "unrotated) or cos and sin swapped give alike",
              "token t must be rotated by the angle t * theta_i"):
        _with_rope(lambda rope, dim: lambda t: rope(t.flip(-2)).flip(-2)),
    Diagnosis("RoPE frequencies computed for the model dim instead of head_dim (base^(-2i/dim))",
              "RoPE rotates each head, a vector of size head_dim"):
        _with_rope(lambda rope, dim: lambda t: rope(
            t, oracle.rope_angles(t.shape[-2], dim)[:, :t.shape[-1] // 2])),
    Diagnosis("RoPE cos/sin tables built for the model dim and cut to head_dim",
              "build the rotary embedding for head_dim, as the template does"):
        _with_rope(lambda rope, dim: lambda t: _rope_tables_cut(t, dim)),
    Diagnosis("RoPE applied to the whole queries and keys (size dim) before splitting the heads",
              "split the heads first, then rotate each head (size head_dim)"):
        _with_rope(lambda rope, dim: lambda t: _rope_before_split(t, rope)),
}
ROPE_VARIANTS = {**ROPE_TENSOR_VARIANTS, **ROPE_POSITION_VARIANTS}

# The attention computation itself, around a correct RoPE.
ATTENTION_VARIANTS = {
    Diagnosis("scores not divided by sqrt(head_dim)"): _with_weights(_unscaled),
    Diagnosis("scores divided by sqrt(dim), the model dim, instead of sqrt(head_dim)",
              "each head's dot products have head_dim terms"): _with_weights(_scaled_by_dim),
    Diagnosis("the softmax taken over the queries (dim=-2)", "take it over the keys (dim=-1)"):
        _attention_with(softmax_dim=-2),
    Diagnosis("heads split by reshaping straight to (batch, heads, seq, head_dim)",
              "view as (batch, seq, heads, head_dim), then transpose(1, 2) (and back before "
              "merging)"):
        _attention_with(split_transpose=False, merge_transpose=False),
    Diagnosis("heads merged without transposing back",
              "transpose (batch, heads, seq, head_dim) to (batch, seq, heads, head_dim) before "
              "reshaping to (batch, seq, dim)"):
        _attention_with(merge_transpose=False),
    **{Diagnosis(f"qkv_proj's output split in the order {', '.join(order)}",
                 "it holds the queries, then the keys, then the values"):
       _with_weights(_split_as(order)) for order in ("kqv", "qvk", "kvq", "vqk", "vkq")},
    Diagnosis("out_proj not applied", "project the merged heads with out_proj"):
        _with_weights(lambda qkv_weight, out_weight, num_heads:
                      (qkv_weight, torch.eye(out_weight.shape[0]))),
}
