"""The convergence check names a likely cause only from the run's evidence: the outcomes of the
tests graded before it (GradingContext.graded), never from the losses' shape alone."""

from autograder import rubric
from autograder.checks.heldout import heldout_verdict

LEAK = ([2.0, 0.1], 3.0)  # training loss low, held-out loss high
STALLED = ([5.5, 5.4], 5.4)


def _graded(failed=()):
    """Every model and training test graded, passed except those in `failed`."""
    return {rule.test: rule.test not in failed for rule in rubric.RULES if rule.category != "convergence"}


def test_a_leak_blames_the_mask_only_when_a_causal_test_failed():
    message = heldout_verdict(*LEAK, _graded(["test_causal_mask.py::test_model_ignores_future_tokens"])).text()
    assert "Likely cause: the model sees future tokens" in message
    assert "The full model's logits" in message


def test_a_leak_with_every_causal_test_passed_blames_the_failed_targets_test():
    message = heldout_verdict(*LEAK, _graded(["test_training.py::test_next_token_targets"])).text()
    assert "Likely cause: the training loss does not train every position towards its next action" in message
    assert "future tokens" not in message and "mask" not in message


def test_without_failed_tests_the_message_states_only_what_was_measured():
    for losses in (LEAK, STALLED):
        message = heldout_verdict(*losses, _graded()).text()
        assert "Likely cause" not in message and "Measured: " in message
        assert "none of them points at a cause" in message
    assert "No test of your model or train_epoch was graded" in heldout_verdict(*STALLED, {}).text()


def test_a_hidden_test_that_supports_the_cause_is_counted_not_named():
    hidden = [rule for rule in rubric.RULES if rule.category == "causal_mask" and rule.visibility != "visible"]
    message = heldout_verdict(*LEAK, _graded([rule.test for rule in hidden])).text()
    assert "Likely cause: the model sees future tokens" in message
    assert f"{len(hidden)} tests shown after the due date" in message
    assert not any(rule.name in message for rule in hidden), message


def test_a_bug_graded_elsewhere_is_said_to_cost_points_here_too():
    """Convergence measures the whole model: a RoPE bug that lowers it is fairly charged here as
    well, and the message says so rather than that it costs points elsewhere only (issue 19)."""
    rope = [rule.test for rule in rubric.RULES if rule.category == "rope"]
    message = heldout_verdict(*STALLED, _graded(rope)).text()
    assert "Likely cause: the attention or its RoPE" in message
    assert "also costs points here" in message and "tests only" not in message
