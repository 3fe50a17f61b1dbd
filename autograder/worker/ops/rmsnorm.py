"""RMSNorm(dim, eps) with a given scale, run forward and backward on the grader's tensors."""

import torch

from ..adapt.calls import call_submission, first_tensor
from ..adapt.construction import build, find_scale
from ..gradients import inner_product
from ..protocol import Op
from ..replies import detached_copy
from ..session import op


@op(Op.RMSNORM)
def run_rmsnorm(session, dim: int, eps: float, scale: torch.Tensor, x: torch.Tensor,
                grad_out: torch.Tensor) -> dict:
    """The student's RMSNorm(dim, eps) with its gain set to `scale` (dim,), run on x (batch,
    seq, dim) and backpropagated from grad_out (x's shape). Returns {"out": (batch, seq, dim),
    "grad_x": d<out, grad_out>/dx or None, "grad_scale": the same w.r.t. the gain or None,
    "scale_is_parameter": whether the gain is a registered nn.Parameter of the module,
    "scale_shape": the gain's shape as a list}."""
    norm = build(session, "RMSNorm", dim, eps=eps)
    parameter = find_scale(session, norm, dim)
    with torch.no_grad():
        parameter.copy_(scale)
    x = x.clone().requires_grad_(True)
    out = first_tensor(call_submission(norm, x), session, "RMSNorm.forward")
    inner_product(out, grad_out).backward()
    return {
        "out": detached_copy(out),
        "grad_x": detached_copy(x.grad) if x.grad is not None else None,
        "grad_scale": detached_copy(parameter.grad) if parameter.grad is not None else None,
        "scale_is_parameter": isinstance(parameter, torch.nn.Parameter)
        and any(p is parameter for p in norm.parameters()),
        "scale_shape": list(parameter.shape),
    }
