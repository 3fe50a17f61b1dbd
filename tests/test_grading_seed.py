"""The grading's secret (autograder/grading_seed.py): what the submission sees is new at every
grading, no part of it predicts another, and a TA can repeat a grading from its recorded seed."""

import json
import os
import subprocess
import sys

import pytest
import torch

from autograder import dataset, grading_seed
from grading import KIT
from variants import MUTANTS


def test_each_grading_draws_its_own_seed():
    assert len({grading_seed.draw() for _ in range(20)}) == 20


def test_the_seed_given_to_the_grader_is_the_one_used(monkeypatch):
    monkeypatch.setenv(grading_seed.ENVIRONMENT, "00ff")
    assert grading_seed.draw() == 255
    assert grading_seed.draw("0x10") == 16  # --seed wins over the environment
    assert grading_seed.parse(grading_seed.text(2**127 + 5)) == 2**127 + 5
    with pytest.raises(ValueError, match="hexadecimal"):
        grading_seed.parse("not a seed")


def test_generators_differ_by_purpose_and_beyond_torchs_32_bit_seed():
    def draw(seed, purpose="test_x.py::test_y"):
        return torch.randn(8, generator=grading_seed.generator(seed, purpose))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(7, "test_x.py::test_z"))
    # torch.Generator.manual_seed keeps only the low 32 bits: these two would collide there
    assert not torch.equal(draw(1), draw(1 + 2**32))


def test_heldout_data_is_new_per_grading_and_independent_of_the_training_data():
    first, again, other = dataset.load(1), dataset.load(1), dataset.load(2)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["val_actions"], other["val_actions"])
    assert not torch.equal(first["train_actions"], other["train_actions"])
    # drawn from their own seeds: the held-out set is not the training set's continuation
    train = first["train_actions"]
    assert not any(torch.equal(train[i], first["val_actions"][0]) for i in range(len(train)))


def test_a_bad_seed_stops_run_autograder_before_grading(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "autograder", "--submission", "x.py", "--results",
                                str(tmp_path / "r.json"), "--seed", "xyz"], cwd=KIT, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 2 and "hexadecimal" in completed.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_grading_repeated_with_its_seed_gives_the_same_results(tmp_path):
    """What a TA does to reproduce a student's grading, by --seed or by the grader's environment:
    the same inputs, so the same measured numbers in every message."""
    mutant = next(m for m in MUTANTS if m.name == "rmsnorm_eps_outside_sqrt")
    (tmp_path / "backbone.py").write_text(mutant.source())

    def outputs(name, seed_option=(), environment=None):
        command = [os.path.join(KIT, "run_autograder"), "--submission", str(tmp_path / "backbone.py"),
                   "--results", str(tmp_path / f"{name}.json"), "--only", "rmsnorm", *seed_option]
        subprocess.run(command, capture_output=True, timeout=600, env=dict(os.environ, **(environment or {})))
        document = json.loads((tmp_path / f"{name}.json").read_text())
        assert document["extra_data"]["grading_seed"] == grading_seed.text(0xA1B2C3)
        return [test["output"] for test in document["tests"] if test["tags"] == ["rmsnorm"]]

    first = outputs("first", ("--seed", "a1b2c3"))
    assert any("max abs error" in text for text in first), first  # numbers measured on the inputs
    assert outputs("again", environment={grading_seed.ENVIRONMENT: "0xa1b2c3"}) == first
