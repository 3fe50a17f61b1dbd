"""The student's train_epoch, run on a spy model and a spy optimizer of the grader's own.

train_epoch trains a tiny model that belongs to the grader (embedding + linear head, the
template's forward API), not the student's Transformer, so a bug in attention or RMSNorm cannot
cost training points. The spies record what train_epoch does: every forward (inputs, targets,
training flag, logits), every backward (d loss / d logits, the fresh parameter gradients, and
whether old gradients were still on the parameters), the gradients at every optimizer.step(),
and the gradient norm at every zero_grad(). The grader reads the targets and the loss off these
raw observations; nothing here judges. Every optimizer step taken during the call is recorded,
whichever optimizer takes it (a global step hook), so a train_epoch that steps an optimizer of
its own is still measured, and the grader can tell it was not the one passed in.

The spy takes on the student's model API (logits only or more items, a renamed targets
parameter, the target shift done in the model), so a train_epoch written for such a model is
judged by what it does, not by the template's API. The API is read once per grading by its own
request, "model_api", off the student's DecoderOnlyTransformer built with known-good attention,
RMSNorm and FeedForward: the student's attention never runs for the training checks.
"""

import functools

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from .. import known_good
from ..adapt import model_api
from ..adapt.train_epoch import call_train_epoch, loss_number
from ..fault import does_not_fit
from ..protocol import Op
from ..replies import detached_copy
from ..session import op


def _grads(parameters) -> list:
    return [detached_copy(p.grad) if p.grad is not None else None for p in parameters]


