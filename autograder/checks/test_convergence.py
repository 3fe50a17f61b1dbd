"""convergence: the student's model, trained by the student's train_epoch on data drawn for this
grading, reaches an honest held-out next-token loss (measured from prefix-only requests; see
heldout.py for how, and for what a failure says)."""

from dataclasses import asdict

import pytest

from .. import dataset, grading_seed
from ..verdict import fail
from . import margin
from .adapters import run_convergence_train
from .heldout import SPEC, attention_maps, heldout_loss, heldout_verdict, summary


def test_heldout_loss(submission, credit, grading_data, context, extra):
    trained = run_convergence_train(
        submission, config=SPEC.model.kwargs(), seed=grading_seed.integer(context.seed, "convergence/model", 32),
        states=grading_data["train_states"], actions=grading_data["train_actions"],
        batch_size=SPEC.batch_size, epochs=SPEC.epochs, learning_rate=SPEC.learning_rate)
    # train_epoch's own return value is judged in training; here a non-number only shows as nan
    train_losses = [float("nan") if value is None else float(value) for value in trained.epoch_losses]
    # The figures' channel (see cli.GradingContext.figures): raw numbers, drawn after grading.
    context.figures["loss"] = dict(step_losses=trained.step_losses, epoch_losses=train_losses,
                                   target=SPEC.target_loss)
    loss = heldout_loss(submission, grading_data["val_actions"])
    fraction = next((share for bound, share in SPEC.tiers if loss < bound), 0.0)
    extra[margin.KEY] = margin.at_most(loss, SPEC.target_loss, "held-out loss <= target (full marks)")
    credit.set(fraction)
    context.figures["loss"]["heldout_loss"] = loss
    maps = attention_maps(submission, grading_data["val_actions"][:1])
    context.figures["attention"] = asdict(maps) if maps is not None else None
    if fraction < 1.0:
        fail(heldout_verdict(train_losses, loss, context.graded))
    submission.note(summary(train_losses, loss))


@pytest.fixture
def grading_data(context):
    """This grading's training and held-out sequences (dataset.py)."""
    return dataset.load(context.seed)
