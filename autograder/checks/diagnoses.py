"""Known wrong versions of each component, to name the likely bug when a check fails.

When a student's output misses the reference, the check compares it with each variant here; a
match names the bug in words. Only the description reaches the student, never code.
"""

import torch


def _rms(x, eps):
    return torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


RMSNORM_VARIANTS = {
    "your output matches LayerNorm: RMSNorm does not subtract the mean":
        lambda x, scale, eps: (x - x.mean(-1, keepdim=True))
        / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * scale,
    "your output matches eps added outside the square root: use sqrt(mean(x^2) + eps)":
        lambda x, scale, eps: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * scale,
    "your output matches RMSNorm without eps":
        lambda x, scale, eps: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * scale,
    "your output matches RMSNorm without the learnable scale: multiply by self.scale":
        lambda x, scale, eps: x / _rms(x, eps),
    "your output matches the standard deviation instead of the root mean square":
        lambda x, scale, eps: x / torch.sqrt(x.var(-1, keepdim=True) + eps) * scale,
    "your output matches dividing by mean(|x|) instead of the root mean square":
        lambda x, scale, eps: x / (x.abs().mean(-1, keepdim=True) + eps) * scale,
    "your output matches normalising over the wrong dimension: use the last one (dim=-1)":
        lambda x, scale, eps: x / torch.sqrt(x.pow(2).mean(dim=-2, keepdim=True) + eps) * scale,
}


def first_match(actual: torch.Tensor, variants: dict, *args, rtol: float, atol: float) -> str:
    """The description of the first variant whose output equals `actual`, or ''."""
    for description, variant in variants.items():
        try:
            expected = variant(*args)
        except (RuntimeError, IndexError):
            continue
        if expected.shape == actual.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol):
            return description
    return ""
