"""What an op's reply may hold: plain data, so tensors go back as detached copies."""

import torch

from .fault import does_not_fit


def detached_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous copy of `tensor` as a plain torch.Tensor (no subclass, no autograd
    graph), which the frame encoding accepts. Raises a TypeError (the submission's: fault.py)
    when given anything but a tensor, e.g. None where the student's code should have returned
    one."""
    if not isinstance(tensor, torch.Tensor):
        raise does_not_fit(TypeError(f"expected a tensor, got {type(tensor).__name__}"))
    return tensor.detach().as_subclass(torch.Tensor).clone().contiguous()
