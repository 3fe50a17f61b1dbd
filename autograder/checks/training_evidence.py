"""The training checks' evidence: train_epoch run once per grading on the grader's stand-in model,
and every optimizer step it took recomputed on the grader's side (test_training.py reads it).

The grader draws, per grading and from its own randomness, the stand-in's initial parameters,
its train-mode offset and the batches (draw()). The worker runs the student's train_epoch on
worker.known_good.TrainingStandIn built from them, with SGD(LEARNING_RATE), and returns the raw
parameters before and after every optimizer step. The grader imports the same stand-in code and,
step by step from the parameters it knows, recomputes what the step must have been: the
gradient of a cross-entropy on one batch (which batch, which targets, train or eval mode), plus
or minus gradients left from the previous step, clipped or not, through the optimizer's update.
The first hypothesis that reproduces the parameters the step produced (within
rubric.TRAINING.update_rtol) names what train_epoch did at that step (StepFinding); the next
step is recomputed from there. A step no hypothesis reproduces is unexplained, and no check
passes on it. What the worker says about itself (which optimizer, its hyperparameters, backward
passes, gradient norms seen) only words a likely cause and picks the update rule the grader
replays: a false claim makes the recomputation fail, or costs points, with one bounded
exception: a learning rate below the one set, claimed for the SGD passed in (as a scheduler
sets it), is believed, which could hide a clip to a norm below 1.0 but never an unclipped step
(norm 12-31) nor a clip to a larger norm.
"""

import math
import secrets
import weakref
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .. import rubric
from ..verdict import Failed, Verdict, fail
from ..worker.known_good import TrainingStandIn
from .adapters import ModelAPI, TrainEpochRun, run_model_api, run_train_epoch

SPEC = rubric.TRAINING
VOCAB, SEQ, BATCH, BATCHES, STATE_DIM, DIM = 16, 12, 8, 4, 10, 8
# grad_scale 40: a batch's unclipped gradient norm is 12-31, far above the clipping norm.
GRAD_SCALE, LEARNING_RATE = 40.0, 0.01
ORDER = ("A working order for every batch: optimizer.zero_grad(), forward, loss, "
         "loss.backward(), clip_grad_norm_(model.parameters(), 1.0), optimizer.step().")


# -- what the grader draws per grading ---------------------------------------------------------

@dataclass(frozen=True)
class Draw:
    """The stand-in's initial parameters {embedding, head, bias}, its train-mode offset (vocab,)
    and the data: actions (BATCH * BATCHES, SEQ) token ids, states (..., STATE_DIM)."""

    parameters: dict
    train_offset: torch.Tensor
    actions: torch.Tensor
    states: torch.Tensor

    def initial(self) -> list:
        """The initial parameters in the order of TrainingStandIn.parameters()."""
        return [self.parameters[name] for name in TrainingStandIn.PARAMETERS]

    def batch(self, index: int) -> torch.Tensor:
        return self.actions[index * BATCH:(index + 1) * BATCH]


def draw() -> Draw:
    """A new Draw from the grader's own randomness (os.urandom through `secrets`): nothing the
    submission can predict from the rubric or from an earlier grading."""
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    parameters = {
        "embedding": torch.randn(VOCAB, DIM, generator=generator) / GRAD_SCALE,
        "head": torch.randn(VOCAB, DIM, generator=generator) / (DIM ** 0.5 * GRAD_SCALE),
        "bias": torch.randn(VOCAB, generator=generator) * 0.1,
    }
    return Draw(parameters=parameters, train_offset=torch.randn(VOCAB, generator=generator),
                actions=torch.randint(VOCAB, (BATCH * BATCHES, SEQ), generator=generator),
                states=torch.randn(BATCH * BATCHES, SEQ, STATE_DIM, generator=generator))


# -- the losses a step may have been computed from ---------------------------------------------

