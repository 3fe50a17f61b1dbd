"""Benchmark: the margins behind rubric.TRAINING.update_rtol and loss_rtol. Not a test.

    .venv/bin/python bench/training_margins.py [--draws 30]

For each of `draws` random draws (training_evidence.draw(), as a grading makes them), runs the
reference's train_epoch and a few correct alternatives in-process on the stand-in model with
SGD, records the parameters around every optimizer step, and measures, per step, the distance
(|recomputed - after| / |after - before|) of the right hypothesis and of the nearest wrong one
(any other batch, targets, mode or clipping), and the returned loss's relative error.
Prints the worst of each over all draws.
"""

import argparse
import contextlib
import importlib.util
import io
import os
import sys

import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, KIT)
sys.path.insert(0, os.path.join(KIT, "tests"))

from autograder.checks import training_evidence as evidence  # noqa: E402
from autograder.worker.known_good import TrainingStandIn  # noqa: E402
from variants import VARIANTS  # noqa: E402

CORRECT = ("reference", "training_micro_batches_accumulated", "training_cross_entropy_class_dim_first",
           "training_token_weighted_mean")


def _module(name: str):
    source = (open(os.path.join(KIT, "reference", "backbone.py")).read() if name == "reference"
              else next(v for v in VARIANTS if v.name == name).source())
    path = os.path.join("/tmp", f"margins_{name}.py")
    with open(path, "w") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location(f"margins_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Model(TrainingStandIn):
    def forward(self, input_ids, targets=None):
        logits = self.logits(input_ids)
        loss = None if targets is None else F.cross_entropy(logits.reshape(-1, evidence.VOCAB),
                                                            targets.reshape(-1))
        return logits, loss


def _steps(train_epoch, draw):
    p = draw.parameters
    model = _Model(p["embedding"], p["head"], p["bias"], draw.train_offset, evidence.GRAD_SCALE)
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=evidence.LEARNING_RATE)
    steps = []
    hooks = [register_optimizer_step_pre_hook(lambda *_: steps.append(
                 [t.detach().clone() for t in model.parameters()])),
             register_optimizer_step_post_hook(lambda *_: steps.append(
                 [t.detach().clone() for t in model.parameters()]))]
    loader = DataLoader(TensorDataset(draw.states, draw.actions), batch_size=evidence.BATCH)
    with contextlib.redirect_stdout(io.StringIO()):
        returned = train_epoch(model, loader, optimizer, torch.device("cpu"), 0)
    for hook in hooks:
        hook.remove()
    return list(zip(steps[::2], steps[1::2])), float(returned)


def measure(train_epoch, draw) -> tuple:
    """(worst distance of the right hypothesis, nearest distance of a wrong one, loss error)."""
    pairs, returned = _steps(train_epoch, draw)
    replay = evidence.Replay("SGD", {"lr": evidence.LEARNING_RATE})
    right, wrong, losses = 0.0, float("inf"), []
    for number, (before, after) in enumerate(pairs, start=1):
        theta, after = evidence._flat(before), evidence._flat(after)
        truth = evidence.Direction(number - 1, evidence.NEXT, True)
        present = set(draw.batch(number - 1)[:, 1:].flatten().tolist())
        computed = evidence.Losses(theta, draw)
        for direction in evidence._directions(number):
            if direction.targets.ignore is not None and direction.targets.ignore not in present:
                continue  # leaving out a token the batch's targets do not hold changes nothing
            loss, grads, n = computed(direction)
            if direction == truth:
                losses.append(loss)
            for name, transform in evidence.TRANSFORMS.items():
                distance = evidence._distance(replay.update(theta, transform(grads, n))[0], theta, after)
                if direction == truth and name == "clip":
                    right = max(right, distance)
                else:
                    wrong = min(wrong, distance)
    expected = sum(losses) / len(losses)
    return right, wrong, abs(returned - expected) / expected


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in CORRECT:
        train_epoch = _module(name).train_epoch
        worst = [0.0, float("inf"), 0.0]
        for _ in range(args.draws):
            right, wrong, loss = measure(train_epoch, evidence.draw())
            worst = [max(worst[0], right), min(worst[1], wrong), max(worst[2], loss)]
        print(f"{name:42} right <= {worst[0]:.2e}  nearest wrong >= {worst[1]:.2e}  "
              f"returned loss rel. error <= {worst[2]:.2e}  ({args.draws} draws)")


if __name__ == "__main__":
    main()
