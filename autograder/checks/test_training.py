"""training: TODO 3, train_epoch judged by the parameter updates it makes, recomputed by the grader.

train_epoch runs once per grading on a small stand-in model (a token embedding and a linear
head; the student's own model never trains here, so a bug in attention or RMSNorm cannot cost
points here) with SGD, over batches the grader draws per grading. The grader knows the initial
parameters, the batches, the optimizer and the stand-in's code, so it recomputes each optimizer
step and finds which loss, gradients and clipping reproduce the parameters the step produced
(training_evidence.py): each check judges its own part of that finding, so each training bug
costs the check about it, and every point rests on parameters the grader recomputed, never on
what the student's process reports about itself. The stand-in takes on the student's model API,
read once per grading off their model (training_evidence.model_api).
"""

from .. import rubric
from ..verdict import Verdict, fail
from . import margin
from .training_evidence import BATCH, BATCHES, NEXT, ORDER, SEQ, VOCAB, mean, trained_epoch, unexplained

SPEC = rubric.TRAINING
SHIFT = "Use inputs = actions[:, :-1], targets = actions[:, 1:]."


def test_next_token_targets(submission):
    epoch = trained_epoch(submission)
    updates = epoch.require_updates("the targets train_epoch trained towards")
    for finding in updates:
        if finding.direction.targets != NEXT:
            fail(_targets_verdict(finding, epoch.api))
    batches = [finding.direction.batch for finding in updates]
    if sorted(batches) != list(range(BATCHES)):
        fail(Verdict(measured="the batches train_epoch trained on, one per optimizer step",
                     found=f"batches {[b + 1 for b in batches]} of the dataloader's {BATCHES}",
                     expected="every batch once, in one pass over the dataloader", kind="property"))


def test_gradients_zeroed_each_step(submission):
    epoch = trained_epoch(submission)
    run = epoch.run
    if not run.backwards:
        fail(Verdict(measured="gradient reaching the model during train_epoch", found="none",
                     kind="property", hint="No loss was backpropagated through the model's "
                                           "output: call loss.backward() on a loss computed from "
                                           "the model's output. " + ORDER))
    # Before the stale gradients: an optimizer that is not the one passed in may clear
    # gradients that are not the model's, and that is the cause to name.
    misuse = _optimizer_misuse(run.steps)
    if misuse is not None:
        fail(misuse)
    if not run.steps:
        fail(Verdict(measured="calls of optimizer.step() on the optimizer passed to train_epoch",
                     found="none, so the model never changed" if not epoch.changed_after else
                           "none, yet the model's parameters changed",
                     expected="one per batch", hint=ORDER, kind="property"))
    broken = epoch.broken()
    if broken is not None:
        fail(unexplained(broken, "the optimizer steps"))
    idle = next((f for f in epoch.findings if f.kind == "unchanged"), None)
    if idle is not None:
        fail(_idle_step_verdict(idle))
    stale = next((f for f in epoch.updates if f.leftover), None)
    if stale is not None:
        fail(Verdict(measured=f"the gradient applied by optimizer.step() number {stale.number}",
                     found="this batch's gradient plus the gradient of the step before",
                     expected="this batch's gradient only", kind="property",
                     cause="gradients accumulate across batches: they are not cleared before "
                           "each loss.backward()",
                     hint="Call optimizer.zero_grad() every step, before loss.backward()."))
    if len(epoch.updates) != BATCHES:
        fail(Verdict(measured="calls of optimizer.step()",
                     found=f"{len(epoch.updates)} for {BATCHES} batches",
                     expected="one step per batch", kind="property"))
    if epoch.changed_after:
        fail(Verdict(measured="the model's parameters when train_epoch returned", kind="property",
                     found="they differ from those the last optimizer.step() left",
                     expected="parameters changed only by optimizer.step()", hint=ORDER))


def test_gradient_norm_clipped(submission):
    epoch = trained_epoch(submission)
    updates = epoch.require_updates("the clipping")
    unreadable = sorted({f.replay.kind for f in updates if not f.replay.plain_sgd})
    if unreadable:
        fail(Verdict(measured="the clipping could not be checked: the steps were taken by "
                              f"{' and '.join(unreadable)}, whose update does not show the "
                              "gradient's norm", kind="not_graded",
                     hint="See the test 'train_epoch clears gradients before every step of the "
                          "optimizer it is given'."))
    wrong = next((f for f in updates if f.transform != "clip"), None)
    if wrong is None:
        raw = [f.raw_norm for f in updates]
        submission.note(f"gradient norm at every optimizer.step(): {SPEC.max_norm:g} (before "
                        f"clipping: {min(raw):.3g} to {max(raw):.3g})")
        return
    fail(_clip_verdict(wrong, updates))