@dataclass(frozen=True)
class Targets:
    """How a loss pairs a batch's actions (BATCH, SEQ) with the logits: name ("next" is right),
    the input ids the model reads, and the target of each of their positions (-1: left out)."""

    name: str
    inputs: tuple  # (start, stop) of the positions read
    targets: tuple  # (start, stop) of the positions predicted
    ignore: Optional[int] = None  # a token left out of the loss (cross_entropy's ignore_index)

    def pair(self, actions: torch.Tensor) -> tuple:
        inputs, targets = actions[:, slice(*self.inputs)], actions[:, slice(*self.targets)].clone()
        if self.ignore is not None:
            targets[targets == self.ignore] = -1
        return inputs, targets


NEXT = Targets("next", (None, -1), (1, None))
TARGETS = (NEXT,
           Targets("same", (None, -1), (None, -1)),  # no shift
           Targets("backward", (1, None), (None, -1)),  # shifted the wrong way
           Targets("two_ahead", (None, -2), (2, None)),  # shifted twice
           ) + tuple(Targets("ignore", (None, -1), (1, None), token) for token in range(VOCAB))


@dataclass(frozen=True)
class Direction:
    """Which loss a step's gradient came from: batch index, Targets, train mode or not."""

    batch: int
    targets: Targets
    train: bool


def _flat(tensors) -> torch.Tensor:
    """The parameters (or gradients) [embedding, head, bias] as one float64 vector."""
    return torch.cat([t.double().reshape(-1) for t in tensors])


def _tensors(flat: torch.Tensor) -> list:
    """A _flat() vector split back into its parameters' parts (flattened)."""
    return list(flat.split([VOCAB * DIM, VOCAB * DIM, VOCAB]))


class Losses:
    """The losses a step at parameters theta (a _flat() vector) may have been computed from, and
    their gradients, each computed once, in float64 on the grader's side with the worker's own
    stand-in code."""

    def __init__(self, theta: torch.Tensor, draw_: Draw):
        self.draw, self.computed = draw_, {}
        embedding, head, bias = _tensors(theta)
        self.models = {}
        for train in (True, False):
            model = TrainingStandIn(embedding.reshape(VOCAB, DIM), head.reshape(VOCAB, DIM), bias,
                                    draw_.train_offset.double(), GRAD_SCALE)
            self.models[train] = model.train(train)

    def __call__(self, direction: Direction) -> tuple:
        """(the mean cross-entropy of `direction`, its gradient as a _flat() vector, the number
        of positions in the loss)."""
        if direction not in self.computed:
            inputs, targets = direction.targets.pair(self.draw.batch(direction.batch))
            model = self.models[direction.train]
            loss = F.cross_entropy(model.logits(inputs).reshape(-1, VOCAB), targets.reshape(-1),
                                   ignore_index=-1)
            grads = torch.autograd.grad(loss, list(model.parameters()))
            self.computed[direction] = (float(loss.detach()), _flat(grads), int(targets.ge(0).sum()))
        return self.computed[direction]


# -- what clipping may have done to the gradient -----------------------------------------------

