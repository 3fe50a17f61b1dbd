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

import pytest
import torch
import torch.nn.functional as F

from .. import rubric
from ..worker.protocol import Op

SPEC = rubric.TRAINING
VOCAB, SEQ, BATCH, BATCHES, STATE_DIM = 16, 12, 8, 4, 10
SPY = dict(dim=8, grad_scale=40.0, learning_rate=0.01)  # unclipped gradient norms ~12-16
ORDER = ("A working order for every batch: optimizer.zero_grad(), forward, loss, "
         "loss.backward(), clip_grad_norm_(model.parameters(), 1.0), optimizer.step().")


def _fail(message: str):
    pytest.fail(message, pytrace=False)


def model_api(submission) -> dict:
    """How the student's DecoderOnlyTransformer is called and what it returns (worker/adapt.py's
    ModelAPI as a dict), read once per grading; None (the template's API) when it could not be
    read, which costs no points: the failure is the attention's or the model's, graded elsewhere."""
    try:
        return submission.call_once("model_api", "reading the API of your DecoderOnlyTransformer "
                                 "(built with the grader's attention and RMSNorm)", SPEC["api_seconds"],
                                 vocab_size=VOCAB)
    except pytest.fail.Exception as failure:
        submission.note(f"{failure.msg}. The training checks' stand-in model therefore takes the "
                     "template's API: forward(input_ids, targets=None) -> (logits, loss)")
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


class Probe:
    """One call of train_epoch on the spies, and what can be read off its observations."""

    def __init__(self, submission, generator):
        self.actions = torch.randint(VOCAB, (BATCH * BATCHES, SEQ), generator=generator)
        states = torch.randn(BATCH * BATCHES, SEQ, STATE_DIM, generator=generator)
        self.api = model_api(submission)
        got = submission.call(Op.TRAIN_EPOCH, "train_epoch", states=states, actions=self.actions,
                           batch_size=BATCH, vocab_size=VOCAB, seed=0, api=self.api, **SPY)
        self.returned, self.returned_type = got["returned"], got["returned_type"]
        events = got["events"]
        self.forwards = [e for e in events if e["kind"] == "forward"]
        self.backwards = [e for e in events if e["kind"] == "backward"]
        if not self.forwards:
            _fail("train_epoch never called the model: loop over the dataloader and run the model "
                  "on every batch")
        grads = {}
        for backward in self.backwards:
            index = backward["forward"]
            grads[index] = backward["grad_logits"] + grads.get(index, 0)
        # The forwards that trained the model: those a loss was backpropagated through, or,
        # when nothing was, those given targets.
        self.trained = [(f, grads[i]) for i, f in enumerate(self.forwards) if i in grads]
        if not self.trained:
            self.trained = [(f, None) for f in self.forwards if f["targets"] is not None]
        self.steps = self._steps(events)

    @staticmethod
    def _steps(events) -> list:
        steps, pending = [], []
        for i, event in enumerate(events):
            if event["kind"] == "backward":
                pending.append(event)
            elif event["kind"] == "step":
                after = next(e["grad_norm"] for e in events[i + 1:] if e["kind"] in ("zero_grad", "end"))
                fresh = [_sum(b["fresh"][p] for b in pending) for p in range(len(event["grads"]))]
                steps.append(Step(event["grads"], event["optimizer"], event["given"],
                                  event["holds_model"], fresh, any(b["stale"] for b in pending), after))
                pending = []
        return steps

    def require_trained(self) -> list:
        if not self.trained:
            _fail("no loss was backpropagated through the model's logits and the model was never "
                  "given targets, so nothing was trained: compute the loss from the model's "
                  "output and call loss.backward()")
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
            targets = forward["targets"].reshape(forward["input_ids"].shape)
            return torch.ones_like(targets, dtype=torch.bool), targets, float(targets.numel())
        mask, targets = grad.ne(0).any(-1), grad.argmin(-1)
        p_target = forward["logits"].double().softmax(-1).gather(-1, targets[..., None])[..., 0]
        g_target = grad.double().gather(-1, targets[..., None])[..., 0]
        divisor = float((p_target[mask] - 1).sum() / g_target[mask].sum()) if mask.any() else 1.0
        return mask, targets, divisor

    def batch_losses(self):
        """Per training batch: (its mean cross-entropy over the positions in its loss, the
        summed cross-entropy as the student divided it)."""
        losses = []
        for forward, grad in self.require_trained():
            mask, targets, divisor = self.loss_terms(forward, grad)
            ce = F.cross_entropy(forward["logits"].double()[mask], targets[mask], reduction="none")
            losses.append((float(ce.mean()), float(ce.sum()) / divisor))
        return losses


