"""training: TODO 3, train_epoch judged by what it does to the grader's spy model and optimizer.

The worker runs the student's train_epoch on a tiny model and an SGD optimizer of the grader's
own (worker/ops/training.py), over an unshuffled DataLoader of equal-size batches, with the
model in eval mode and gradients far above the clipping norm. It returns what the spies saw,
including every step of any optimizer (the one passed in or one train_epoch made itself); the
checks here read the behaviour off it. The targets a loss trained towards are read off the
gradient w.r.t. the logits (for cross-entropy, the target class is the entry with the negative
gradient), so a loss the student computes from the logits is judged like the model's own. The
student's own model is never trained here, so a bug in attention or RMSNorm cannot cost points
here, and each training bug costs the check about it, not the others. The spy takes on the
student's model API, read once per grading off their model built with known-good attention and
RMSNorm (model_api); when even that fails, the spy keeps the template's API, with a note.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import rubric
from ..verdict import Failed, Verdict, fail
from . import margin
from .adapters import (BackwardPass, EpochEnd, ForwardCall, GradientsCleared, ModelAPI,
                       OptimizerStepCall, run_model_api, run_train_epoch)

SPEC = rubric.TRAINING
VOCAB, SEQ, BATCH, BATCHES, STATE_DIM = 16, 12, 8, 4, 10
SPY = dict(dim=8, grad_scale=40.0, learning_rate=0.01)  # unclipped gradient norms ~12-16
ORDER = ("A working order for every batch: optimizer.zero_grad(), forward, loss, "
         "loss.backward(), clip_grad_norm_(model.parameters(), 1.0), optimizer.step().")
SHIFT = "Use inputs = actions[:, :-1], targets = actions[:, 1:]."


def model_api(submission) -> ModelAPI:
    """How the student's DecoderOnlyTransformer is called and what it returns, read once per
    grading; None (the template's API) when it could not be read, which costs no points: the
    failure is the attention's or the model's, graded elsewhere."""
    try:
        return run_model_api(submission, vocab_size=VOCAB, seconds=SPEC.api_seconds)
    except Failed as failure:
        submission.note(f"{failure.verdict.text()}. The training checks' stand-in model therefore "
                        "takes the template's API: forward(input_ids, targets=None) -> (logits, loss)")
        return None


def _norm(tensors):
    """Total norm of the tensors that are not None; None when all are."""
    present = [t.double().norm() for t in tensors if t is not None]
    return float(torch.stack(present).norm()) if present else None


def _sum(tensors):
    """Sum of the tensors that are not None; None when all are."""
    present = [t for t in tensors if t is not None]
    return sum(present[1:], present[0]) if present else None


@dataclass
class Step:
    """One optimizer.step(): the gradients it used and what led to them."""

    grads: list  # the parameters' .grad at step() (None where absent)
    optimizer: str  # the class of the optimizer that stepped
    given: bool  # it is the optimizer passed to train_epoch
    holds_model: bool  # its parameters include the model's (else the step left the model as it was)
    fresh: list  # the gradients the backwards since the previous step produced, summed
    stale: bool  # a backward since the previous step found old gradients on the parameters
    after: float  # the gradient norm next seen after it (zero_grad or the epoch's end), or None

    @property
    def norm(self):
        return _norm(self.grads)


class SpiedEpoch:
    """One call of train_epoch on the spies, and what can be read off its observations."""

    def __init__(self, submission, generator):
        self.actions = torch.randint(VOCAB, (BATCH * BATCHES, SEQ), generator=generator)
        states = torch.randn(BATCH * BATCHES, SEQ, STATE_DIM, generator=generator)
        self.api = model_api(submission)
        got = run_train_epoch(submission, states=states, actions=self.actions, batch_size=BATCH,
                              vocab_size=VOCAB, seed=0, api=self.api, **SPY)
        self.returned, self.returned_type = got.returned, got.returned_type
        self.forwards = [e for e in got.events if isinstance(e, ForwardCall)]
        self.backwards = [e for e in got.events if isinstance(e, BackwardPass)]
        if not self.forwards:
            fail(Verdict(measured="calls of the model by train_epoch", found="none",
                         expected="one forward per batch of the dataloader", kind="property",
                         hint="Loop over the dataloader and run the model on every batch."))
        grads = {}
        for backward in self.backwards:
            grads[backward.forward] = backward.grad_logits + grads.get(backward.forward, 0)
        # The forwards that trained the model: those a loss was backpropagated through, or,
        # when nothing was, those given targets.
        self.trained = [(f, grads[i]) for i, f in enumerate(self.forwards) if i in grads]
        if not self.trained:
            self.trained = [(f, None) for f in self.forwards if f.targets is not None]
        self.steps = self._steps(got.events)

    @staticmethod
    def _steps(events) -> list:
        steps, pending = [], []
        for i, event in enumerate(events):
            if isinstance(event, BackwardPass):
                pending.append(event)
            elif isinstance(event, OptimizerStepCall):
                after = next(e.grad_norm for e in events[i + 1:]
                             if isinstance(e, (GradientsCleared, EpochEnd)))
                fresh = [_sum(b.fresh[p] for b in pending) for p in range(len(event.grads))]
                steps.append(Step(event.grads, event.optimizer, event.given, event.holds_model, fresh,
                                  any(b.stale for b in pending), after))
                pending = []
        return steps

    def require_trained(self) -> list:
        if not self.trained:
            fail(Verdict(measured="the loss train_epoch trained with", kind="property",
                         found="no loss was backpropagated through the model's logits and the model "
                               "was never given targets, so nothing was trained",
                         hint="Compute the loss from the model's output and call loss.backward()."))
        return self.trained

    def match(self, input_ids):
        """(batch index, offset) with input_ids == that batch's actions[:, offset:offset + L]."""
        for index, actions in enumerate(self.actions.split(BATCH)):
            length = input_ids.shape[1]
            for offset in (0, 1):
                window = actions[:, offset:offset + length]
                if window.shape == input_ids.shape and torch.equal(window, input_ids):
                    return index, offset
        return None

    @staticmethod
    def loss_terms(forward, grad):
        """(positions in the loss, the class each was trained towards, what the summed
        cross-entropy was divided by), read off the gradient w.r.t. the logits when there is one
        (d(sum CE / N)/d logit_target = (p_target - 1) / N, the only negative entry), else off the
        targets the model was given."""
        if grad is None:
            targets = forward.targets.reshape(forward.input_ids.shape)
            return torch.ones_like(targets, dtype=torch.bool), targets, float(targets.numel())
        mask, targets = grad.ne(0).any(-1), grad.argmin(-1)
        p_target = forward.logits.double().softmax(-1).gather(-1, targets[..., None])[..., 0]
        g_target = grad.double().gather(-1, targets[..., None])[..., 0]
        divisor = float((p_target[mask] - 1).sum() / g_target[mask].sum()) if mask.any() else 1.0
        return mask, targets, divisor

    def batch_losses(self):
        """Per training batch: (its mean cross-entropy over the positions in its loss, the
        summed cross-entropy as the student divided it)."""
        losses = []
        for forward, grad in self.require_trained():
            mask, targets, divisor = self.loss_terms(forward, grad)
            ce = F.cross_entropy(forward.logits.double()[mask], targets[mask], reduction="none")
            losses.append((float(ce.mean()), float(ce.sum()) / divisor))
        return losses


def test_next_token_targets(submission, generator):
    epoch = SpiedEpoch(submission, generator)
    seen = []
    for number, (forward, grad) in enumerate(epoch.require_trained(), start=1):
        ids = forward.input_ids
        found = epoch.match(ids)
        if found is None:
            fail(Verdict(measured=f"the input ids the model read in training batch {number}",
                         found=f"a tensor of shape {tuple(ids.shape)} that is not a slice of the "
                               "batch's actions",
                         expected=f"actions[:, :-1] (shape ({BATCH}, {SEQ - 1}))", kind="property"))
        index, offset = found
        actions = epoch.actions.split(BATCH)[index]
        mask, targets, _ = epoch.loss_terms(forward, grad)
        if not mask.any():
            fail(Verdict(measured=f"the positions in the loss of training batch {number}",
                         found="none: the loss did not depend on any position's logits",
                         expected="every position that has a next action", kind="property"))
        # Position t predicts action t + 1 of the row it read; the last position of a
        # full-length input has no next action and must stay out of the loss.
        expected = _ahead(actions, offset + 1, ids.shape[1])
        wanted = expected.ge(0)
        wrong = int((targets[mask] != expected[mask]).sum())
        left_out = wanted & ~mask
        ignored = expected[left_out].unique()
        if offset == 0 and wrong == 0 and torch.equal(mask, wanted):
            seen.append(index)
            continue
        fail(_targets_verdict(epoch, number, ids, actions, offset, mask, targets, expected, wanted,
                              wrong, left_out, ignored))
    if sorted(seen) != list(range(BATCHES)):
        fail(Verdict(measured="the batches train_epoch trained on",
                     found=f"batches {[i + 1 for i in seen]} of the dataloader's {BATCHES}",
                     expected="every batch once, in one pass over the dataloader", kind="property"))


def _targets_verdict(epoch, number, ids, actions, offset, mask, targets, expected, wanted, wrong,
                     left_out, ignored) -> Verdict:
    """Why the targets of training batch `number` are not its next actions, from what the model
    read (offset 0: actions[:, :-1]) and what each position was trained towards."""
    measured = f"the targets of training batch {number}"
    if torch.equal(targets[mask], ids[mask]):
        return Verdict(measured=measured, found="the inputs themselves", expected="actions[:, 1:]",
                       cause="no shift: the targets are the inputs themselves, so the model learns "
                             "to copy its input", hint=SHIFT, kind="property")
    if offset == 1 and torch.equal(targets[mask], actions[:, :ids.shape[1]][mask]):
        return Verdict(measured=measured, found="actions[:, :-1], for inputs actions[:, 1:]",
                       expected="actions[:, 1:], for inputs actions[:, :-1]",
                       cause="shifted the wrong way: the model read actions[:, 1:] and predicted "
                             "actions[:, :-1]", hint=SHIFT, kind="property")
    if offset == 1:
        return Verdict(measured=f"the input ids of training batch {number}", found="actions[:, 1:]",
                       expected="actions[:, :-1]", hint=SHIFT, kind="property")
    if torch.equal(targets[mask], _ahead(actions, 2, ids.shape[1])[mask]):
        return _shifted_twice(measured, epoch.api)
    if (wrong == 0 and len(ignored) == 1 and not (mask & ~wanted).any()
            and torch.equal(left_out, wanted & expected.eq(ignored))):
        token = int(ignored)
        last = f" (the last id: this test's model has vocab_size {VOCAB})" if token == VOCAB - 1 else ""
        where = ("DecoderOnlyTransformer.forward's loss"
                 if epoch.api is not None and epoch.api.ignore_index == token else "the loss")
        return Verdict(measured=f"the positions in the loss of training batch {number}",
                       found=f"the {int(left_out.sum())} positions whose target is token {token}{last}, "
                             f"and only those, are left out of {where}",
                       expected="every position that has a next action",
                       cause=f"cross-entropy with ignore_index={token}: token {token} is a real action "
                             "(every id from 0 to vocab_size - 1 is an action bin; nothing is "
                             "padded), so it is never learned",
                       hint="Leave ignore_index at its default.", kind="property")
    if wrong == 0:
        return Verdict(measured=f"the positions in the loss of training batch {number}",
                       found=f"{int(mask.sum())}",
                       expected=f"all {BATCH} x {SEQ - 1} positions that have a next action (and not "
                                "the last position of a full-length input)", kind="property")
    return Verdict(measured=measured,
                   found=f"{wrong} of {int(mask.sum())} targets differ from actions[:, 1:]",
                   expected="the model reads actions[:, :-1] and predicts actions[:, 1:], position "
                            "by position", kind="property")


def _ahead(actions, shift: int, length: int):
    """actions[:, shift:shift + length], padded with -1 (no target) to `length` positions."""
    window = actions[:, shift:shift + length]
    return F.pad(window, (0, length - window.shape[1]), value=-1)


def _shifted_twice(measured: str, api) -> Verdict:
    """The Verdict when position t was trained towards action t + 2; `api` as model_api() says."""
    found, expected = "position t was trained towards action t + 2", "action t + 1"
    if api is not None and api.shifts:
        return Verdict(measured=measured, found=found, expected=expected, kind="property",
                       cause="the targets are shifted twice: your DecoderOnlyTransformer.forward "
                             "shifts the targets itself (it scores logits[:, :-1] against "
                             "targets[:, 1:]), and train_epoch passed targets shifted already "
                             "(actions[:, 1:])",
                       hint="Shift once, in train_epoch or in the model, not in both.")
    return Verdict(measured=measured, found=found, expected=expected, kind="property",
                   cause="the targets are two steps ahead (as with targets = actions[:, 2:])",
                   hint=SHIFT)


def _optimizer_misuse(steps):
    """The Verdict when the steps did not train the model with the optimizer passed in, or None."""
    measured, expected = "the optimizer train_epoch stepped", "the optimizer passed in, only"
    if not steps or any(step.given for step in steps):
        if any(not step.given for step in steps):
            other = next(step.optimizer for step in steps if not step.given)
            return Verdict(measured=measured, kind="property", expected=expected,
                           found=f"both the optimizer passed in and another one ({other})",
                           cause="train_epoch steps a second optimizer besides the one passed in, "
                                 "so the model takes the steps of two optimizers",
                           hint="Use only the `optimizer` argument.")
        return None
    names = " and ".join(sorted({step.optimizer for step in steps}))
    if all(step.holds_model for step in steps):
        stepped = f"an optimizer it created itself ({names})"
        cause = ("train_epoch creates its own optimizer: the caller's optimizer (its learning rate, "
                 "its state, a scheduler attached to it) is ignored, and a new optimizer at every "
                 "call also restarts its state each epoch")
    else:
        stepped = (f"an optimizer ({names}) that does not hold this model's parameters (one "
                   "created earlier, e.g. once at module level for another model, and kept)")
        cause = ("train_epoch steps an optimizer that holds other parameters: the caller's "
                 "optimizer (its learning rate, its state, a scheduler attached to it) is ignored, "
                 "and this model's parameters were never updated")
    return Verdict(measured=measured, found=f"{stepped}, not the optimizer passed in",
                   expected=expected, cause=cause, kind="property",
                   hint="Use the `optimizer` argument: optimizer.zero_grad() and optimizer.step().")


def test_gradients_zeroed_each_step(submission, generator):
    epoch = SpiedEpoch(submission, generator)
    if not epoch.backwards:
        fail(Verdict(measured="gradient reaching the model during train_epoch", found="none",
                     kind="property", hint="No loss was backpropagated through the model's "
                                           "output: call loss.backward() on a loss computed from "
                                           "the model's output. " + ORDER))
    # Before the stale gradients: an optimizer that is not the one passed in may clear
    # gradients that are not the model's, and that is the cause to name.
    misuse = _optimizer_misuse(epoch.steps)
    if misuse is not None:
        fail(misuse)
    stale = next((n for n, b in enumerate(epoch.backwards, start=1) if b.stale), None)
    if stale is not None:
        fail(Verdict(measured=f"the parameters' .grad when loss.backward() ran for batch {stale}",
                     found="it still held earlier gradients", expected="cleared gradients",
                     cause="gradients accumulate across batches: they are not cleared before "
                           "each loss.backward()",
                     hint="Call optimizer.zero_grad() every step, before loss.backward().",
                     kind="property"))
    if not epoch.steps:
        fail(Verdict(measured="calls of optimizer.step() on the optimizer passed to train_epoch",
                     found="none, so the model never changed", expected="one per batch",
                     hint=ORDER, kind="property"))
    if len(epoch.steps) != len(epoch.trained):
        fail(Verdict(measured="calls of optimizer.step()",
                     found=f"{len(epoch.steps)} for {len(epoch.trained)} batches",
                     expected="one step per batch", kind="property"))
    for number, step in enumerate(epoch.steps, start=1):
        if not step.norm:
            cause = ("the gradients were cleared between loss.backward() and optimizer.step()"
                     if any(g is not None for g in step.fresh) else
                     "optimizer.step() ran before loss.backward()")
            fail(Verdict(measured=f"the gradients optimizer.step() number {number} found on the "
                                  "parameters", found="none, so the step did nothing",
                         expected="the batch's gradients", cause=cause, hint=ORDER, kind="property"))


def test_gradient_norm_clipped(submission, generator, extra):
    epoch = SpiedEpoch(submission, generator)
    steps = [step for step in epoch.steps if step.norm]
    if not steps:
        fail(Verdict(measured="the clipping could not be checked: optimizer.step() never ran with "
                              "gradients on the parameters", kind="not_graded",
                     hint="See the test 'train_epoch clears gradients before every step of the "
                          "optimizer it is given'."))
    max_norm, tolerance = SPEC.max_norm, SPEC.norm_tolerance
    # Before clipping, each batch's gradient norm is ~12-16 (more when gradients accumulate),
    # so after clipping it must be max_norm at every step.
    unclipped = [_norm(step.fresh) if not step.stale else None for step in steps]
    extra[margin.KEY] = margin.at_most(max(abs(s.norm - max_norm) for s in steps), tolerance,
                                       "max |gradient norm at a step - max_norm| <= norm_tolerance")
    if all(abs(step.norm - max_norm) <= tolerance for step in steps):
        known = [n for n in unclipped if n is not None]
        submission.note(f"gradient norm at every optimizer.step(): {max_norm:g}"
                     + (f" (before clipping: {min(known):.3g} to {max(known):.3g})" if known else ""))
        return
    number, step, before = next((n, s, u) for n, (s, u) in enumerate(zip(steps, unclipped), 1)
                                if abs(s.norm - max_norm) > tolerance)
    norms = [s.norm for s in steps]
    found = f"{step.norm:.4g}" + (f" (before clipping: {before:.4g})" if before is not None else "")
    per_tensor = [g.double().norm() for g in step.grads if g is not None]
    largest = max(float(g.abs().max()) for g in step.grads if g is not None)
    clip = "clip_grad_norm_(model.parameters(), max_norm=1.0)"
    cause, hint = "", ""
    if step.norm > max_norm and all(n <= max_norm + tolerance for n in per_tensor):
        cause = "each parameter tensor was clipped on its own"
        hint = f"Clip the total norm of all parameters at once with {clip}."
    elif before is not None and abs(step.norm - before) <= tolerance * before:
        if step.after is not None and abs(step.after - max_norm) <= tolerance:
            cause = ("the gradient is clipped after optimizer.step(), so the step used the "
                     "unclipped gradient")
            hint = "Clip between loss.backward() and optimizer.step()."
        else:
            cause = "the gradient was not clipped"
            hint = f"Call torch.nn.utils.{clip} between loss.backward() and optimizer.step()."
    elif step.norm > max_norm and largest <= max_norm + tolerance:
        cause = ("the gradient entries were clipped to [-1, 1] (clip_grad_value_), which does not "
                 "bound the norm")
        hint = f"Use {clip}."
    elif max(norms) - min(norms) <= tolerance * max(norms):
        cause = "the gradient was clipped to another norm instead of 1.0"
        found += f"; every step's gradient norm is {step.norm:.4g}"
        hint = "Use max_norm=1.0."
    else:
        hint = (f"The total gradient norm must be clipped to 1.0 at every step, with {clip} "
                "between loss.backward() and optimizer.step().")
    fail(Verdict(measured=f"the gradient norm at optimizer.step() number {number}", found=found,
                 expected=f"{max_norm:g}", cause=cause, hint=hint, kind="property"))


def test_train_mode(submission, generator):
    epoch = SpiedEpoch(submission, generator)
    forwards = [forward for forward, _ in epoch.trained] or epoch.forwards
    in_eval = sum(not forward.training for forward in forwards)
    if in_eval:
        fail(Verdict(measured="the model's mode while train_epoch trained it",
                     found=f"eval mode for {in_eval} of {len(forwards)} training batches",
                     expected="train mode", kind="property",
                     cause="train_epoch does not put the model in train mode (the grader passes it "
                           "in eval mode, as it is after evaluate())",
                     hint="Call model.train() at the start of train_epoch, or dropout stays off "
                          "while training."))


def test_returns_mean_batch_loss(submission, generator, extra):
    epoch = SpiedEpoch(submission, generator)
    losses = epoch.batch_losses()
    means = [mean for mean, _ in losses]
    expected = sum(means) / len(means)
    got = epoch.returned
    if got is None:
        returned = "nothing (None)" if epoch.returned_type == "NoneType" else f"a {epoch.returned_type}"
        fail(Verdict(measured="train_epoch's return value", found=returned,
                     expected="the mean of the batch losses as a Python float", kind="property",
                     hint="Sum loss.item() over the batches and divide by their number."))

    def close(value):
        return abs(got - value) <= SPEC.loss_rtol * abs(value)

    extra[margin.KEY] = margin.at_most(abs(got - expected) / abs(expected), SPEC.loss_rtol,
                                       "|returned - mean batch loss| / |mean| <= loss_rtol")

    if close(expected):
        if epoch.returned_type != "float":
            submission.note(f"train_epoch returned a {epoch.returned_type}, accepted for its value; "
                         "the template returns a Python float (use loss.item())")
        return
    own = [value for _, value in losses]
    variants = {
        "the loss of each batch is the cross-entropy summed over positions, not averaged (use "
        "F.cross_entropy's default reduction='mean')": sum(own) / len(own),
        "the sum of the batch losses instead of their mean": sum(means),
        "the last batch's loss instead of the mean over the batches": means[-1],
        "the first batch's loss instead of the mean over the batches": means[0],
        "the summed loss divided by the number of sequences instead of the number of batches":
            sum(means) / (BATCH * BATCHES),
    }
    fail(Verdict(measured="train_epoch's return value", found=f"{got:.6g}",
                 expected=f"{expected:.6g}, the mean of its {len(means)} batch losses (batch losses "
                          f"{', '.join(f'{m:.4f}' for m in means)})",
                 cause=next((text for text, value in variants.items() if close(value)), ""),
                 kind="property"))
