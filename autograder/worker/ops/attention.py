"""CausalSelfAttention with the grader's projection weights, run on the grader's inputs."""

import torch

from .. import adapt
from ..gradients import inner_product
from ..session import op


@op("attention")
def run_attention(session, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                  out_weight: torch.Tensor, x: torch.Tensor, mask=None, train: bool = False,
                  grad_out=None, per_position_grads: bool = False) -> dict:
    """Output for x; with grad_out, the gradient of <out, grad_out> w.r.t. x; with
    per_position_grads, one such gradient per output position t (rows[t] = d<out[:, t],
    grad_out[:, t]>/dx), the raw material of the future-gradient check."""
    attention = adapt.build(session, "CausalSelfAttention", dim, num_heads, dropout=0.0)
    adapt.set_dropout(attention, 0.0)
    adapt.load_projections(session, attention, qkv_weight, out_weight)
    attention.train(train)
    x = x.clone().requires_grad_(grad_out is not None)
    out = adapt.call_attention(session, attention, x, mask)
    result = {"out": adapt.plain(out)}
    if grad_out is not None and per_position_grads:
        rows = [torch.autograd.grad((out[:, t] * grad_out[:, t]).sum(), x, retain_graph=True,
                                    allow_unused=True)[0] for t in range(x.shape[1])]
        result["rows"] = torch.stack([adapt.plain(r) if r is not None else torch.zeros_like(x)
                                      for r in rows])
    elif grad_out is not None:
        (grad_x,) = torch.autograd.grad(inner_product(out, grad_out), x, allow_unused=True)
        result["grad_x"] = adapt.plain(grad_x) if grad_x is not None else torch.zeros_like(x)
    return result
