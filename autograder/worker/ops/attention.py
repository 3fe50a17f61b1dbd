"""CausalSelfAttention with the grader's projection weights, run on the grader's inputs."""

import torch

from .. import adapt, known_good
from ..gradients import inner_product
from ..protocol import Op
from ..session import op


def _run(session, attention, x, mask, grad_out, per_position_grads, repeat) -> dict:
    x = x.clone().requires_grad_(grad_out is not None)
    out = adapt.call_attention(session, attention, x, mask)
    result = {"out": adapt.plain(out)}
    if repeat:
        result["again"] = adapt.plain(adapt.call_attention(session, attention, x, mask))
    if grad_out is not None and per_position_grads:
        rows = [torch.autograd.grad((out[:, t] * grad_out[:, t]).sum(), x, retain_graph=True,
                                    allow_unused=True)[0] for t in range(x.shape[1])]
        result["rows"] = torch.stack([adapt.plain(r) if r is not None else torch.zeros_like(x)
                                      for r in rows])
    elif grad_out is not None:
        (grad_x,) = torch.autograd.grad(inner_product(out, grad_out), x, allow_unused=True)
        result["grad_x"] = adapt.plain(grad_x) if grad_x is not None else torch.zeros_like(x)
    return result


def _with_template_rope(session, attention, num_heads, x, run) -> dict:
    """run() with the template's RotaryPositionalEmbedding as attention.rope, when the attention
    has such a module and calls it as the template does; else run() with the student's own, and
    why in result["rope_not_substituted"]. result["rope"] says which RoPE the output used."""
    own = getattr(attention, "rope", None)
    if not isinstance(own, torch.nn.Module):
        return {**run(), "rope": "own", "rope_not_substituted": "it has no `rope` module"}
    batch, seq_len, dim = x.shape
    head_dim = dim // num_heads
    substitute = known_good.template_rope(head_dim, (batch, num_heads, seq_len, head_dim))
    attention.rope = substitute
    try:
        result = run()
        why_not = "" if substitute.used else "its forward does not use self.rope"
    except Exception as error:  # noqa: BLE001 (the student's own RoPE is then graded as it is)
        result, why_not = None, (f"with the template's in its place, forward raised "
                                 f"{type(error).__name__}: {error}")
    finally:
        attention.rope = own
    if not why_not:
        return {**result, "rope": "template"}
    return {**run(), "rope": "own", "rope_not_substituted": why_not[:300]}


@op(Op.ATTENTION)
def run_attention(session, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                  out_weight: torch.Tensor, x: torch.Tensor, mask=None, train: bool = False,
                  grad_out=None, per_position_grads: bool = False, rope: str = "own",
                  dropout: float = 0.0, repeat: bool = False,
                  own_weights_fallback: bool = False) -> dict:
    """Output for x; with grad_out, the gradient of <out, grad_out> w.r.t. x; with
    per_position_grads, one such gradient per output position t (rows[t] = d<out[:, t],
    grad_out[:, t]>/dx), the raw material of the future-gradient check.

    rope="template": the template's RotaryPositionalEmbedding stands in for the attention's
    `rope` where it can (see _with_template_rope), so the attention is graded apart from the
    student's RoPE. dropout > 0 builds the module with that dropout and leaves it as built (else
    every dropout is set to 0); repeat runs forward a second time on the same x ("again"). When
    the weights cannot be mapped onto the module's projections, own_weights_fallback keeps the
    module's own initial weights (seeded, so the same every run) and says so ("own_weights":
    True): enough for checks that do not compare numbers with the grader's."""
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

    def run():
        return {**_run(session, attention, x, mask, grad_out, per_position_grads, repeat),
                "own_weights": own_weights}

    if rope == "template":
        return _with_template_rope(session, attention, num_heads, x, run)
    return run()
