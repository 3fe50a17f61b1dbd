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


def rope_interleaved(x: torch.Tensor) -> torch.Tensor:
    """RoPE with the interleaved pairing (2i, 2i+1) on (..., seq, head_dim)."""
    angles = rope_angles(x.shape[-2], x.shape[-1])
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def rope_rotate_half(x: torch.Tensor) -> torch.Tensor:
    """RoPE with the rotate-half pairing (i, i + head_dim/2), as the template's module does."""
    angles = rope_angles(x.shape[-2], x.shape[-1])
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


ROPE_CONVENTIONS = {"rotate-half": rope_rotate_half, "interleaved": rope_interleaved}


def attention(x: torch.Tensor, qkv_weight: torch.Tensor, out_weight: torch.Tensor,
              num_heads: int, rope=rope_rotate_half) -> torch.Tensor:
    """Causal multi-head attention (no dropout) with the given weights: (b, s, d) -> (b, s, d)."""
    batch, seq_len, dim = x.shape
    head_dim = dim // num_heads
    q, k, v = (x @ qkv_weight.T).split(dim, dim=-1)
    q, k, v = (t.view(batch, seq_len, num_heads, head_dim).transpose(1, 2) for t in (q, k, v))
    q, k = rope(q), rope(k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    weights = F.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, seq_len, dim)
    return out @ out_weight.T
