"""RMSNorm(dim, eps) with a given scale, run forward and backward on the grader's tensors."""

import torch

from .. import adapt
from ..gradients import inner_product
from ..protocol import Op
from ..session import op


@op(Op.RMSNORM)
def run_rmsnorm(session, dim: int, eps: float, scale: torch.Tensor, x: torch.Tensor,
                grad_out: torch.Tensor) -> dict:
    norm = adapt.build(session, "RMSNorm", dim, eps=eps)
    parameter = adapt.find_scale(session, norm, dim)
    with torch.no_grad():
        parameter.copy_(scale)
    x = x.clone().requires_grad_(True)
    out = adapt.first_tensor(norm(x), session, "RMSNorm.forward")
    inner_product(out, grad_out).backward()
    return {
        "out": adapt.plain(out),
        "grad_x": adapt.plain(x.grad) if x.grad is not None else None,
        "grad_scale": adapt.plain(parameter.grad) if parameter.grad is not None else None,
        "scale_is_parameter": isinstance(parameter, torch.nn.Parameter)
        and any(p is parameter for p in norm.parameters()),
        "scale_shape": list(parameter.shape),
    }
