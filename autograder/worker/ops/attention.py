"""CausalSelfAttention with the grader's projection weights, run on the grader's inputs."""

import torch

from .. import adapt
from ..session import op


@op("attention")
def run_attention(session, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                  out_weight: torch.Tensor, x: torch.Tensor, mask=None, train: bool = False,
                  grad_out=None, per_position_grads: bool = False, dropout: float = 0.0,
                  repeat: bool = False, own_weights_fallback: bool = False) -> dict:
    """Output for x; with grad_out, the gradient of <out, grad_out> w.r.t. x; with
    per_position_grads, one such gradient per output position t (rows[t] = d<out[:, t],
    grad_out[:, t]>/dx), the raw material of the future-gradient check.

    dropout > 0 builds the module with that dropout and leaves it as built (else every dropout
    is set to 0); repeat runs forward a second time on the same x ("again"). When the weights
    cannot be mapped onto the module's projections, own_weights_fallback keeps the module's own
    initial weights (seeded, so the same every run) and says so ("own_weights": True): enough
    for checks that do not compare numbers with the grader's."""
    torch.manual_seed(0)
    attention = adapt.build(session, "CausalSelfAttention", dim, num_heads, dropout=dropout)
    if not dropout:
        adapt.set_dropout(attention, 0.0)
    own_weights = False
    try:
        adapt.load_projections(session, attention, qkv_weight, out_weight)
    except adapt.UnmappedProjections as error:
        if not own_weights_fallback:
            raise
        session.note(f"{str(error)[0].upper()}{str(error)[1:]}. This check does not need the "
                     "grader's weights: it ran your module with its own initial weights")
        own_weights = True
    attention.train(train)
    x = x.clone().requires_grad_(grad_out is not None)
    out = adapt.call_attention(session, attention, x, mask)
    result = {"out": adapt.plain(out), "own_weights": own_weights}
    if repeat:
        result["again"] = adapt.plain(adapt.call_attention(session, attention, x, mask))
    if grad_out is not None and per_position_grads:
        rows = [torch.autograd.grad((out[:, t] * grad_out[:, t]).sum(), x, retain_graph=True,
                                    allow_unused=True)[0] for t in range(x.shape[1])]
        result["rows"] = torch.stack([adapt.plain(r) if r is not None else torch.zeros_like(x)
                                      for r in rows])
    elif grad_out is not None:
        (grad_x,) = torch.autograd.grad(out, x, grad_out, allow_unused=True)
        result["grad_x"] = adapt.plain(grad_x) if grad_x is not None else torch.zeros_like(x)
    return result
