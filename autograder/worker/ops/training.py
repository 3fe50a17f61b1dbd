"""The student's train_epoch, run on the grader's stand-in model and SGD optimizer.

train_epoch trains known_good.TrainingStandIn (a token embedding and a linear head, built from
the parameters the grader sends, drawn per grading), not the student's Transformer, so a bug in
attention or RMSNorm cannot cost training points. What comes back is, above all, the raw
parameters before and after every optimizer step: the grader knows the initial parameters, the
batches, the optimizer and the model's code, so it recomputes on its side what each step must
produce and judges the targets, the clearing of gradients, the clipping, the mode and the
returned loss from that (checks/training_evidence.py). The rest of the reply (which optimizer
stepped, its hyperparameters, backward passes, gradient norms seen at zero_grad()) is what this
process says about itself: the grader uses it to word a likely cause or to pick the update rule
it replays, never to grant a point. Every optimizer step taken during the call is recorded,
whichever optimizer takes it (global step hooks), so a train_epoch that steps an optimizer of its
own is seen too.

The stand-in takes on the student's model API (logits only or more items, a renamed targets
parameter, the target shift done in the model), so a train_epoch written for such a model is
judged by what it does, not by the template's API. The API is read once per grading by its own
request, "model_api", off the student's DecoderOnlyTransformer built with known-good attention
(returning what the student's attention returns), RMSNorm and FeedForward, or, when that cannot
be built, off the student's own model.
"""

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from .. import known_good
from ..adapt import model_api
from ..adapt.calls import call_submission
from ..adapt.construction import build
from ..adapt.train_epoch import call_train_epoch, loss_number
from ..fault import does_not_fit
from ..protocol import Op
from ..replies import detached_copy
from ..session import op

# The hyperparameters of an optimizer's first parameter group that the reply reports.
HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "betas", "eps",
                   "amsgrad", "maximize")


def _snapshot(parameters) -> list:
    return [detached_copy(p) for p in parameters]


def _norm(parameters):
    """Total gradient norm of the parameters, or None when none has a gradient."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.stack([g.double().norm() for g in grads]).norm()) if grads else None


def _hyperparameters(optimizer) -> dict:
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    found = {}
    for name in HYPERPARAMETERS:
        value = group.get(name)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        if isinstance(value, (bool, int, float)):
            found[name] = value
        elif isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            found[name] = [float(v) for v in value]
    return found


class SpyModel(known_good.TrainingStandIn):
    """The stand-in called as the student's model is (`api`: forward(input_ids, targets=None) ->
    (logits, loss) for the template's), recording each optimizer step and the backward passes
    between them."""

    def __init__(self, parameters: dict, train_offset: torch.Tensor, grad_scale: float,
                 api: model_api.ModelAPI):
        super().__init__(parameters["embedding"], parameters["head"], parameters["bias"],
                         train_offset, grad_scale)
        self.api = api
        self.vocab_size = train_offset.shape[0]
        self.steps = []
        self.backwards = 0  # backward passes that reached the parameters, in all
        self._backwards_at_step = 0
        self.bias.register_hook(self._count_backward)

    def _count_backward(self, grad: torch.Tensor) -> torch.Tensor:
        self.backwards += 1
        return grad

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
        logits = self.logits(input_ids)
        loss = None
        if targets is not None:
            scored, wanted = logits, targets.reshape(input_ids.shape)
            if self.api.shifts:
                scored, wanted = logits[:, :-1], wanted[:, 1:]
            ignore = -100 if self.api.ignore_index is None else self.api.ignore_index  # -100: none
            loss = F.cross_entropy(scored.reshape(-1, self.vocab_size), wanted.reshape(-1),
                                   ignore_index=ignore)
        return self.api.output(logits, loss)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.gradients_seen()
        super().zero_grad(set_to_none=set_to_none)

    def gradients_seen(self) -> None:
        """At a zero_grad() or the epoch's end: the gradient norm left since the last step."""
        if self.steps and "grad_norm_after" not in self.steps[-1]:
            self.steps[-1]["grad_norm_after"] = _norm(self.parameters())

    def before_step(self, optimizer: torch.optim.Optimizer, given: torch.optim.Optimizer) -> None:
        mine = {id(p) for p in self.parameters()}
        holds = any(id(q) in mine for group in optimizer.param_groups for q in group["params"])
        self.gradients_seen()
        self.steps.append({"optimizer": type(optimizer).__name__, "given": optimizer is given,
                           "holds_model": holds, "hyper": _hyperparameters(optimizer),
                           "had_grads": any(p.grad is not None and bool(p.grad.ne(0).any())
                                            for p in self.parameters()),
                           "backwards": self.backwards - self._backwards_at_step,
                           "before": _snapshot(self.parameters())})
        self._backwards_at_step = self.backwards

    def after_step(self) -> None:
        if self.steps and "after" not in self.steps[-1]:
            self.steps[-1]["after"] = _snapshot(self.parameters())


class SpyOptimizer(torch.optim.SGD):
    """Plain SGD(lr) whose zero_grad() notes the gradient norm it clears."""

    def __init__(self, model: SpyModel, lr: float):
        super().__init__(model.parameters(), lr=lr)
        self.model = model

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.gradients_seen()
        super().zero_grad(set_to_none=set_to_none)


