# Hostile (issue 18, records kept in the student's process): train without clipping, then
# rewrite whatever the grader's model recorded so that every step looks clipped to norm 1:
# gradients seen at a step rescaled to norm 1, parameters around each step rewritten as steps of
# a clipped gradient (lr * unit update), chained, and the model left at the forged end; every
# recorded forward call marked as made in train mode.
import torch as _torch

_honest_train_epoch = train_epoch


def _rescaled(tensors, norm):
    present = [t for t in tensors if isinstance(t, _torch.Tensor)]
    total = float(_torch.stack([t.double().norm() for t in present]).norm()) if present else 0.0
    return [t * (norm / total) if isinstance(t, _torch.Tensor) and total else t for t in tensors]


def _forge(records, lr):
    forged, theta = 0, None
    for record in records:
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("grads"), list):  # gradients seen at a step
            record["grads"] = _rescaled(record["grads"], 1.0)
            forged += 1
        if isinstance(record.get("before"), list) and isinstance(record.get("after"), list):
            before = record["before"] if theta is None else theta
            moved = _rescaled([b - a for b, a in zip(record["before"], record["after"])], lr)
            record["before"] = [t.clone() for t in before]
            record["after"] = theta = [b - m for b, m in zip(before, moved)]
            forged += 1
        if "training" in record:
            record["training"] = True
    return forged, theta


def train_epoch(model, dataloader, optimizer, device, epoch):
    loss = _honest_train_epoch(model, dataloader, optimizer, device, epoch)
    lr = optimizer.param_groups[0]["lr"]
    forged = 0
    for value in list(vars(model).values()):
        if isinstance(value, list):
            count, theta = _forge(value, lr)
            forged += count
            if theta is not None:
                with _torch.no_grad():
                    for parameter, value in zip(model.parameters(), theta):
                        parameter.copy_(value)
    print(f"FORGED {forged} records")
    return loss
