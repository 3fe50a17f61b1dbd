"""The checks' only way to run the submission: one documented function per worker operation.

Modelled on CS336's tests/adapters.py. Each function sends one request to the worker (through
the Submission handle, which turns the student's exceptions, hangs and crashes into failed
Verdicts) and returns the worker's raw measurements as a small dataclass. The operation names
are defined once, in worker/protocol.Op; a request the worker refuses as malformed raises
sandbox.errors.GraderError, an internal error of the grader, never a student error.

A new check needs only this file, verdict.py and one check file: call run_<component>, compare
with checks/oracle.py, and on a difference `fail(Verdict(...))`.
"""

from dataclasses import dataclass
from typing import Optional

import torch

from ..worker.protocol import Op
from .submission import Submission


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