class _AttentionForAnyBlock(known_good.CausalAttention):
    """known_good.CausalAttention that ignores arguments a student's block may pass beyond
    (dim, num_heads) and (x, mask) (a max_seq_len, a dropout, a KV cache, None while training)
    and returns what the student's attention returns: the output alone, or a tuple of `items`
    with the output first and None for the rest (attention weights, a cache)."""

    items = 0  # 0: the output tensor itself

    def __init__(self, dim: int, num_heads: int, *_extra, **_named):
        super().__init__(dim, num_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, *_extra, **_named):
        out = super().forward(x, mask)
        return (out,) + (None,) * (self.items - 1) if self.items else out


def _attention_items(session) -> int:
    """How many items the student's CausalSelfAttention returns (0: a tensor), read off one small
    module of theirs; 0 when it cannot be built or run, or returns no tuple with a tensor first."""
    notes = list(session.notes)
    try:
        attention = build(session, "CausalSelfAttention", 16, 2)
        attention.eval()
        with torch.no_grad():
            out = call_submission(attention, torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0)))
    except Exception:  # noqa: BLE001 (its failures are graded by the attention checks)
        return 0
    finally:
        session.notes[:] = notes
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return len(out)
    return 0


@op(Op.MODEL_API)
def run_model_api(session, vocab_size: int) -> dict:
    """The student's model API (adapt/model_api.py), read off their DecoderOnlyTransformer and
    TransformerBlock built with the grader's attention (returning what theirs returns) and
    RMSNorm and the template's FeedForward, so that their attention and RMSNorm never run; when
    their model cannot be built or run that way, read off their own model, with a note.
    Returns ModelAPI.as_reply(): {"plain": the Layout of forward(input_ids) (0 logits only, n an
    n-tuple, -1 a dict), "trained": the same with targets, "loss_at": the loss's index in that
    tuple or None, "targets": the targets parameter's name, "shifts": bool, "ignore_index": int
    or None}, which run_train_epoch takes back as `api`."""
    attention = type("CausalSelfAttention", (_AttentionForAnyBlock,),
                     {"items": _attention_items(session)})
    notes = list(session.notes)
    try:
        with known_good.substituted(session, CausalSelfAttention=attention,
                                    RMSNorm=known_good.rms_norm,
                                    FeedForward=known_good.template().FeedForward):
            return model_api.read(session, vocab_size).as_reply()
    except Exception as error:  # noqa: BLE001 (their own parts may fit where the stand-ins do not)
        substituted = f"{type(error).__name__}: {error}"
        session.notes[:] = notes
    api = model_api.read(session, vocab_size).as_reply()
    session.note("the API of your DecoderOnlyTransformer could not be read with the grader's "
                 f"attention and RMSNorm in it ({substituted[:200]}): it was read off your own "
                 "model instead")
    return api


@op(Op.TRAIN_EPOCH)
def run_train_epoch(session, states: torch.Tensor, actions: torch.Tensor, batch_size: int,
                    parameters: dict, train_offset: torch.Tensor, grad_scale: float,
                    learning_rate: float, epoch: int = 0, api: dict = None) -> dict:
    """One call of the student's train_epoch on known_good.TrainingStandIn(**parameters,
    train_offset, grad_scale) taking on `api` (what run_model_api returned; the template's API
    when None), with SGD(learning_rate), over an unshuffled DataLoader of (states, actions) in
    batches of batch_size; the model is passed in eval mode, as it is after evaluate().
    Returns {"steps": [per optimizer step, in order: {"optimizer": class name, "given": it is
    the optimizer passed in, "holds_model", "hyper": its first group's hyperparameters,
    "had_grads": a non-zero .grad was on the model at step(), "backwards": backward passes that
    reached the model since the previous step, "before", "after": the model's
    parameters [embedding, head, bias] around the step, "grad_norm_after": the gradient norm at
    the next zero_grad() or the epoch's end (None: no gradient; absent: neither came)}],
    "backwards": backward passes that reached the model in all, "end": the
    parameters when train_epoch returned, "returned": its return value as a float or None,
    "returned_type": its type's name}."""
    train_epoch = session.require("train_epoch")
    model = SpyModel(parameters, train_offset, grad_scale, model_api.ModelAPI.from_reply(api))
    model.eval()
    optimizer = SpyOptimizer(model, learning_rate)
    loader = DataLoader(TensorDataset(states, actions), batch_size=batch_size, shuffle=False)
    hooks = [register_optimizer_step_pre_hook(
                 lambda stepped, _args, _kwargs: model.before_step(stepped, optimizer)),
             register_optimizer_step_post_hook(lambda _stepped, _args, _kwargs: model.after_step())]
    try:
        value = call_train_epoch(session, train_epoch, model, loader, optimizer,
                                 torch.device("cpu"), epoch)
    finally:
        for hook in hooks:
            hook.remove()
    model.gradients_seen()
    return {"steps": [step for step in model.steps if "after" in step], "backwards": model.backwards,
            "end": _snapshot(model.parameters()), "returned": loss_number(value),
            "returned_type": type(value).__name__}
