"""Benchmark: the convergence check's discrimination under a given budget. Not a test.

    .venv/bin/python bench/convergence.py [--train-sequences 1280] [--val-sequences 128]
                                          [--epochs 2] [--gradings 3 | --seeds HEX ...]
                                          [--variants correct no_mask ...] [--json FILE]

Replays the check as the grader runs it (autograder/worker/ops/convergence.py and
checks/test_convergence.py): data, model seed and shuffling drawn from a grading seed as a
grading draws them (autograder/dataset.py, grading_seed.py), a shuffled DataLoader of batch 32,
AdamW, the reference's train_epoch, and the honest held-out loss from prefix-only predictions;
for the reference and for broken attentions (bench/dataset.py's variants: no causal mask, each
position attending only to itself, no RoPE). Each of --gradings draws a fresh grading seed, as
every grading does (--seeds repeats given ones). Prints per variant and grading the held-out
loss and the CPU seconds of training and of the evaluation (one thread), then the spread per
variant, so a budget can be chosen that keeps every correct model far below the target and every
broken one far above, whatever the grading's data.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset as study  # noqa: E402  (bench/dataset.py: the reference and the broken variants)

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, KIT)
from autograder import dataset, grading_seed, rubric  # noqa: E402

SPEC = rubric.CONVERGENCE
VARIANTS = ("correct", "no_mask", "self_only", "no_rope")


def heldout_loss(model, sequences: torch.Tensor) -> float:
    """test_convergence.heldout_loss without the worker: token t from tokens < t only."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for t in range(1, sequences.shape[1]):
            logits = model(sequences[:, :t])[0][:, -1]
            total += float(F.cross_entropy(logits.double(), sequences[:, t], reduction="sum"))
    return total / (sequences.shape[0] * (sequences.shape[1] - 1))


def run(variant: str, grading: int, data: dict, epochs: int) -> dict:
    seed = grading_seed.integer(grading, "convergence/model", 32)  # as test_convergence draws it
    train = {"states": data["train_states"], "actions": data["train_actions"]}
    val = data["val_actions"]
    model = study.build_model(variant, seed)  # torch.manual_seed(seed), then the model
    optimizer = torch.optim.AdamW(model.parameters(), lr=SPEC.learning_rate)
    loader = DataLoader(TensorDataset(train["states"], train["actions"]), batch_size=SPEC.batch_size,
                        shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
    start = time.process_time()
    for epoch in range(epochs):
        study.ref.train_epoch(model, loader, optimizer, torch.device("cpu"), epoch)
    train_cpu = time.process_time() - start
    start = time.process_time()
    loss = heldout_loss(model, val)
    return {"variant": variant, "grading_seed": grading_seed.text(grading), "steps": epochs * len(loader),
            "heldout_loss": round(loss, 4),
            "train_cpu_s": round(train_cpu, 2), "eval_cpu_s": round(time.process_time() - start, 2)}


def main():
    sizes = SPEC.data
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-sequences", type=int, default=sizes.train_sequences)
    parser.add_argument("--val-sequences", type=int, default=sizes.val_sequences)
    parser.add_argument("--epochs", type=int, default=SPEC.epochs)
    parser.add_argument("--gradings", type=int, default=3, help="fresh grading seeds to draw")
    parser.add_argument("--seeds", nargs="+", default=[], help="grading seeds (hex) to repeat")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", help="also write the runs to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gradings = [grading_seed.parse(text) for text in args.seeds] or [
        grading_seed.draw() for _ in range(args.gradings)]
    runs = []
    for variant in args.variants:
        for grading in gradings:
            data = dataset.load(grading, args.train_sequences, args.val_sequences)
            runs.append(run(variant, grading, data, args.epochs))
            r = runs[-1]
            print(f"{variant:10s} grading {r['grading_seed']}  steps {r['steps']}  held-out loss "
                  f"{r['heldout_loss']:.4f}  train {r['train_cpu_s']:.2f} CPU-s  evaluation "
                  f"{r['eval_cpu_s']:.2f} CPU-s", flush=True)
    for variant in args.variants:
        losses = [r["heldout_loss"] for r in runs if r["variant"] == variant]
        print(f"{variant:10s} {len(losses)} gradings: held-out loss min {min(losses):.4f}  median "
              f"{statistics.median(losses):.4f}  max {max(losses):.4f}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"train_sequences": args.train_sequences, "val_sequences": args.val_sequences,
                       "epochs": args.epochs, "runs": runs}, file, indent=2)


if __name__ == "__main__":
    main()
