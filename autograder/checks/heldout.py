"""The machinery of test_convergence.py: the honest held-out loss, measured from the worker's
answers to prefix-only requests, and the Verdict on a loss above the target.

The held-out loss is computed here, on the trusted side: the worker sees tokens 0..t-1 of a
held-out sequence when it predicts token t, and never token t before it has answered. A model
that peeks at the future during training, or memorises its training batches, gains nothing; and
since the sequences are drawn per grading from the grading's secret (dataset.py), none can be
looked up or regenerated either.
"""

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from .. import rubric
from ..verdict import Failed, Verdict
from .adapters import run_convergence_predict, run_trained_attention

SPEC = rubric.CONVERGENCE
STEPS = SPEC.epochs * (SPEC.data.train_sequences // SPEC.batch_size)  # optimizer steps
NEXT_TOKEN_TEST = "test_training.py::test_next_token_targets"
# Convergence grades the whole model trained by the student's train_epoch: a bug another
# category grades lowers this loss too, and that is fair, so the message says so (issue 19).
WHOLE_MODEL = ("This test trains your whole model with your train_epoch, so a bug that another "
               "category's tests grade also costs points here.")


def heldout_loss(submission, sequences: torch.Tensor) -> float:
    """Mean cross-entropy of token t given tokens < t, over every held-out position t >= 1."""
    total, count = 0.0, 0
    for t in range(1, sequences.shape[1]):
        logits = run_convergence_predict(submission, prefixes=sequences[:, :t],
                                         vocab_size=SPEC.model.vocab_size)
        total += float(F.cross_entropy(logits.double(), sequences[:, t], reduction="sum"))
        count += sequences.shape[0]
    return total / count


def _failed(graded: dict, categories, only=None, but=None) -> str:
    """The titles of the tests of these categories that failed earlier in this run, quoted (the
    first two, and how many more), or ''. This test's output is visible before the due date, so
    a failed test that is not is counted but not named."""
    failed = [rule for rule in rubric.RULES
              if rule.category in categories and graded.get(rule.test) is False
              and rule.test != but and only in (None, rule.test)]
    titles = [f"'{rule.name}'" for rule in failed if rule.visibility == "visible"]
    hidden = len(failed) - len(titles)
    if hidden:
        titles.append(f"{hidden} test{'s' * (hidden > 1)} shown after the due date")
    more = f" and {len(titles) - 2} more" if len(titles) > 2 else ""
    return "; ".join(titles[:2]) + more


def summary(train_losses, loss: float) -> str:
    """The held-out loss and the training losses, as every outcome of the check states them."""
    return (f"held-out next-token loss {loss:.3f} after {SPEC.epochs} epochs ({STEPS} steps); "
            f"your train_epoch returned {', '.join(f'{v:.3f}' for v in train_losses)}")


def heldout_verdict(train_losses, loss: float, graded: dict) -> Verdict:
    """The Verdict on a held-out loss above the target. A likely cause is named only when this
    run's evidence supports it: the measured losses, or the tests of the model and of
    train_epoch that failed earlier in the run (`graded`: rubric test -> passed). Without such
    evidence it says what was measured against what was expected."""
    target = SPEC.target_loss
    tiers = ", ".join(f"below {bound:g}: {share:.0%}" for bound, share in SPEC.tiers)
    verdict = Verdict(measured=summary(train_losses, loss), expected=f"below {target:g} (credit: {tiers})",
                      kind="property")
    if not math.isfinite(loss):
        return replace(verdict, cause="the loss became NaN or inf",
                       hint="Look for a division by zero or -inf in every score row.")
    if any(not math.isfinite(value) for value in train_losses):
        return replace(verdict, cause="train_epoch did not return finite losses (see the training "
                                      "tests), so the training could not be followed")
    first, last = train_losses[0], train_losses[-1]
    leak = ("the model sees future tokens while training, so it learns to read the answer "
            "instead of predicting it")
    evidence = {
        "targets": (_failed(graded, ("training",), only=NEXT_TOKEN_TEST),
                    "the training loss does not train every position towards its next action"),
        "mask": (_failed(graded, ("causal_mask",)),
                 leak if last < target <= loss else "the causal mask"),
        "training": (_failed(graded, ("training",), but=NEXT_TOKEN_TEST), "train_epoch's loop"),
        "attention": (_failed(graded, ("attention", "rope")), "the attention or its RoPE"),
        "rmsnorm": (_failed(graded, ("rmsnorm",)), "RMSNorm"),
    }
    order = ("mask", "targets", "training", "attention", "rmsnorm") if last < target <= loss else (
        "targets", "training", "mask", "attention", "rmsnorm")
    supported = [evidence[key] for key in order if evidence[key][0]]  # (tests, cause)
    if last < target <= loss:
        measured = (f"the loss your train_epoch returned fell to {last:.3f}, below {target:g}, "
                    "but the loss of predicting each action from the actions before it did not")
    elif last > 0.9 * first:
        measured = f"the training loss barely moved ({first:.3f} to {last:.3f})"
    else:
        measured = f"the training loss fell from {first:.3f} to {last:.3f}, not far enough"
    if supported:
        # The cause names the bug only, so that the TA report groups submissions by it; the
        # failed tests that support it are the hint's evidence.
        return replace(verdict, cause="; or ".join(cause for _, cause in supported),
                       hint=f"Failed earlier in this run: {'; '.join(tests for tests, _ in supported)}. "
                            f"Measured: {measured}. {WHOLE_MODEL}")
    upstream = [rule for rule in rubric.RULES if rule.test in graded and rule.category in
                ("rmsnorm", "causal_mask", "rope", "attention", "training")]
    if not upstream:
        return replace(verdict, hint=f"Measured: {measured}. No test of your model or train_epoch "
                                     "was graded in this run, so none points at a cause.")
    return replace(verdict, hint=f"Measured: {measured}. Every test of your model and train_epoch "
                                 "graded earlier in this run passed, so none of them points at a cause.")


def attention_maps(submission, tokens: torch.Tensor):
    """The trained model's attention weights for the figures, or None: never costs points."""
    try:
        return run_trained_attention(submission, tokens, SPEC.model.num_layers, SPEC.model.num_heads)
    except Failed as failure:
        submission.note("(does not affect your score) the attention maps could not be drawn: "
                        f"{failure.verdict.text()}")
        return None
