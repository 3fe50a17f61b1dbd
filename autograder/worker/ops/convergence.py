"""Train the student's model with the student's train_epoch, then answer prefix-only predictions.

The grader sends the training sequences and later, one length at a time, the prefixes of its
held-out sequences; it never sends a token before the worker has answered for the position
that predicts it. So whatever the submission does (a leaky mask, a model that memorises its
training batches), the held-out loss computed from these answers is an honest next-token loss.
"""

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from ..adapt.calls import call_model
from ..adapt.construction import build
from ..adapt.train_epoch import call_train_epoch, returned_loss
from ..protocol import Op
from ..replies import detached_copy
from ..session import BadRequest, op


@op(Op.CONVERGENCE_TRAIN)
def run_convergence_train(session, config: dict, seed: int, states: torch.Tensor,
                          actions: torch.Tensor, batch_size: int, epochs: int,
                          learning_rate: float) -> dict:
    """Train the student's DecoderOnlyTransformer(**config), built with `seed`, with the
    student's train_epoch for `epochs` epochs on (states, actions) (batch, seq) in shuffled
    batches of batch_size, AdamW at learning_rate; the trained model stays in the worker for
    run_convergence_predict and run_trained_attention. Returns {"epoch_losses": [float or None:
    what train_epoch returned, per epoch], "epoch_cpu_seconds": [cumulative CPU seconds after
    each epoch], "step_losses": [float: the loss of every forward that returned one]}."""
    torch.manual_seed(seed)
    model = build(session, "DecoderOnlyTransformer", **config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    loader = DataLoader(TensorDataset(states, actions), batch_size=batch_size, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(seed))
    train_epoch = session.require("train_epoch")
    epoch_losses, epoch_seconds, step_losses = [], [], []
    # For the loss-curve figure only: the loss of every forward call that returned one.
    recorder = None
    if isinstance(model, torch.nn.Module):
        recorder = model.register_forward_hook(lambda module, inputs, output: _record_loss(output, step_losses))
    start = time.process_time()
    for epoch in range(epochs):
        returned = call_train_epoch(session, train_epoch, model, loader, optimizer,
                                    torch.device("cpu"), epoch)
        epoch_losses.append(returned_loss(session, returned))
        epoch_seconds.append(time.process_time() - start)
    if recorder is not None:
        recorder.remove()
    model.eval()
    session.state["trained_model"] = model
    return {"epoch_losses": epoch_losses, "epoch_cpu_seconds": epoch_seconds,
            "step_losses": step_losses}


def _record_loss(output, losses: list, limit: int = 10_000) -> None:
    """Append the scalar loss of a (logits, loss) output; anything else records nothing."""
    if isinstance(output, (tuple, list)) and len(output) == 2 and len(losses) < limit:
        loss = output[1]
        if isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point():
            losses.append(float(loss.detach()))


@op(Op.CONVERGENCE_PREDICT)
def run_convergence_predict(session, prefixes: torch.Tensor) -> dict:
    """The trained model's logits at the last position of each prefix (batch, t) of token ids.
    Returns {"logits": (batch, vocab)}. Needs run_convergence_train first (else BadRequest)."""
    model = session.state.get("trained_model")
    if model is None:
        raise BadRequest("no trained model: the training request did not complete")
    model.eval()
    with torch.no_grad():
        logits = call_model(session, model, prefixes)
    return {"logits": detached_copy(logits[:, -1, :])}