def test_train_mode(submission):
    epoch = trained_epoch(submission)
    updates = epoch.require_updates("the model's mode")
    modes = [finding.direction.train for finding in updates]
    if all(modes):
        return
    fail(_mode_verdict(modes))


def test_returns_mean_batch_loss(submission, extra):
    epoch = trained_epoch(submission)
    got, returned_type = epoch.run.returned, epoch.run.returned_type
    if got is None:
        returned = "nothing (None)" if returned_type == "NoneType" else f"a {returned_type}"
        fail(Verdict(measured="train_epoch's return value", found=returned,
                     expected="the mean of the batch losses as a Python float", kind="property",
                     hint="Sum loss.item() over the batches and divide by their number."))
    updates = epoch.require_updates("the mean batch loss")
    means = [finding.loss for finding in updates]
    expected = mean(means)

    def close(value):
        return abs(got - value) <= SPEC.loss_rtol * abs(value)

    extra[margin.KEY] = margin.at_most(abs(got - expected) / abs(expected) if expected else float("nan"),
                                       SPEC.loss_rtol, "relative error of the returned mean <= loss_rtol")
    if close(expected):
        if returned_type != "float":
            submission.note(f"train_epoch returned a {returned_type}, accepted for its value; "
                            "the template returns a Python float (use loss.item())")
        return
    variants = {
        "the loss of each batch is the cross-entropy summed over positions, not averaged (use "
        "F.cross_entropy's default reduction='mean')": mean(f.loss * f.positions for f in updates),
        "the sum of the batch losses instead of their mean": sum(means),
        "the last batch's loss instead of the mean over the batches": means[-1],
        "the first batch's loss instead of the mean over the batches": means[0],
        "the summed loss divided by the number of sequences instead of the number of batches":
            sum(means) / (BATCH * BATCHES),
    }
    fail(Verdict(measured="train_epoch's return value", found=f"{got:.6g}",
                 expected=f"{expected:.6g}, the mean of its {len(means)} batch losses (batch losses "
                          f"{', '.join(f'{m:.4f}' for m in means)}, recomputed from the parameters "
                          "before each step)",
                 cause=next((text for text, value in variants.items() if close(value)), ""),
                 kind="mismatch"))


# -- the Verdicts' wording -----------------------------------------------------------------------

def _targets_verdict(finding, api) -> Verdict:
    """Why the loss of step `finding` did not pair actions[:, :-1] with actions[:, 1:], from the
    Targets that reproduced it."""
    targets, number = finding.direction.targets, finding.number
    measured = f"the targets of the loss behind optimizer.step() number {number}"
    if targets.name == "same":
        return Verdict(measured=measured, found="the inputs themselves", expected="actions[:, 1:]",
                       cause="no shift: the targets are the inputs themselves, so the model learns "
                             "to copy its input", hint=SHIFT, kind="property")
    if targets.name == "backward":
        return Verdict(measured=measured, found="actions[:, :-1], for inputs actions[:, 1:]",
                       expected="actions[:, 1:], for inputs actions[:, :-1]",
                       cause="shifted the wrong way: the model read actions[:, 1:] and predicted "
                             "actions[:, :-1]", hint=SHIFT, kind="property")
    if targets.name == "two_ahead":
        return _shifted_twice(measured, api)
    token = targets.ignore
    last = f" (the last id: this test's model has vocab_size {VOCAB})" if token == VOCAB - 1 else ""
    where = ("DecoderOnlyTransformer.forward's loss"
             if api is not None and api.ignore_index == token else "the loss")
    return Verdict(measured=f"the positions in the loss behind optimizer.step() number {number}",
                   found=f"the positions whose target is token {token}{last}, and only those, are "
                         f"left out of {where}",
                   expected=f"every position that has a next action ({BATCH} x {SEQ - 1} per batch)",
                   cause=f"cross-entropy with ignore_index={token}: token {token} is a real action "
                         "(every id from 0 to vocab_size - 1 is an action bin; nothing is "
                         "padded), so it is never learned",
                   hint="Leave ignore_index at its default.", kind="property")


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
    """The Verdict when the steps, as the worker reports them, were not all taken by the
    optimizer passed in (a report that can only cost points), or None."""
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


