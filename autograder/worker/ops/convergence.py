"""Train the student's model with the student's train_epoch, then answer prefix-only predictions.

The grader sends the training sequences and later, one length at a time, the prefixes of its
held-out sequences; it never sends a token before the worker has answered for the position
that predicts it. So whatever the submission does (a leaky mask, a model that memorises its
training batches), the held-out loss computed from these answers is an honest next-token loss.
"""

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from .. import adapt
from ..protocol import Op
from ..session import op


@op(Op.CONVERGENCE_TRAIN)
def convergence_train(session, config: dict, seed: int, states: torch.Tensor,
                      actions: torch.Tensor, batch_size: int, epochs: int,
                      learning_rate: float) -> dict:
    torch.manual_seed(seed)
    model = adapt.build(session, "DecoderOnlyTransformer", **config)
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
        loss = adapt.call_train_epoch(session, train_epoch, model, loader, optimizer,
                                      torch.device("cpu"), epoch)
        epoch_losses.append(loss)
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
def convergence_predict(session, prefixes: torch.Tensor) -> dict:
    """Logits (batch, vocab) at the last position of each (batch, t) prefix."""
    model = session.state.get("trained_model")
    if model is None:
        raise RuntimeError("no trained model: the training request did not complete")
    model.eval()
    with torch.no_grad():
        logits = adapt.call_model(session, model, prefixes)
    return {"logits": adapt.plain(logits[:, -1, :])}
