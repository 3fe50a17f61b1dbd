"""The training checks' recomputation (autograder/checks/training_evidence.py), in-process: the
worker's own train_epoch op runs a variant's train_epoch on the stand-in, and the grader's side
explains every step from the parameters alone. Seconds, not gradings: the end-to-end rows are in
test_grading.py (variants), test_cases.py and test_hostile.py (forged records)."""

import types

import pytest
import torch

from autograder.checks import training_evidence as evidence
from autograder.checks.adapters import read_train_epoch_reply
from autograder.worker.ops.training import run_train_epoch
from autograder.worker.session import Session
from grading import REFERENCE
from test_hostile import HOSTILE_DIR
from variants import VARIANTS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread, as the grader (cli.py) and the worker run: tiny tensors on several threads of
    a busy machine cost 20x more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _epoch(source: str) -> evidence.TrainedEpoch:
    module = types.ModuleType("backbone")
    exec(compile(source, "backbone.py", "exec"), module.__dict__)
    session = Session()
    session.module = module
    draw = evidence.draw()
    reply = run_train_epoch(session, states=draw.states, actions=draw.actions,
                            batch_size=evidence.BATCH, parameters=draw.parameters,
                            train_offset=draw.train_offset, grad_scale=evidence.GRAD_SCALE,
                            learning_rate=evidence.LEARNING_RATE)
    return evidence.TrainedEpoch(draw, None, read_train_epoch_reply(reply, draw.initial()))


def _variant(name: str) -> str:
    if name == "reference":
        with open(REFERENCE) as file:
            return file.read()
    return next(v for v in VARIANTS if v.name == name).source()


@pytest.mark.parametrize("name", ["reference", "training_micro_batches_accumulated",
                                  "training_per_batch_scheduler", "training_cross_entropy_class_dim_first"])
def test_correct_loops_are_reproduced_step_by_step(name):
    epoch = _epoch(_variant(name))
    assert epoch.broken() is None and not epoch.changed_after
    assert [f.kind for f in epoch.findings] == ["explained"] * evidence.BATCHES
    for number, finding in enumerate(epoch.findings):
        assert (finding.direction.batch, finding.direction.targets, finding.direction.train) == (
            number, evidence.NEXT, True)
        assert (finding.leftover, finding.transform) == (False, "clip")
        assert abs(finding.norm - 1.0) < 1e-6 < finding.raw_norm - 1.0


@pytest.mark.parametrize("name, finding", [
    ("training_no_clipping", lambda f: f.transform == "none"),
    ("training_clip_each_tensor", lambda f: f.transform == "per_tensor"),
    ("training_no_target_shift", lambda f: f.direction.targets.name == "same"),
    ("training_targets_two_ahead", lambda f: f.direction.targets.name == "two_ahead"),
    ("training_eval_mode", lambda f: not f.direction.train),
])
def test_each_bug_is_read_off_every_step(name, finding):
    epoch = _epoch(_variant(name))
    assert epoch.broken() is None
    assert len(epoch.updates) == evidence.BATCHES and all(finding(f) for f in epoch.updates)


def test_bugs_that_start_after_the_first_step_are_read_off_the_steps_they_touch():
    stale = _epoch(_variant("training_zero_grad_once_per_epoch")).updates
    assert [f.leftover for f in stale] == [False, True, True, True]
    modes = _epoch(_variant("training_eval_after_first_batch")).updates
    assert [f.direction.train for f in modes] == [True, False, False, False]


def test_an_optimizer_of_its_own_is_replayed_and_named():
    source = _variant("reference").replace(
        "    model.train()\n",
        "    model.train()\n    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)\n", 1)
    epoch = _epoch(source)
    assert epoch.broken() is None
    assert {(f.replay.kind, f.step.given, f.direction.targets) for f in epoch.updates} == {
        ("AdamW", False, evidence.NEXT)}


def test_forged_records_are_not_reproduced():
    with open(f"{HOSTILE_DIR}/forged_training_records.py") as file:
        attack = file.read()
    epoch = _epoch(f"{_variant('training_no_clipping')}\n\nHOSTILE = {{}}\n{attack}\n")
    assert epoch.broken() is not None
