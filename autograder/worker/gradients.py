"""Vector-Jacobian products through a scalar, used by the grader and the worker alike.

`out.backward(grad_out)` or `torch.autograd.grad(out, x, grad_out)` with a tensor gradient makes
torch import torch.fx's symbolic shapes and sympy (~490 modules, ~0.45 CPU-s, in each process
that does it). The gradient of the scalar <out, grad_out> is the same product, bit for bit: its
backward hands grad_out * 1.0 to out's own backward, so callers take that instead.
"""

import torch


def inner_product(out: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """sum(out * grad_out), a 0-d tensor; out and grad_out must have the same shape.

    Raises ValueError on a shape mismatch, as backward(grad_out) would (no broadcasting)."""
    if out.shape != grad_out.shape:
        raise ValueError(f"Mismatch in shape: the output has shape {tuple(out.shape)}, "
                         f"expected {tuple(grad_out.shape)}")
    return (out * grad_out).sum()
