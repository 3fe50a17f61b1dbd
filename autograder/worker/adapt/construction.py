"""Building the student's classes as the template builds them, and reading what the checks
need off the built objects (RMSNorm's gain) or setting it (dropout)."""

import inspect

import torch

from ..fault import does_not_fit
from .calls import call_submission


def _call_text(name: str, args, kwargs) -> str:
    return f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


def build(session, name: str, *args, **kwargs):
    """Construct the student's class `name` as the template's constructor is called. Keywords
    its constructor does not take are dropped (with a note); extra parameters with defaults are
    left to their defaults; a parameter it requires that the template's does not have cannot be
    guessed, and raises a TypeError that shows both signatures."""
    cls = session.require(name)
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return call_submission(cls, *args, **kwargs)
    parameters = signature.parameters
    if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        unexpected = [key for key in kwargs if key not in parameters]
        if unexpected:
            session.note(f"{name}() does not accept {', '.join(unexpected)}: built it without")
            kwargs = {key: value for key, value in kwargs.items() if key in parameters}
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise does_not_fit(TypeError(
            f"{name}{signature} cannot be built the way the template's {name} is, as "
            f"{_call_text(name, args, kwargs)} ({error}): give the parameters the template does "
            "not have default values")) from None
    return call_submission(cls, *args, **kwargs)


def set_dropout(module: torch.nn.Module, p: float) -> None:
    """Set every dropout probability in a module tree (nn.Dropout and plain float attributes)."""
    for child in module.modules():
        if isinstance(child, torch.nn.modules.dropout._DropoutNd):
            child.p = p
        elif isinstance(getattr(child, "dropout", None), float):
            child.dropout = p


def find_scale(session, norm, dim: int) -> torch.Tensor:
    """RMSNorm's gain: the attribute `scale`, or else its only (dim,)-shaped parameter."""
    scale = getattr(norm, "scale", None)
    if isinstance(scale, torch.Tensor):
        return scale
    candidates = [(n, p) for n, p in norm.named_parameters() if tuple(p.shape) == (dim,)]
    if len(candidates) == 1:
        session.note(f"RMSNorm has no `scale`: used its parameter `{candidates[0][0]}` as the gain")
        return candidates[0][1]
    raise does_not_fit(AttributeError("RMSNorm has no `scale` parameter of shape (dim,)"))