def _idle_step_verdict(finding) -> Verdict:
    """optimizer.step() number finding.number left the parameters as they were; the cause from
    what the worker saw around it."""
    step = finding.step
    if step.had_grads:
        cause = ""
    elif not step.backwards and step.grad_norm_after:
        cause = "optimizer.step() ran before loss.backward()"
    elif step.backwards:
        cause = "the gradients were cleared between loss.backward() and optimizer.step()"
    else:
        cause = "no loss.backward() ran before optimizer.step()"
    return Verdict(measured=f"the model's parameters after optimizer.step() number {finding.number}",
                   found="unchanged: the step found no gradient to apply",
                   expected="the batch's clipped gradient applied", cause=cause, hint=ORDER,
                   kind="property")


def _clip_verdict(finding, updates) -> Verdict:
    """Why the gradient applied at step `finding` is not the batch's gradient clipped to norm
    max_norm, from the clipping that reproduced it."""
    max_norm, clip = SPEC.max_norm, "clip_grad_norm_(model.parameters(), max_norm=1.0)"
    found = f"{finding.norm:.4g} (before clipping: {finding.raw_norm:.4g})"
    cause, hint = "", ""
    if finding.transform in ("none", "none_summed"):
        after = finding.step.grad_norm_after
        if after is not None and abs(after - max_norm) <= 1e-3 * max_norm:
            cause = ("the gradient is clipped after optimizer.step(), so the step used the "
                     "unclipped gradient")
            hint = "Clip between loss.backward() and optimizer.step()."
        else:
            cause = "the gradient was not clipped"
            hint = f"Call torch.nn.utils.{clip} between loss.backward() and optimizer.step()."
    elif finding.transform == "per_tensor":
        cause = "each parameter tensor was clipped on its own"
        hint = f"Clip the total norm of all parameters at once with {clip}."
    elif finding.transform == "values":
        cause = ("the gradient entries were clipped to [-1, 1] (clip_grad_value_), which does not "
                 "bound the norm")
        hint = f"Use {clip}."
    elif finding.transform == "other_norm" and all(
            f.transform == "other_norm" and abs(f.norm - finding.norm) <= 1e-3 * finding.norm
            for f in updates):
        cause = "the gradient was clipped to another norm instead of 1.0"
        found += f"; every step's gradient norm is {finding.norm:.4g}"
        hint = "Use max_norm=1.0."
    else:
        hint = (f"The total gradient norm must be clipped to 1.0 at every step, with {clip} "
                "between loss.backward() and optimizer.step().")
    return Verdict(measured=f"the norm of the gradient applied by optimizer.step() number "
                            f"{finding.number}", found=found, expected=f"{max_norm:g}",
                   cause=cause, hint=hint, kind="property")


def _mode_verdict(modes: list) -> Verdict:
    """The Verdict when some steps' losses were computed in eval mode (modes: train or not,
    per step, as the recomputation found them)."""
    steps = [number for number, train in enumerate(modes, start=1) if not train]
    found = (f"eval mode for {len(steps)} of {len(modes)} optimizer steps (step"
             f"{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))})")
    measured, expected = "the model's mode while train_epoch trained it", "train mode at every step"
    if modes[0] and not modes[-1]:
        first = steps[0]
        before = "step 1" if first == 2 else f"steps 1 to {first - 1}"
        return Verdict(measured=measured, found=found, expected=expected, kind="property",
                       cause=f"the model is in train mode for {before} and in eval mode from step "
                             f"{first} on: something inside the loop "
                             "(an evaluation, say) puts it in eval mode and it is not put back",
                       hint="Call model.train() after anything that calls model.eval(), before "
                            "the next training step.")
    if all(not train for train in modes):
        return Verdict(measured=measured, found=found, expected=expected, kind="property",
                       cause="train_epoch does not put the model in train mode (the grader passes it "
                             "in eval mode, as it is after evaluate())",
                       hint="Call model.train() at the start of train_epoch, or dropout stays off "
                            "while training.")
    return Verdict(measured=measured, found=found, expected=expected, kind="property",
                   hint="Call model.train() before the first training step and after anything "
                        "that puts the model in eval mode.")
