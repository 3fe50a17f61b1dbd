"""Calling the student's train_epoch as the template calls it, and reading the loss it returns."""

import inspect

import torch

from ..fault import does_not_fit
from .calls import call_submission, positional_parameters

TRAIN_EPOCH_ARGS = ("model", "dataloader", "optimizer", "device", "epoch")


def call_train_epoch(session, train_epoch, model, loader, optimizer, device, epoch):
    """train_epoch(model, dataloader, optimizer, device, epoch) as the template defines it (extra
    parameters with defaults keep them); a version without the trailing `epoch` (or `device`)
    gets the arguments it takes. Returns whatever train_epoch returned."""
    args = (model, loader, optimizer, device, epoch)
    parameters = positional_parameters(train_epoch)
    if parameters is not None and len(parameters) < len(args):
        if len(parameters) < 3:
            raise does_not_fit(TypeError(f"train_epoch takes {len(parameters)} positional arguments; "
                                         f"the template's are ({', '.join(TRAIN_EPOCH_ARGS)})"))
        session.note(f"train_epoch takes only ({', '.join(p.name for p in parameters)}): called "
                     f"it without {', '.join(TRAIN_EPOCH_ARGS[len(parameters):])}")
        args = args[:len(parameters)]
    try:
        signature = inspect.signature(train_epoch)
    except (TypeError, ValueError):  # no signature to read: call it and see
        return call_submission(train_epoch, *args)
    try:
        signature.bind(*args)
    except TypeError as error:
        raise does_not_fit(TypeError(
            f"train_epoch{signature} cannot be called the way the template's "
            f"train_epoch({', '.join(TRAIN_EPOCH_ARGS)}) is ({error}): give the parameters the "
            "template does not have default values")) from None
    return call_submission(train_epoch, *args)


def loss_number(value):
    """train_epoch's return value as a Python float: a float or int as is, a one-element float
    tensor or numpy scalar converted; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.detach().reshape(()).item())
    if type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1:
        return float(value)
    return None


def returned_loss(session, value):
    """The loss train_epoch returned (`value`), as a float, or None (with a note) if it is not a
    number."""
    number = loss_number(value)
    if number is None:
        session.note(f"train_epoch returned {type(value).__name__}, not a number: it should "
                     "return the mean batch loss as a float")
    elif isinstance(value, torch.Tensor):
        session.note(f"train_epoch returned a tensor of shape {tuple(value.shape)}: used its "
                     "value; the template returns a Python float")
    return number
