"""Measure the Scratch-1 dataset and the convergence-check budget (a measurement, not a test).

    python bench/dataset.py [--json PATH] [--skip-training]

Prints: generation time for 10k x 50; the Bayes-optimal next-token loss (analytic, and the
oracle that knows the generative process, evaluated on held-out data); the loss of the best
current-token-only (bigram) model; the unigram entropy; and the convergence check of the small
reference config on 5 seeds, plus broken attention variants under the same budget. Training
runs single-threaded and is timed with time.process_time() (CPU seconds).
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "student"))
sys.path.insert(0, os.path.join(ROOT, "reference"))
import generate_data as gd  # noqa: E402
import backbone as ref  # noqa: E402

# The recommended convergence check (see bench/CONVERGENCE.md).
CHECK = dict(
    model=dict(vocab_size=256, dim=64, num_layers=2, num_heads=4, ff_hidden_dim=256,
               max_seq_len=50, dropout=0.0),
    seq_length=50, batch_size=32, lr=3e-3, weight_decay=0.0, steps=80,
    num_train=2000, num_val=500, data_seed=12345, seeds=[0, 1, 2, 3, 4],
)


def bigram_and_unigram(train, val, alpha=0.01):
    """Held-out loss of a count-based bigram P(next | current), and the unigram entropy."""
    counts = np.full((256, 256), alpha)
    np.add.at(counts, (train[:, :-1].ravel(), train[:, 1:].ravel()), 1.0)
    probs = counts / counts.sum(1, keepdims=True)
    bigram = -np.log(probs[val[:, :-1], val[:, 1:]]).mean()
    freq = np.bincount(train[:, 1:].ravel(), minlength=256) / train[:, 1:].size
    unigram = -(freq[freq > 0] * np.log(freq[freq > 0])).sum()
    return float(bigram), float(unigram)


def oracle_loss(val):
    """Bayes-optimal predictor from the generative process: copy the token 7 back with
    probability 1 - SWITCH_PROB, else any other level; uniform over levels before that."""
    m, p = gd.NUM_LEVELS, gd.SWITCH_PROB
    target, back = val[:, 1:], np.full(val[:, 1:].shape, -1)
    back[:, gd.NUM_JOINTS - 1:] = val[:, :-gd.NUM_JOINTS]
    prob = np.where(back < 0, 1.0 / m, np.where(target == back, 1 - p, p / (m - 1)))
    return float(-np.log(prob).mean())


# ---- broken attention variants (local monkeypatches of the reference attention) ----------

def _attention(self, x, mask, kind):
    b, s, d = x.shape
    q, k, v = self.qkv_proj(x).split(self.dim, dim=2)
    q, k, v = (t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
    if kind != "no_rope":
        q, k = self.rope(q, k)
    scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
    allowed = {"no_mask": torch.ones(s, s), "self_only": torch.eye(s),
               "no_rope": torch.tril(torch.ones(s, s))}[kind]
    scores = scores.masked_fill(allowed == 0, float("-inf"))
    out = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, s, d)
    return self.out_proj(out)


def build_model(variant, seed):
    torch.manual_seed(seed)
    model = ref.DecoderOnlyTransformer(**CHECK["model"])
    if variant != "correct":
        for block in model.blocks:
            block.attn.forward = (lambda x, mask=None, _a=block.attn:
                                  _attention(_a, x, mask, variant))
    return model


@torch.no_grad()
def honest_loss(model, actions):
    """Mean next-token loss where the prediction for position t+1 comes from a forward pass on
    the prefix actions[:, :t+1] only (so a model that peeks at the future gains nothing)."""
    model.eval()
    total = 0.0
    for t in range(actions.shape[1] - 1):
        logits = model(actions[:, :t + 1])[0][:, -1]
        total += F.cross_entropy(logits, actions[:, t + 1], reduction="sum").item()
    return total / (actions.shape[0] * (actions.shape[1] - 1))


def train_check(variant, seed, train, val):
    model = build_model(variant, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=CHECK["lr"],
                                  weight_decay=CHECK["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    batches = [(None, train[torch.randint(0, len(train), (CHECK["batch_size"],), generator=gen)])
               for _ in range(CHECK["steps"])]
    start = time.process_time()
    ref.train_epoch(model, batches, optimizer, torch.device("cpu"), 0)
    cpu = time.process_time() - start
    return dict(variant=variant, seed=seed, steps=CHECK["steps"], cpu_seconds=round(cpu, 2),
                honest_loss=round(honest_loss(model, val), 4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this path")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    res = dict(machine=f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
               date=time.strftime("%Y-%m-%d"), check=CHECK)

    start = time.perf_counter()
    gd.generate_dataset(10000, 50, seed=0)
    res["generate_10k_x_50_seconds"] = round(time.perf_counter() - start, 2)
    train = gd.generate_dataset(100000, 50, seed=1)["actions"].numpy()
    val = gd.generate_dataset(10000, 50, seed=2)["actions"].numpy()
    res["entropy_floor_analytic"] = round(gd.entropy_floor(50), 4)
    res["entropy_floor_oracle"] = round(oracle_loss(val), 4)
    res["bigram_loss"], res["unigram_entropy"] = (round(x, 4) for x in bigram_and_unigram(train, val))
    res["uniform_loss"] = round(math.log(256), 4)
    for key in ("generate_10k_x_50_seconds", "entropy_floor_analytic", "entropy_floor_oracle",
                "bigram_loss", "unigram_entropy", "uniform_loss"):
        print(f"{key:28s} {res[key]}")

    if not args.skip_training:
        data = gd.generate_dataset(CHECK["num_train"] + CHECK["num_val"], CHECK["seq_length"],
                                   seed=CHECK["data_seed"])["actions"]
        train_t, val_t = data[:CHECK["num_train"]], data[CHECK["num_train"]:]
        res["runs"] = []
        for variant in ("correct", "no_mask", "self_only", "no_rope"):
            for seed in CHECK["seeds"] if variant == "correct" else CHECK["seeds"][:2]:
                run = train_check(variant, seed, train_t, val_t)
                res["runs"].append(run)
                print(f"{variant:10s} seed {seed}  steps {run['steps']}  "
                      f"cpu {run['cpu_seconds']:5.2f}s  honest held-out loss {run['honest_loss']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