def test_next_token_targets(submission, generator):
    probe = Probe(submission, generator)
    seen = []
    for number, (forward, grad) in enumerate(probe.require_trained(), start=1):
        ids = forward["input_ids"]
        found = probe.match(ids)
        if found is None:
            _fail(f"in training batch {number} the model read a tensor of shape {tuple(ids.shape)} "
                  "that is not a slice of the batch's actions: the model must read "
                  f"actions[:, :-1] (shape ({BATCH}, {SEQ - 1}))")
        index, offset = found
        actions = probe.actions.split(BATCH)[index]
        mask, targets, _ = probe.loss_terms(forward, grad)
        if not mask.any():
            _fail(f"in training batch {number} the loss did not depend on any position's logits")
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
        if torch.equal(targets[mask], ids[mask]):
            cause = ("no shift: the targets are the inputs themselves, so the model learns to copy "
                     "its input; use inputs = actions[:, :-1], targets = actions[:, 1:]")
        elif offset == 1 and torch.equal(targets[mask], actions[:, :ids.shape[1]][mask]):
            cause = ("shifted the wrong way: the model read actions[:, 1:] and predicted "
                     "actions[:, :-1]; use inputs = actions[:, :-1], targets = actions[:, 1:]")
        elif offset == 1:
            cause = "the model read actions[:, 1:]; it must read actions[:, :-1]"
        elif torch.equal(targets[mask], _ahead(actions, 2, ids.shape[1])[mask]):
            cause = _shifted_twice(probe.api)
        elif (wrong == 0 and len(ignored) == 1 and not (mask & ~wanted).any()
              and torch.equal(left_out, wanted & expected.eq(ignored))):
            token = int(ignored)
            last = (f" (the last id: this test's model has vocab_size {VOCAB})"
                    if token == VOCAB - 1 else "")
            where = ("DecoderOnlyTransformer.forward's loss"
                     if (probe.api or {}).get("ignore_index") == token else "the loss")
            cause = (f"the {int(left_out.sum())} positions whose target is token {token}{last}, and "
                     f"only those, are left out of {where}, as cross-entropy with ignore_index={token} "
                     f"does. Token {token} is a real action (every id from 0 to vocab_size - 1 is "
                     "an action bin; nothing is padded), so it is never learned: leave "
                     "ignore_index at its default")
        elif wrong == 0:
            cause = (f"the loss covers {int(mask.sum())} positions of this batch, expected all "
                     f"{BATCH} x {SEQ - 1} positions that have a next action (and not the last "
                     "position of a full-length input)")
        else:
            cause = (f"{wrong} of {int(mask.sum())} targets differ from actions[:, 1:]: the model "
                     "reads actions[:, :-1] and predicts actions[:, 1:], position by position")
        _fail(f"in training batch {number}: {cause}")
    if sorted(seen) != list(range(BATCHES)):
        _fail(f"train_epoch trained on batches {[i + 1 for i in seen]} of the dataloader's "
              f"{BATCHES}: train once on every batch, in one pass over the dataloader")


def _ahead(actions, shift: int, length: int):
    """actions[:, shift:shift + length], padded with -1 (no target) to `length` positions."""
    window = actions[:, shift:shift + length]
    return F.pad(window, (0, length - window.shape[1]), value=-1)


