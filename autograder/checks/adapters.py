"""The checks' only way to run the submission: one documented function per worker operation.

Modelled on CS336's tests/adapters.py. Each function sends one request to the worker (through
the Submission handle, which turns the student's exceptions, hangs and crashes into failed
Verdicts) and returns the worker's raw measurements as a small dataclass. The operation names
are defined once, in worker/protocol.Op; a request the worker refuses as malformed raises
sandbox.errors.GraderError, an internal error of the grader, never a student error.

A new check needs only this file, verdict.py and one check file: call run_<component>, compare
with checks/oracle.py, and on a difference `fail(Verdict(...))`.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from ..worker.protocol import Op
from .submission import Submission, describe


@dataclass(frozen=True)
class RMSNormRun:
    """out: the output, the input's shape. grad_x, grad_scale: gradients of <out, grad_out> with
    respect to the input and the scale (None when none reached it). scale_is_parameter: the
    scale is an nn.Parameter registered on the module; scale_shape: its shape."""

    out: torch.Tensor
    grad_x: Optional[torch.Tensor]
    grad_scale: Optional[torch.Tensor]
    scale_is_parameter: bool
    scale_shape: list


def run_rmsnorm(submission: Submission, dim: int, eps: float, scale: torch.Tensor, x: torch.Tensor,
                grad_out: torch.Tensor) -> RMSNormRun:
    """The student's RMSNorm(dim, eps) with its scale set to `scale` (dim,), run on x (..., dim)
    and backward from <out, grad_out>."""
    return RMSNormRun(**submission.call(Op.RMSNORM, "RMSNorm", dim=dim, eps=eps, scale=scale, x=x,
                                        grad_out=grad_out))


@dataclass(frozen=True)
class RopeRun:
    """q, k: the rotated queries and keys, the shapes of the inputs."""

    q: torch.Tensor
    k: torch.Tensor


def run_rope(submission: Submission, dim: int, max_seq_len: int, q: torch.Tensor,
             k: torch.Tensor) -> RopeRun:
    """The student's RotaryPositionalEmbedding(dim, max_seq_len) applied to q and k, both
    (batch, heads, seq, dim)."""
    return RopeRun(**submission.call(Op.ROPE, "RotaryPositionalEmbedding", dim=dim,
                                     max_seq_len=max_seq_len, q=q, k=k))


ATTENTION = "CausalSelfAttention"  # what an attention request runs, in messages


@dataclass(frozen=True)
class AttentionRun:
    """out: the output (batch, seq, dim). own_weights: the module ran with its own initial weights
    (the grader's could not be mapped onto it; only with own_weights_fallback). again: the output
    of a second call on the same x (with repeat). grad_x: the gradient of <out, grad_out> w.r.t. x
    (with grad_out); rows: one such gradient per output position, rows[t] = d<out[:, t],
    grad_out[:, t]>/dx (with per_position_grads). rope: which RoPE the output used, "template"
    (the template's RotaryPositionalEmbedding stood in for self.rope) or "own";
    rope_not_substituted: why the template's could not stand in ('' when it did or was not
    asked to)."""

    out: torch.Tensor
    own_weights: bool
    again: Optional[torch.Tensor] = None
    grad_x: Optional[torch.Tensor] = None
    rows: Optional[torch.Tensor] = None
    rope: str = "own"
    rope_not_substituted: str = ""


def run_attention(submission: Submission, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                  out_weight: torch.Tensor, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  train: bool = False, grad_out: Optional[torch.Tensor] = None,
                  per_position_grads: bool = False, rope: str = "own", dropout: float = 0.0,
                  repeat: bool = False, own_weights_fallback: bool = False) -> AttentionRun:
    """The student's CausalSelfAttention(dim, num_heads) with the projection weights qkv_weight
    (3 * dim, dim) = [W_q; W_k; W_v] and out_weight (dim, dim), run on x (batch, seq, dim) with
    `mask` (seq, seq), 1 where attention is allowed (None: forward's own default), in train mode
    when `train`. Every dropout is 0 unless `dropout` > 0 (the module is then built with it and left
    so). rope="template": the template's RotaryPositionalEmbedding stands in for self.rope where
    it can. own_weights_fallback: keep the module's own weights when the grader's cannot be
    mapped. The other arguments ask for the AttentionRun fields they name."""
    return AttentionRun(**submission.call(
        Op.ATTENTION, ATTENTION, dim=dim, num_heads=num_heads, qkv_weight=qkv_weight,
        out_weight=out_weight, x=x, mask=mask, train=train, grad_out=grad_out,
        per_position_grads=per_position_grads, rope=rope, dropout=dropout, repeat=repeat,
        own_weights_fallback=own_weights_fallback))


def attempt_attention(submission: Submission, **request) -> Tuple[Optional[AttentionRun], str]:
    """run_attention with the same keyword arguments, except that when the student's code raises
    it returns (None, the error described) instead of failing the check: (run, '') otherwise."""
    result, error = submission.attempt(Op.ATTENTION, ATTENTION, **request)
    return (None if error else AttentionRun(**result)), error


@dataclass(frozen=True)
class LoadRun:
    """error: why importing backbone.py raised, described ('' when it imported). seconds: how
    long the import took; names: {template name: "missing", or its kind and signature, e.g.
    "class RMSNorm(dim: int, eps: float = 1e-06)"} (empty when it raised)."""

    error: str = ""
    seconds: float = 0.0
    names: dict = field(default_factory=dict)


def run_load(submission: Submission) -> LoadRun:
    """backbone.py imported in the worker (once per grading: later calls give the same answer)."""
    reply = submission.load()
    if not reply.get("ok"):
        return LoadRun(error=describe(reply["error"]))
    return LoadRun(**reply["result"])