def _norm(parameters):
    """Total gradient norm of the parameters, or None when none has a gradient."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.stack([g.norm() for g in grads]).norm()) if grads else None


class SpyModel(torch.nn.Module):
    """forward(input_ids, targets=None) -> (logits, loss) as the template's model (or as `api`
    says the student's model is called), recording each call, each backward through its logits
    and each optimizer step (record_step) into `events`."""

    def __init__(self, vocab_size: int, dim: int, grad_scale: float, generator: torch.Generator,
                 api: model_api.ModelAPI):
        super().__init__()
        self.api = api
        self.vocab_size = vocab_size
        self.grad_scale = grad_scale
        # The parameters hold the weights divided by grad_scale and forward multiplies them back:
        # the logits are ordinary, the gradients grad_scale times larger, so every batch's
        # unclipped gradient norm is far above the clipping norm.
        self.embedding = torch.nn.Parameter(
            torch.randn(vocab_size, dim, generator=generator) / grad_scale)
        self.head = torch.nn.Parameter(
            torch.randn(vocab_size, dim, generator=generator) / (dim ** 0.5 * grad_scale))
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        self.events = []
        self._forwards = 0
        for index, parameter in enumerate(self.parameters()):
            parameter.register_hook(functools.partial(self._fresh_gradient, index))

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor = None, **named):
        if targets is None:
            targets = named.get(self.api.targets)
        if not isinstance(input_ids, torch.Tensor) or input_ids.is_floating_point():
            what = (f"a float tensor of shape {tuple(input_ids.shape)}"
                    if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__)
            raise does_not_fit(TypeError(f"the model was given {what} as input_ids: it reads token "
                                         "ids (the batch's actions), not the states"))
        if input_ids.dim() != 2:
            raise does_not_fit(ValueError(f"the model expects input_ids of shape (batch, seq), got "
                                          f"{tuple(input_ids.shape)}"))
        if targets is not None and targets.numel() != input_ids.numel():
            raise does_not_fit(ValueError(f"targets of shape {tuple(targets.shape)} do not match "
                                          f"input_ids of shape {tuple(input_ids.shape)}"))
        scale = self.grad_scale
        logits = F.embedding(input_ids, self.embedding * scale) @ (self.head * scale).T + self.bias
        loss = None
        if targets is not None:
            scored, wanted = logits, targets.reshape(input_ids.shape)
            if self.api.shifts:
                scored, wanted = logits[:, :-1], wanted[:, 1:]
            ignore = -100 if self.api.ignore_index is None else self.api.ignore_index  # -100: none
            loss = F.cross_entropy(scored.reshape(-1, self.vocab_size), wanted.reshape(-1),
                                   ignore_index=ignore)
        self.events.append({
            "kind": "forward", "training": self.training, "input_ids": detached_copy(input_ids),
            "targets": detached_copy(targets) if targets is not None else None,
            "logits": detached_copy(logits).float(),
        })
        if logits.requires_grad:
            logits.register_hook(functools.partial(self._backward, self._forwards))
        self._forwards += 1
        return self.api.output(logits, loss)

    def _backward(self, forward: int, grad: torch.Tensor) -> None:
        # Runs before any parameter gradient of this backward is accumulated, so a non-zero
        # .grad here is left over from an earlier backward.
        stale = any(p.grad is not None and bool(p.grad.ne(0).any()) for p in self.parameters())
        self.events.append({"kind": "backward", "forward": forward,
                            "grad_logits": detached_copy(grad).float(), "stale": stale,
                            "fresh": [None] * len(list(self.parameters()))})

    def _fresh_gradient(self, index: int, grad: torch.Tensor) -> None:
        backward = next((e for e in reversed(self.events) if e["kind"] == "backward"), None)
        if backward is not None:
            fresh = backward["fresh"]
            fresh[index] = detached_copy(grad) if fresh[index] is None else fresh[index] + grad.detach()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.events.append({"kind": "zero_grad", "grad_norm": _norm(self.parameters())})
        super().zero_grad(set_to_none=set_to_none)

    def record_step(self, optimizer: torch.optim.Optimizer, given: torch.optim.Optimizer) -> None:
        """Before any optimizer's step(): the gradients it finds on this model's parameters,
        whether it is the optimizer passed to train_epoch, and whether it holds this model's
        parameters at all (one created before the model, e.g. kept at module level, does not)."""
        mine = {id(p) for p in self.parameters()}
        holds = any(id(q) in mine for group in optimizer.param_groups for q in group["params"])
        self.events.append({"kind": "step", "grads": _grads(self.parameters()),
                            "given": optimizer is given, "optimizer": type(optimizer).__name__,
                            "holds_model": holds})


class SpyOptimizer(torch.optim.SGD):
    """Plain SGD that records the gradient norm each zero_grad() clears (its steps are recorded
    by the step hook, as every optimizer's are)."""

    def __init__(self, model: SpyModel, lr: float):
        super().__init__(model.parameters(), lr=lr)
        self.model = model

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.events.append({"kind": "zero_grad", "grad_norm": _norm(self.model.parameters())})
        super().zero_grad(set_to_none=set_to_none)


class _AttentionForAnyBlock(known_good.CausalAttention):
    """known_good.CausalAttention that ignores arguments a student's block may pass beyond
    (dim, num_heads) and (x, mask): a max_seq_len, a dropout, a KV cache (None while training)."""

    def __init__(self, dim: int, num_heads: int, *_extra, **_named):
        super().__init__(dim, num_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, *_extra, **_named) -> torch.Tensor:
        return super().forward(x, mask)


@op(Op.MODEL_API)
def run_model_api(session, vocab_size: int) -> dict:
    """The student's model API (adapt/model_api.py), read off their DecoderOnlyTransformer and
    TransformerBlock built with the grader's attention and RMSNorm and the template's
    FeedForward, so that their attention and RMSNorm never run. Returns ModelAPI.as_reply():
    {"plain": the Layout of forward(input_ids) (0 logits only, n an n-tuple, -1 a dict),
    "trained": the same with targets, "loss_at": the loss's index in that tuple or None,
    "targets": the targets parameter's name, "shifts": bool, "ignore_index": int or None},
    which run_train_epoch takes back as `api`."""
    with known_good.substituted(session, CausalSelfAttention=_AttentionForAnyBlock,
                                RMSNorm=known_good.rms_norm,
                                FeedForward=known_good.template().FeedForward):
        return model_api.read(session, vocab_size).as_reply()


@op(Op.TRAIN_EPOCH)
def run_train_epoch(session, states: torch.Tensor, actions: torch.Tensor, batch_size: int,
                    vocab_size: int, dim: int, grad_scale: float, learning_rate: float,
                    seed: int, epoch: int = 0, api: dict = None) -> dict:
    """One call of the student's train_epoch on the spies over an unshuffled DataLoader of
    (states, actions); the model is passed in eval mode, as it is after evaluate(). `api`: the
    model API the spy takes on (what run_model_api returned), the template's when None.
    Returns {"events": [in order: {"kind": "forward", "training", "input_ids", "targets",
    "logits" (batch, seq, vocab)}, {"kind": "backward", "forward": its index, "grad_logits",
    "stale", "fresh": [per parameter]}, {"kind": "step", "grads", "given", "optimizer",
    "holds_model"}, {"kind": "zero_grad", "grad_norm"}, ..., {"kind": "end", "grad_norm"}],
    "returned": train_epoch's return value as a float or None, "returned_type": its type's
    name}."""
    train_epoch = session.require("train_epoch")
    model = SpyModel(vocab_size, dim, grad_scale, torch.Generator().manual_seed(seed),
                     model_api.ModelAPI.from_reply(api))
    model.eval()
    optimizer = SpyOptimizer(model, learning_rate)
    loader = DataLoader(TensorDataset(states, actions), batch_size=batch_size, shuffle=False)
    hook = register_optimizer_step_pre_hook(
        lambda stepped, _args, _kwargs: model.record_step(stepped, optimizer))
    try:
        value = call_train_epoch(session, train_epoch, model, loader, optimizer,
                                 torch.device("cpu"), epoch)
    finally:
        hook.remove()
    model.events.append({"kind": "end", "grad_norm": _norm(model.parameters())})
    return {"events": model.events, "returned": loss_number(value),
            "returned_type": type(value).__name__}