def _shifted_twice(api) -> str:
    """The cause when position t was trained towards action t + 2; `api` as model_api() says."""
    if api and api.get("shifts"):
        return ("the targets are shifted twice: position t was trained towards action t + 2. Your "
                "DecoderOnlyTransformer.forward shifts the targets itself (it scores logits[:, :-1] "
                "against targets[:, 1:]), and train_epoch passed targets shifted already "
                "(actions[:, 1:]): shift once, in train_epoch or in the model, not in both")
    return ("the targets are two steps ahead: position t was trained towards action t + 2 (as "
            "with targets = actions[:, 2:]); use inputs = actions[:, :-1], targets = actions[:, 1:]")


def _optimizer_misuse(steps) -> str:
    """Why the steps did not train the model with the optimizer passed in, or ''."""
    if not steps or any(step.given for step in steps):
        if any(not step.given for step in steps):
            other = next(step.optimizer for step in steps if not step.given)
            return (f"train_epoch stepped both the optimizer passed in and another one ({other}), "
                    "so the model took the steps of two optimizers: use only the `optimizer` argument")
        return ""
    names = " and ".join(sorted({step.optimizer for step in steps}))
    if all(step.holds_model for step in steps):
        stepped = f"an optimizer it created itself ({names})"
        consequence = "a new optimizer at every call also restarts its state each epoch"
    else:
        stepped = (f"an optimizer ({names}) that does not hold this model's parameters (one "
                   "created earlier, e.g. once at module level for another model, and kept)")
        consequence = "this model's parameters were never updated"
    return (f"train_epoch stepped {stepped}, not the optimizer passed in: the caller's optimizer "
            f"(its learning rate, its state, a scheduler attached to it) is ignored, and "
            f"{consequence}. Use the `optimizer` argument: optimizer.zero_grad() and "
            "optimizer.step()")


def test_gradients_zeroed_each_step(submission, generator):
    probe = Probe(submission, generator)
    if not probe.backwards:
        _fail("no gradient reached the model: call loss.backward() on a loss computed from the "
              "model's output. " + ORDER)
    # Before the stale gradients: an optimizer that is not the one passed in may clear
    # gradients that are not the model's, and that is the cause to name.
    misuse = _optimizer_misuse(probe.steps)
    if misuse:
        _fail(misuse + ".")
    stale = next((n for n, b in enumerate(probe.backwards, start=1) if b["stale"]), None)
    if stale is not None:
        _fail(f"gradients accumulate across batches: when loss.backward() ran for batch {stale}, "
              "the parameters' .grad still held earlier gradients. Call optimizer.zero_grad() "
              "every step, before loss.backward().")
    if not probe.steps:
        _fail("optimizer.step() was never called on the optimizer passed to train_epoch, so the "
              "model never changed. " + ORDER)
    if len(probe.steps) != len(probe.trained):
        _fail(f"optimizer.step() was called {len(probe.steps)} times for {len(probe.trained)} "
              "batches: take one step per batch")
    for number, step in enumerate(probe.steps, start=1):
        if not step.norm:
            cause = ("the gradients were cleared between loss.backward() and optimizer.step()"
                     if any(g is not None for g in step.fresh) else
                     "optimizer.step() ran before loss.backward()")
            _fail(f"optimizer.step() number {number} found no gradient on the parameters: {cause}, "
                  f"so the step did nothing. {ORDER}")


