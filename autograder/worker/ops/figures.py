"""Raw data for the grader's figures of the trained model (informational, never graded).

The trusted side draws them (autograder/figures.py); this op only returns numbers.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

from ..adapt.calls import call_model, call_submission
from ..adapt.projections import find_projections
from ..fault import does_not_fit
from ..protocol import Op
from ..replies import detached_copy
from ..session import BadRequest, op


@op(Op.TRAINED_ATTENTION)
def run_trained_attention(session, tokens: torch.Tensor) -> dict:
    """The trained model's attention weights on `tokens` (1, seq). Returns {"weights": (layers,
    heads, seq, seq), "source": "softmax" or "recomputed"}. Needs run_convergence_train first.

    Taken from the student's own softmax when each attention layer computed exactly one of shape
    (1, heads, seq, seq), so a leaky or misplaced mask shows; otherwise (SDPA, a fused kernel)
    recomputed from each layer's projections, head split and rope with a causal mask.
    """
    model = session.state.get("trained_model")
    if model is None:
        raise BadRequest("no trained model: the training request did not complete")
    layers = [m for m in model.modules() if isinstance(m, session.require("CausalSelfAttention"))]
    if not layers:
        raise does_not_fit(RuntimeError("the trained model has no CausalSelfAttention layers"))
    inputs, softmaxes = [], []
    hooks = [layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0] if args else None))
             for layer in layers]
    try:
        with torch.no_grad(), _recording_softmax(softmaxes):
            call_model(session, model, tokens)
    finally:
        for hook in hooks:
            hook.remove()
    seq = tokens.shape[1]
    maps = [w for w in softmaxes if w.dim() == 4 and w.shape[0] == 1 and w.shape[-2:] == (seq, seq)]
    if len(maps) == len(layers) and len({m.shape for m in maps}) == 1:
        return {"weights": detached_copy(torch.cat(maps).float()), "source": "softmax"}
    if len(inputs) != len(layers) or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise does_not_fit(RuntimeError("could not capture the input of every attention layer"))
    with torch.no_grad():
        maps = [_recompute(layer, x) for layer, x in zip(layers, inputs)]
    return {"weights": detached_copy(torch.cat(maps).float()), "source": "recomputed"}


def _recompute(layer, x: torch.Tensor) -> torch.Tensor:
    batch, seq, dim = x.shape
    heads = layer.num_heads
    q, k, _ = find_projections(layer, dim).qkv(x)
    q = q.view(batch, seq, heads, dim // heads).transpose(1, 2)
    k = k.view(batch, seq, heads, dim // heads).transpose(1, 2)
    q, k = call_submission(layer.rope, q, k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(dim // heads)
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


@contextlib.contextmanager
def _recording_softmax(record: list):
    """Record every softmax result while inside (torch.softmax, F.softmax, Tensor.softmax)."""
    originals = [(torch, "softmax", torch.softmax), (F, "softmax", F.softmax),
                 (torch.Tensor, "softmax", torch.Tensor.softmax)]

    def recording(original):
        def softmax(*args, **kwargs):
            result = original(*args, **kwargs)
            if isinstance(result, torch.Tensor) and not any(result is r for r in record):
                record.append(result)  # F.softmax calls Tensor.softmax: keep the result once
            return result
        return softmax

    for owner, name, original in originals:
        setattr(owner, name, recording(original))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
