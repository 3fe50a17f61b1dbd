"""What a correct implementation computes, on the trusted side.

The reference solution (reference/backbone.py) is imported here and only here. The checks
compare the worker's raw tensors against these values; where several conventions are correct
(RoPE's rotate-half and interleaved pairings), the oracle computes each of them.
"""

import functools
import importlib.util
import math
import os

import torch
import torch.nn.functional as F

REFERENCE_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "reference", "backbone.py")


@functools.lru_cache(maxsize=1)
def reference():
    spec = importlib.util.spec_from_file_location("scratch1_reference", REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rope_angles(seq_len: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """(seq, head_dim/2) rotation angles: position * base^(-2i/head_dim)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    return torch.outer(torch.arange(seq_len).float(), inv_freq)


def rope_interleaved(x: torch.Tensor, angles: torch.Tensor = None) -> torch.Tensor:
    """RoPE with the interleaved pairing (2i, 2i+1) on (..., seq, head_dim)."""
    angles = rope_angles(x.shape[-2], x.shape[-1]) if angles is None else angles
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def rope_rotate_half(x: torch.Tensor, angles: torch.Tensor = None) -> torch.Tensor:
    """RoPE with the rotate-half pairing (i, i + head_dim/2), as the template's module does."""
    angles = rope_angles(x.shape[-2], x.shape[-1]) if angles is None else angles
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


ROPE_CONVENTIONS = {"rotate-half": rope_rotate_half, "interleaved": rope_interleaved}


def attention(x: torch.Tensor, qkv_weight: torch.Tensor, out_weight: torch.Tensor,
              num_heads: int, rope=rope_rotate_half, mask: torch.Tensor = None,
              mask_after_softmax: bool = False, rope_on: str = "qk", softmax_dim: int = -1,
              split_transpose: bool = True, merge_transpose: bool = True) -> torch.Tensor:
    """Causal multi-head attention (no dropout) with the given weights: (b, s, d) -> (b, s, d).

    mask (seq, seq) bool, True where attention is allowed, replaces the causal mask, and
    mask_after_softmax zeroes the weights instead of the scores: both only to reproduce bugs.
    So are the others: rope_on names the tensors RoPE rotates, softmax_dim the softmax's axis,
    and a False *_transpose reshapes between (b, s, d) and (b, h, s, hd) without transposing.
    """
    batch, seq_len, dim = x.shape
    head_dim = dim // num_heads
    q, k, v = (x @ qkv_weight.T).split(dim, dim=-1)
    if split_transpose:
        q, k, v = (t.view(batch, seq_len, num_heads, head_dim).transpose(1, 2) for t in (q, k, v))
    else:
        q, k, v = (t.reshape(batch, num_heads, seq_len, head_dim) for t in (q, k, v))
    q, k, v = (rope(t) if name in rope_on else t for name, t in zip("qkv", (q, k, v)))
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    if mask is None:
        mask = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    if mask_after_softmax:
        weights = F.softmax(scores, dim=-1).masked_fill(~mask, 0.0)
    else:
        weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=softmax_dim)
    out = weights @ v
    out = (out.transpose(1, 2) if merge_transpose else out).reshape(batch, seq_len, dim)
    return out @ out_weight.T
