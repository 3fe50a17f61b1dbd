"""CausalSelfAttention with the grader's projection weights, run on the grader's inputs."""

import torch

from .. import known_good
from ..adapt.calls import call_attention
from ..adapt.construction import build, set_dropout
from ..adapt.projections import UnmappedProjections, load_projections
from ..fault import is_internal
from ..gradients import inner_product
from ..protocol import Op
from ..replies import detached_copy
from ..session import op


def _forward_backward(session, attention, x, mask, grad_out, per_position_grads, repeat) -> dict:
    x = x.clone().requires_grad_(grad_out is not None)
    out = call_attention(session, attention, x, mask)
    result = {"out": detached_copy(out)}
    if repeat:
        result["again"] = detached_copy(call_attention(session, attention, x, mask))
    if grad_out is not None and per_position_grads:
        rows = [torch.autograd.grad((out[:, t] * grad_out[:, t]).sum(), x, retain_graph=True,
                                    allow_unused=True)[0] for t in range(x.shape[1])]
        result["rows"] = torch.stack([detached_copy(r) if r is not None else torch.zeros_like(x)
                                      for r in rows])
    elif grad_out is not None:
        (grad_x,) = torch.autograd.grad(inner_product(out, grad_out), x, allow_unused=True)
        result["grad_x"] = detached_copy(grad_x) if grad_x is not None else torch.zeros_like(x)
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
    substitute = known_good.template_rope(head_dim, (batch, num_heads, seq_len, head_dim), own)
    attention.rope = substitute
    try:
        result = run()
        why_not = "" if substitute.used else "its forward does not use self.rope"
    except Exception as error:  # noqa: BLE001 (the student's own RoPE is then graded as it is)
        if is_internal(error):
            raise
        result, why_not = None, (f"with the template's in its place, forward raised "
                                 f"{type(error).__name__}: {error}")
    finally:
        attention.rope = own
    if not why_not:
        return {**result, "rope": "template"}
    return {**run(), "rope": "own", "rope_not_substituted": why_not[:300]}


def with_weights(session, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                 out_weight: torch.Tensor, dropout: float = 0.0,
                 own_weights_fallback: bool = False) -> tuple:
    """(the student's CausalSelfAttention(dim, num_heads, dropout) with the grader's projection
    weights loaded, own_weights). Every dropout is set to 0 unless `dropout` > 0. When the weights
    cannot be mapped onto its projections, own_weights_fallback keeps the module's own initial
    weights (seed the generators first), says so, and own_weights is True; else it raises."""
    attention = build(session, "CausalSelfAttention", dim, num_heads, dropout=dropout)
    if not dropout:
        set_dropout(attention, 0.0)
    try:
        load_projections(session, attention, qkv_weight, out_weight, num_heads)
    except UnmappedProjections as error:
        if not own_weights_fallback:
            raise
        session.note(f"{str(error)[0].upper()}{str(error)[1:]}. This check does not need the "
                     "grader's weights: it ran your module with its own initial weights")
        return attention, True
    return attention, False


@op(Op.ATTENTION)
def run_attention(session, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                  out_weight: torch.Tensor, x: torch.Tensor, mask=None, train: bool = False,
                  grad_out=None, per_position_grads: bool = False, rope: str = "own",
                  dropout: float = 0.0, repeat: bool = False,
                  own_weights_fallback: bool = False) -> dict:
    """The student's CausalSelfAttention(dim, num_heads) with the grader's projection weights
    (qkv_weight (3 dim, dim) = [W_q; W_k; W_v], out_weight (dim, dim)), run on x (batch, seq,
    dim) with `mask` (seq, seq) or None. Returns {"out": (batch, seq, dim), "own_weights": bool,
    and as asked: "again": a second forward's output; "grad_x": d<out, grad_out>/dx (x's
    shape); "rows": (seq, batch, seq, dim), rows[t] = d<out[:, t], grad_out[:, t]>/dx, the raw
    material of the future-gradient check; with rope="template" also "rope": "template" or
    "own" (which RoPE the output used) and, when "own", "rope_not_substituted": why}.

    rope="template": the template's RotaryPositionalEmbedding stands in for the attention's
    `rope` where it can (see _with_template_rope), so the attention is graded apart from the
    student's RoPE. dropout > 0 builds the module with that dropout and leaves it as built (else
    every dropout is set to 0); repeat runs forward a second time on the same x ("again"). When
    the weights cannot be mapped onto the module's projections, own_weights_fallback keeps the
    module's own initial weights (seeded, so the same every run) and says so ("own_weights":
    True): enough for checks that do not compare numbers with the grader's."""
    torch.manual_seed(0)
    attention, own_weights = with_weights(session, dim, num_heads, qkv_weight, out_weight, dropout,
                                          own_weights_fallback)
    attention.train(train)

    def run():
        result = _forward_backward(session, attention, x, mask, grad_out, per_position_grads,
                                   repeat)
        return {**result, "own_weights": own_weights}

    if rope == "template":
        return _with_template_rope(session, attention, num_heads, x, run)
    return run()
