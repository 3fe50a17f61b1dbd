"""Calling the student's code: every call from the kit into a function, class or module of
the submission goes through call_submission, and forward calls get the template's arguments
or the ones the student's signature takes."""

import inspect

import torch

from ..fault import does_not_fit


def call_submission(function, *args, **kwargs):
    """function(*args, **kwargs) for a function, class or module of the submission. A
    TypeError raised by the call itself, before any line of the function ran (its parameters do
    not take these arguments), is the submission not fitting the call (fault.does_not_fit)."""
    try:
        return function(*args, **kwargs)
    except TypeError as error:
        if error.__traceback__.tb_next is None:
            does_not_fit(error)
        raise


def positional_parameters(function):
    """The parameters of `function` that take positional arguments, or None when it has no
    signature to read or takes *args."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    names = []
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter)
    return names


def first_tensor(output, session, what: str) -> torch.Tensor:
    """The tensor a forward returned, unwrapping (tensor, extras...) tuples."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        session.note(f"{what} returned a {type(output).__name__} of {len(output)} items: "
                     "graded its first item")
        return output[0]
    raise does_not_fit(TypeError(f"{what} returned {type(output).__name__}, expected a tensor"))


def call_attention(session, attention, x: torch.Tensor, mask):
    """attention(x, mask) as the template defines it, or attention(x) if forward takes no mask."""
    parameters = positional_parameters(attention.forward)
    if parameters is not None and len(parameters) < 2:
        if mask is not None:
            session.note("CausalSelfAttention.forward takes no `mask` argument: called forward(x), "
                         "relying on its own causal mask")
        return first_tensor(call_submission(attention, x), session, "CausalSelfAttention.forward")
    if mask is None and parameters is not None and parameters[1].default is inspect.Parameter.empty:
        session.note("CausalSelfAttention.forward requires `mask`: passed the causal mask "
                     "torch.tril(torch.ones(T, T))")
        mask = torch.tril(torch.ones(x.shape[1], x.shape[1]))
    output = call_submission(attention, x, mask) if mask is not None else call_submission(attention, x)
    return first_tensor(output, session, "CausalSelfAttention.forward")


def call_model(session, model, input_ids: torch.Tensor):
    """Logits (batch, seq, vocab) from model(input_ids), whatever container they come in."""
    output = call_submission(model, input_ids)
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        session.note("DecoderOnlyTransformer.forward returned a dict: graded output['logits']")
        return output["logits"]
    if isinstance(output, torch.Tensor):
        session.note("DecoderOnlyTransformer.forward returned logits only (the template returns "
                     "(logits, loss)): graded the logits")
        return output
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], torch.Tensor):
        return output[0]  # the template's (logits, loss)
    return first_tensor(output, session, "DecoderOnlyTransformer.forward")