def test_gradient_norm_clipped(submission, generator):
    probe = Probe(submission, generator)
    steps = [step for step in probe.steps if step.norm]
    if not steps:
        _fail("the clipping could not be checked: optimizer.step() never ran with gradients on "
              "the parameters (see the test 'train_epoch clears gradients before every step of the "
              "optimizer it is given')")
    max_norm, tolerance = SPEC["max_norm"], SPEC["norm_tolerance"]
    # Before clipping, each batch's gradient norm is ~12-16 (more when gradients accumulate),
    # so after clipping it must be max_norm at every step.
    unclipped = [_norm(step.fresh) if not step.stale else None for step in steps]
    if all(abs(step.norm - max_norm) <= tolerance for step in steps):
        known = [n for n in unclipped if n is not None]
        submission.note(f"gradient norm at every optimizer.step(): {max_norm:g}"
                     + (f" (before clipping: {min(known):.3g} to {max(known):.3g})" if known else ""))
        return
    number, step, before = next((n, s, u) for n, (s, u) in enumerate(zip(steps, unclipped), 1)
                                if abs(s.norm - max_norm) > tolerance)
    norms = [s.norm for s in steps]
    measured = f"the gradient norm at optimizer.step() number {number} was {step.norm:.4g}"
    per_tensor = [g.double().norm() for g in step.grads if g is not None]
    largest = max(float(g.abs().max()) for g in step.grads if g is not None)
    if step.norm > max_norm and all(n <= max_norm + tolerance for n in per_tensor):
        cause = ("each parameter tensor was clipped on its own: clip the total norm of all "
                 "parameters at once with clip_grad_norm_(model.parameters(), max_norm=1.0)")
    elif before is not None and abs(step.norm - before) <= tolerance * before:
        if step.after is not None and abs(step.after - max_norm) <= tolerance:
            cause = ("the gradient is clipped after optimizer.step(), so the step used the "
                     "unclipped gradient: clip between loss.backward() and optimizer.step()")
        else:
            cause = ("the gradient was not clipped: call torch.nn.utils.clip_grad_norm_("
                     "model.parameters(), max_norm=1.0) between loss.backward() and "
                     "optimizer.step()")
    elif step.norm > max_norm and largest <= max_norm + tolerance:
        cause = ("the gradient entries were clipped to [-1, 1] (clip_grad_value_), which does not "
                 "bound the norm: use clip_grad_norm_(model.parameters(), max_norm=1.0)")
    elif max(norms) - min(norms) <= tolerance * max(norms):
        cause = (f"every step's gradient norm is {step.norm:.4g}: it was clipped to that norm "
                 "instead of 1.0; use max_norm=1.0")
    else:
        cause = ("the total gradient norm must be clipped to 1.0 at every step, with "
                 "clip_grad_norm_(model.parameters(), max_norm=1.0) between loss.backward() and "
                 "optimizer.step()")
    unclipped_text = f" (before clipping: {before:.4g})" if before is not None else ""
    _fail(f"{measured}{unclipped_text}, expected {max_norm:g}. Likely cause: {cause}.")


def test_train_mode(submission, generator):
    probe = Probe(submission, generator)
    forwards = [forward for forward, _ in probe.trained] or probe.forwards
    in_eval = sum(not forward["training"] for forward in forwards)
    if in_eval:
        _fail(f"the model was in eval mode for {in_eval} of {len(forwards)} training batches (the "
              "grader passes it in eval mode, as it is after evaluate()): call model.train() at "
              "the start of train_epoch, or dropout stays off while training")


def test_returns_mean_batch_loss(submission, generator):
    probe = Probe(submission, generator)
    losses = probe.batch_losses()
    means = [mean for mean, _ in losses]
    expected = sum(means) / len(means)
    got = probe.returned
    if got is None:
        _fail(f"train_epoch returned {'nothing (None)' if probe.returned_type == 'NoneType' else 'a ' + probe.returned_type}: "
              "return the mean of the batch losses as a Python float (sum loss.item() over the "
              "batches and divide by their number)")

    def close(value):
        return abs(got - value) <= SPEC["loss_rtol"] * abs(value)

    if close(expected):
        if probe.returned_type != "float":
            submission.note(f"train_epoch returned a {probe.returned_type}, accepted for its value; "
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
    cause = next((text for text, value in variants.items() if close(value)), "")
    _fail(f"train_epoch returned {got:.6g}; the mean of its {len(means)} batch losses was "
          f"{expected:.6g} (batch losses {', '.join(f'{m:.4f}' for m in means)})."
          + (f" It matches {cause}." if cause else ""))