def _clip(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    return grad * min(1.0, max_norm / (float(grad.norm()) + 1e-6))  # clip_grad_norm_'s formula


TRANSFORMS = {  # name -> (gradient, positions in the loss) -> the gradient the step applied
    "clip": lambda grad, _n: _clip(grad, SPEC.max_norm),
    "none": lambda grad, _n: grad,
    "none_summed": lambda grad, n: grad * n,  # cross-entropy summed, not averaged
    "per_tensor": lambda grad, _n: torch.cat([_clip(g, SPEC.max_norm) for g in _tensors(grad)]),
    "values": lambda grad, _n: grad.clamp(-SPEC.max_norm, SPEC.max_norm),
}


# -- the optimizer's update, replayed ----------------------------------------------------------

class Replay:
    """The update rule of the optimizer that took a step, run by the grader: the SGD passed in
    (learning rate LEARNING_RATE, or the lower one a scheduler set), or an SGD, Adam or AdamW
    that train_epoch made itself, with the hyperparameters the worker reports. `state` holds its
    momentum buffer or moments, which the caller advances after each explained step."""

    KINDS = ("SGD", "Adam", "AdamW")

    def __init__(self, kind: str, hyper: dict):
        self.kind, self.hyper, self.state = kind, hyper, None

    @classmethod
    def of(cls, step, previous: Optional["Replay"]) -> Optional["Replay"]:
        """The Replay of `step` (an adapters.OptimizerStep), continuing `previous` when it is
        the same optimizer; None when the grader cannot replay it."""
        hyper = {k: v for k, v in step.hyper.items() if isinstance(v, (bool, int, float))}
        betas = step.hyper.get("betas", [0.9, 0.999])
        lr = hyper.get("lr")
        if step.given:
            # A scheduler may lower the rate (warm-up, decay); a rate above the one the grader
            # set is not the optimizer it passed in.
            if not (isinstance(lr, (int, float)) and 0 < lr <= LEARNING_RATE * (1 + 1e-6)):
                lr = LEARNING_RATE
            kind, hyper = "SGD", {"lr": float(lr)}
        elif (step.optimizer in cls.KINDS and isinstance(lr, (int, float)) and lr > 0
              and isinstance(betas, list) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
            kind, hyper = step.optimizer, dict(hyper, betas=betas)
        else:
            return None
        replay = cls(kind, hyper)
        if previous is not None and previous.kind == kind and previous.same_optimizer(hyper):
            replay.state = previous.state
        return replay

    def same_optimizer(self, hyper: dict) -> bool:
        return all(hyper.get(k) == v for k, v in self.hyper.items() if k != "lr")

    @property
    def plain_sgd(self) -> bool:
        """The update is lr times the gradient: the gradient's norm can be read off it."""
        h = self.hyper
        return self.kind == "SGD" and not h.get("momentum") and not h.get("weight_decay")

    def update(self, theta: torch.Tensor, grad: torch.Tensor) -> tuple:
        """(the parameters after one step from theta with gradient grad, both _flat() vectors
        (every rule here is elementwise), and the new state)."""
        h = self.hyper
        lr = float(h["lr"])
        if h.get("maximize"):
            grad = -grad
        if self.kind == "SGD":
            momentum, decay = float(h.get("momentum", 0.0)), float(h.get("weight_decay", 0.0))
            dampening, nesterov = float(h.get("dampening", 0.0)), bool(h.get("nesterov", False))
            d, buffer = grad + decay * theta, None
            if momentum:
                buffer = d if self.state is None else momentum * self.state + (1 - dampening) * d
                d = d + momentum * buffer if nesterov else buffer
            return theta - lr * d, buffer
        beta1, beta2 = (float(b) for b in h.get("betas", (0.9, 0.999)))
        eps, decay = float(h.get("eps", 1e-8)), float(h.get("weight_decay", 0.0))
        step, m, v = self.state if self.state is not None else (0, 0.0, 0.0)
        step += 1
        if self.kind == "AdamW":
            theta = theta * (1 - lr * decay)
        elif decay:
            grad = grad + decay * theta
        m, v = beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad * grad
        denom = (v / (1 - beta2 ** step)).sqrt() + eps
        return theta - lr / (1 - beta1 ** step) * m / denom, (step, m, v)


# -- one step, explained -----------------------------------------------------------------------

@dataclass
class StepFinding:
    """What the grader found for optimizer step `number` (1-based). kind: "explained" (a full
    hypothesis reproduced it), "direction" (its direction per parameter tensor fits a loss
    but no clipping the grader knows gives its size), "unchanged" (the parameters did not move),
    "unexplained", "outside" (the parameters changed between steps, outside optimizer.step()),
    "unreplayable" (an optimizer the grader cannot replay). For explained and direction steps:
    direction, leftover (gradients from the previous step were still on the parameters),
    transform (a TRANSFORMS name, "other_norm", or "" when unknown), norm (of the applied
    gradient), raw_norm (of the batch's gradient before clipping), loss (the batch loss at the
    step's parameters, as the direction defines it)."""

    number: int
    step: object  # the adapters.OptimizerStep
    kind: str
    replay: Optional[Replay] = None
    direction: Optional[Direction] = None
    leftover: bool = False
    transform: str = ""
    norm: float = 0.0
    raw_norm: float = 0.0
    loss: float = 0.0
    positions: int = 0  # positions in that loss
    applied: Optional[torch.Tensor] = None  # the gradient the step applied, a _flat() vector


def _directions(number: int):
    """Every Direction, the likeliest first: step `number`'s own batch, in train mode, with
    next-token targets."""
    own = (number - 1) % BATCHES
    for batch in [own] + [b for b in range(BATCHES) if b != own]:
        for targets in TARGETS:
            for train in (True, False):
                yield Direction(batch, targets, train)


def _distance(predicted: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> float:
    """|predicted - after| relative to |after - before| (the step's size)."""
    return float((predicted - after).norm()) / max(float((after - before).norm()), 1e-30)


def explain(number: int, step, theta: torch.Tensor, replay: Replay,
            previous: Optional[StepFinding], draw_: Draw) -> StepFinding:
    """The StepFinding of `step` (an adapters.OptimizerStep whose parameters `before` are theta,
    a _flat() vector), replayed with `replay`; `previous` is the last explained step (its applied
    gradient may still be on the parameters)."""
    after = _flat(step.after)
    if torch.equal(after, theta):
        return StepFinding(number, step, "unchanged", replay)
    leftovers = [False] + ([True] if previous is not None and previous.applied is not None else [])
    losses = Losses(theta, draw_)
    for direction in _directions(number):
        loss, grad, positions = losses(direction)
        for leftover in leftovers:
            total = grad + previous.applied if leftover else grad
            for name, transform in TRANSFORMS.items():
                applied = transform(total, positions)
                if _distance(replay.update(theta, applied)[0], theta, after) <= SPEC.update_rtol:
                    return StepFinding(number, step, "explained", replay, direction, leftover, name,
                                       float(applied.norm()), float(grad.norm()), loss, positions,
                                       applied)
    if not replay.plain_sgd:
        return StepFinding(number, step, "unexplained", replay)
    # Plain SGD: the applied gradient is (before - after) / lr. A clipping the grader does not
    # know still keeps each tensor's direction; a total-norm clip to another norm keeps the
    # whole gradient's.
    applied = (theta - after) / float(replay.hyper["lr"])
    for direction in _directions(number):
        loss, grad, positions = losses(direction)
        for leftover in leftovers:
            total = grad + previous.applied if leftover else grad
            if all(F.cosine_similarity(a, g, dim=0) >= 1 - SPEC.update_rtol
                   for a, g in zip(_tensors(applied), _tensors(total)) if g.abs().max() > 0):
                whole = _distance(total * (applied.norm() / total.norm()), 0 * applied,
                                  applied) <= SPEC.update_rtol
                return StepFinding(number, step, "direction", replay, direction, leftover,
                                   "other_norm" if whole else "", float(applied.norm()),
                                   float(grad.norm()), loss, positions, applied)
    return StepFinding(number, step, "unexplained", replay)


# -- one call of train_epoch, explained ---------------------------------------------------------

class TrainedEpoch:
    """What train_epoch did on the stand-in (run, from the Draw `draw_`; `api` the model API the
    stand-in took on), each of its steps explained (findings)."""

    def __init__(self, draw_: Draw, api: Optional[ModelAPI], run: TrainEpochRun):
        self.draw, self.api, self.run = draw_, api, run
        self.findings = self._explain()
        theta = self.findings[-1].step.after if self.findings else self.draw.initial()
        self.changed_after = not torch.equal(_flat(self.run.end), _flat(theta))

    def _explain(self) -> list:
        theta = _flat(self.draw.initial())
        findings, replay, previous = [], None, None
        for number, step in enumerate(self.run.steps, start=1):
            if not torch.equal(_flat(step.before), theta):
                findings.append(StepFinding(number, step, "outside"))
                break
            replay = Replay.of(step, replay)
            if replay is None:
                findings.append(StepFinding(number, step, "unreplayable"))
                break
            finding = explain(number, step, theta, replay, previous, self.draw)
            findings.append(finding)
            if finding.kind == "unexplained":
                break
            if finding.kind != "unchanged":
                replay.state = replay.update(theta, finding.applied)[1]
                previous = finding
                theta = _flat(step.after)
        return findings

    @property
    def updates(self) -> list:
        """The findings of the steps that moved the parameters (or could not be explained)."""
        return [f for f in self.findings if f.kind != "unchanged"]

    def broken(self) -> Optional[StepFinding]:
        """The first step no hypothesis reproduced, or None."""
        return next((f for f in self.findings
                     if f.kind in ("unexplained", "outside", "unreplayable")), None)

    def require_updates(self, what: str) -> list:
        """The explained updating steps; fails the check (the `what` it checks could not be
        measured) when there is none or one could not be explained."""
        broken = self.broken()
        if broken is not None:
            fail(unexplained(broken, what))
        updates = self.updates
        if not updates:
            fail(Verdict(measured=f"{what} could not be checked: no optimizer step changed the "
                                  "model's parameters", kind="not_graded",
                         hint="See the test 'train_epoch clears gradients before every step of "
                              "the optimizer it is given'."))
        return updates


_EPOCHS = weakref.WeakKeyDictionary()  # Submission -> TrainedEpoch: one run per grading


def trained_epoch(submission) -> TrainedEpoch:
    """The grading's TrainedEpoch (train_epoch runs once per grading, on one Draw; a failure of
    that run fails every check that asks, as Submission.call_once does)."""
    if submission not in _EPOCHS:
        drawn, api = draw(), model_api(submission)
        run = run_train_epoch(submission, states=drawn.states, actions=drawn.actions,
                              batch_size=BATCH, parameters=drawn.parameters,
                              train_offset=drawn.train_offset, grad_scale=GRAD_SCALE,
                              learning_rate=LEARNING_RATE, api=api, seconds=SPEC.epoch_seconds)
        _EPOCHS[submission] = TrainedEpoch(drawn, api, run)
    return _EPOCHS[submission]


def unexplained(finding: StepFinding, what: str) -> Verdict:
    """The Verdict on a step the grader could not reproduce, for a check of `what`."""
    number, step = finding.number, finding.step
    if finding.kind == "outside":
        return Verdict(measured=f"{what}: the model's parameters before optimizer.step() number "
                                f"{number}", kind="property",
                       found="they differ from those the previous step left (or the initial ones)",
                       expected="parameters changed only by optimizer.step()",
                       hint="Update the model only through the optimizer passed in. " + ORDER)
    if finding.kind == "unreplayable":
        return Verdict(measured=f"{what}: optimizer.step() number {number}", kind="property",
                       found=f"a step of {step.optimizer}, an optimizer the grader cannot replay",
                       expected="steps of the optimizer passed in",
                       hint="Use the `optimizer` argument: optimizer.zero_grad() and optimizer.step().")
    return Verdict(measured=f"{what}: the parameters after optimizer.step() number {number}",
                   found="they match no update the grader recomputed: not a step on the next-token "
                         "cross-entropy of any one batch (in train or eval mode, clipped or not), "
                         "nor on a known wrong loss", kind="property",
                   expected="one optimizer step per batch, on that batch's loss",
                   hint=ORDER)


def model_api(submission) -> Optional[ModelAPI]:
    """How the student's DecoderOnlyTransformer is called and what it returns, read once per
    grading; None (the template's API) when it could not be read, which costs no points: the
    failure is the attention's or the model's, graded elsewhere."""
    try:
        return run_model_api(submission, vocab_size=VOCAB, seconds=SPEC.api_seconds)
    except Failed as failure:
        submission.note(f"{failure.verdict.text()}. The training checks' stand-in model therefore "
                        "takes the template's API: forward(input_ids, targets=None) -> (logits, loss)")
        return None


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan
