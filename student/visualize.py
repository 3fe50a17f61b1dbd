"""Figures for your Scratch-1 report, from what `python backbone.py` saved.

    python visualize.py [--checkpoint checkpoints/last.pt] [--data data/trajectories.pkl]
                        [--out images] [--audit [--audit-sequences 256] [--audit-batches 30]]

Works from any checkpoint the training writes: by default checkpoints/last.pt (the newest
state, also after Ctrl-C or mid-epoch), else the latest checkpoints/epoch_N.pt. Writes to --out:
    loss_curve.png      the training loss of every step (and per epoch, with the validation
                        loss, once an epoch has finished), from checkpoints/loss_history.json
    attention_maps.png  the attention weights of every layer and head on one validation sequence
    causal_audit.png    with --audit, the causal-mask audit: the validation loss with and
                        without the mask

The attention maps are the weights YOUR CausalSelfAttention computes: they are read where the
template routes them (the input of self.attn_dropout, or else the output of the softmax). The
audit removes the mask by making torch.tril return all ones while the model runs, and trains a
copy of your model for --audit-batches batches that way (with your train_epoch); its losses are
measured on the first --audit-sequences validation sequences. The copy's training takes minutes
(the rest, seconds), so the audit runs only with --audit; the script prints its estimate first.
"""

import argparse
import contextlib
import copy
import glob
import json
import math
import os
import time

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import backbone  # noqa: E402
import generate_data  # noqa: E402

CPU = torch.device("cpu")
# The per-sequence loss of a trained model has a standard deviation of about 0.11 nats (measured
# on a correct model): the audit's losses on N sequences are within about 2 * 0.11 / sqrt(N).
SEQUENCE_LOSS_STD = 0.11


@contextlib.contextmanager
def patched(owner, name, replacement):
    """Temporarily replace owner.name (a function of torch) by `replacement`."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def mask_removed():
    """While active, torch.tril returns all ones: every causal mask built with it allows everything."""
    def ones(input, *args, **kwargs):
        return torch.ones_like(input)
    with patched(torch, "tril", ones), patched(torch.Tensor, "tril", ones):
        yield


def default_checkpoint(directory="checkpoints"):
    """checkpoints/last.pt (the newest state: written every --save-every steps, on Ctrl-C and at
    each epoch's end), else the latest epoch_N.pt."""
    last = os.path.join(directory, "last.pt")
    if os.path.exists(last):
        return last
    epochs = glob.glob(os.path.join(directory, "epoch_*.pt"))
    if not epochs:
        raise SystemExit(f"no {directory}/last.pt or {directory}/epoch_*.pt found: train first "
                         "with `python backbone.py` (Ctrl-C saves one), or pass --checkpoint PATH")
    return max(epochs, key=lambda path: int("".join(filter(str.isdigit, os.path.basename(path))) or 0))


def load_model(path):
    """(the model in eval mode, where the checkpoint's training stood, as words)."""
    checkpoint = torch.load(path, map_location=CPU, weights_only=True)
    model = backbone.DecoderOnlyTransformer(**checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    if "step_in_epoch" in checkpoint:  # last.pt: the position of the next batch
        at = f"epoch {checkpoint['epoch'] + 1}, step {checkpoint['step_in_epoch']}"
    else:
        at = f"after epoch {checkpoint.get('epoch', '?')}"
    return model.eval(), at


def plot_loss_curve(history_path, out):
    """The training loss of every step, and per finished epoch the training and validation loss
    (loss_history.json as `python backbone.py` writes it: {"epochs": [...], "steps": [[epoch,
    step, loss], ...]}). The x axis counts optimizer steps."""
    with open(history_path) as file:
        history = json.load(file)
    epochs, steps = history["epochs"], history["steps"]
    if not steps and not epochs:
        print(f"{history_path} holds no step yet: skipping the loss curve")
        return
    per_epoch = sum(1 for epoch, _, _ in steps if epoch == 0) if epochs else None
    plt.figure(figsize=(7, 4))
    if steps:
        x = [epoch * (per_epoch or 0) + step + 1 for epoch, step, _ in steps]
        losses = [loss for _, _, loss in steps]
        plt.plot(x, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (each step)")
        window = max(1, len(losses) // 50)
        if window > 1:
            smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                      for i in range(len(losses))]
            plt.plot(x, smooth, color="tab:blue", linewidth=1.2, label=f"train (mean of {window} steps)")
    if epochs and per_epoch:
        ends = [e["epoch"] * per_epoch for e in epochs]
        plt.plot(ends, [e["train_loss"] for e in epochs], "o", color="navy", label="train (epoch mean)")
        plt.plot(ends, [e["val_loss"] for e in epochs], "s-", color="tab:orange", label="validation")
    plt.axhline(1.0, color="gray", linestyle=":", label="target: 1.0")
    plt.gca().xaxis.set_major_locator(MaxNLocator(integer=True))
    plt.xlabel("optimizer step" + (f" ({per_epoch} per epoch)" if per_epoch else ""))
    plt.ylabel("next-token loss (nats)")
    if epochs:
        last = epochs[-1]
        plt.title(f"Training: validation loss {last['val_loss']:.3f} (perplexity "
                  f"{math.exp(last['val_loss']):.2f}) after {last['epoch']} epochs, {last['seconds']:.0f} s")
        summary = f"validation loss {last['val_loss']:.4f} after {last['epoch']} epochs"
    else:
        recent = losses[-min(len(losses), 20):]
        plt.title(f"Training in progress: {len(steps)} steps, no finished epoch yet\n"
                  f"(mean training loss of the last {len(recent)} steps: {sum(recent) / len(recent):.3f})")
        summary = f"{len(steps)} steps, no finished epoch yet (no validation loss)"
    plt.legend()
    plt.savefig(out, dpi=120, bbox_inches="tight")
    plt.close()
    print(f"wrote {out}: {summary}")


@torch.no_grad()
def attention_weights(model, ids):
    """(layers, heads, seq, seq) attention weights of the model on ids (1, seq), or None."""
    maps = []
    hooks = [block.attn.attn_dropout.register_forward_hook(lambda _m, inputs, _o: maps.append(inputs[0]))
             for block in model.blocks if hasattr(block.attn, "attn_dropout")]
    model(ids)
    for hook in hooks:
        hook.remove()
    if len(maps) != len(model.blocks):  # weights not passed through attn_dropout: catch the softmax
        maps.clear()
        softmax = torch.softmax

        def recording(*args, **kwargs):
            maps.append(softmax(*args, **kwargs))
            return maps[-1]
        with patched(torch, "softmax", recording), patched(F, "softmax", recording):
            model(ids)
    seq = ids.shape[1]
    maps = [m[0] for m in maps if m.dim() == 4 and m.shape[-2:] == (seq, seq)]
    return torch.stack(maps) if len(maps) == len(model.blocks) else None


def plot_attention(maps, out):
    """One heat map per layer and head: row = the query position, column = the key position it
    attends to, colour = the attention weight (each row sums to 1)."""
    layers, heads, seq = maps.shape[:3]
    fig, axes = plt.subplots(layers, heads, figsize=(1.9 * heads + 1, 1.9 * layers + 0.6),
                             squeeze=False, constrained_layout=True)
    ticks = list(range(0, seq, 10))
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            image = ax.imshow(maps[layer, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.tick_params(labelsize=6, length=2)
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}\nquery position", fontsize=8)
            if layer == layers - 1:
                ax.set_xlabel("key position", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    future = float(maps.triu(1).sum(-1).max())
    fig.suptitle("Where each position looks: attention weights on one validation sequence\n"
                 f"(a causal model leaves everything above the diagonal dark; largest weight on "
                 f"future positions: {future:.2g})", fontsize=10)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}: {layers} layers x {heads} heads; weight on future keys {future:.2g}")


@torch.no_grad()
def sees_future(model, ids):
    """Whether the logits at position 0 change when the last token changes."""
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % model.vocab_size
    return not torch.allclose(model(ids)[0][:, 0], model(changed)[0][:, 0], atol=1e-6)


class Progress:
    """The batches of `batches`, printing `what` with a count and the time left as they go
    (train_epoch and evaluate take it as their dataloader)."""

    def __init__(self, batches, what):
        self.batches, self.what = batches, what

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        start = time.time()
        for index, batch in enumerate(self.batches):
            yield batch
            left = (time.time() - start) / (index + 1) * (len(self.batches) - index - 1)
            print(f"\r  {self.what}: {index + 1}/{len(self.batches)} batches, {left:.0f} s left   ",
                  end="", flush=True)
        print()


def seconds_per_batch(model, batch):
    """The wall seconds of one evaluation forward pass on `batch` (the second of two runs)."""
    with torch.no_grad():
        model(batch[1][:, :-1], batch[1][:, 1:])
        start = time.time()
        model(batch[1][:, :-1], batch[1][:, 1:])
    return time.time() - start


def causal_audit(model, train_loader, val_batches, ids, num_batches, out):
    with mask_removed():
        if not sees_future(model, ids):
            print("causal audit skipped: removing torch.tril did not remove your mask (does your "
                  "attention build it another way?)")
            return
    # four evaluations, and training: a forward and a backward pass, about three forwards
    estimate = seconds_per_batch(model, val_batches[0]) * (4 * len(val_batches) + 3 * num_batches)
    sequences = sum(len(actions) for _, actions in val_batches)
    print(f"causal audit: {num_batches} training batches without the mask, losses on {sequences} "
          f"validation sequences; about {estimate:.0f} s (--audit-batches, --audit-sequences)")
    with mask_removed():
        peeking = backbone.evaluate(model, Progress(val_batches, "your model, mask removed"), CPU)
    honest = backbone.evaluate(model, Progress(val_batches, "your model, with the mask"), CPU)
    # A copy trained briefly without the mask learns to read the answer from the next position.
    cheater = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(cheater.parameters(), lr=1e-3)
    batches = [batch for _, batch in zip(range(num_batches), train_loader)]
    with mask_removed():
        backbone.train_epoch(cheater, Progress(batches, "training a copy without the mask"), optimizer, CPU, 0)
        cheating = backbone.evaluate(cheater, Progress(val_batches, "that copy, mask removed"), CPU)
    cheater_honest = backbone.evaluate(cheater, Progress(val_batches, "that copy, mask put back"), CPU)
    floor = generate_data.entropy_floor(ids.shape[1] + 1)

    bars = {"your model\nwith mask": honest, "your model\nmask removed": peeking,
            f"trained {num_batches} batches\nwithout mask": cheating,
            "same, mask\nput back": cheater_honest}
    plt.figure(figsize=(7, 4))
    plt.bar(list(bars), list(bars.values()), color=["tab:green", "tab:orange", "tab:red", "tab:gray"])
    plt.axhline(floor, color="black", linestyle="--", label=f"best possible honest loss ({floor:.3f})")
    plt.ylabel("validation loss (nats)")
    plt.title(f"Causal-mask audit ({sequences} validation sequences)")
    plt.legend()
    plt.savefig(out, dpi=120, bbox_inches="tight")
    plt.close()
    print(f"wrote {out}\ncausal audit (validation loss, nats, on {sequences} sequences: about "
          f"+-{2 * SEQUENCE_LOSS_STD / math.sqrt(sequences):.2f}):")
    for name, value in bars.items():
        print(f"  {name.replace(chr(10), ' '):<36} {value:.4f}")
    print(f"  best possible without seeing the future  {floor:.4f}  (the expected loss of the "
          "ideal predictor; a finite validation set can land a little below it by chance)")
    if cheating < floor:
        print("A model that can see the future cheats: trained without the mask it scores below what\n"
              "any honest predictor can reach, by copying the next token from its input; with the mask\n"
              "put back (as in generation, where the future does not exist yet) it is much worse.\n"
              "Your own model never learned to use the future, so removing its mask only feeds it\n"
              "inputs it was not trained on.")
    else:
        print(f"The copy trained without the mask has not learned to cheat yet after {num_batches} "
              "batches: run again with a larger --audit-batches.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a file that python backbone.py wrote: "
                        "checkpoints/last.pt (the default when it exists) or checkpoints/epoch_N.pt")
    parser.add_argument("--data", default="data/trajectories.pkl")
    parser.add_argument("--out", default="images")
    parser.add_argument("--audit", action="store_true",
                        help="also run the causal-mask audit (trains a copy of your model: minutes)")
    parser.add_argument("--audit-sequences", type=int, default=256,
                        help="validation sequences the causal audit measures its losses on "
                             "(default 256; more for a tighter estimate, slower)")
    parser.add_argument("--audit-batches", type=int, default=30,
                        help="training batches for the no-mask model of the causal audit")
    args = parser.parse_args()
    if args.audit_sequences < 1 or args.audit_batches < 1:
        parser.error("--audit-sequences and --audit-batches must be at least 1")
    start = time.time()
    checkpoint = args.checkpoint or default_checkpoint()
    if not os.path.exists(args.data):
        raise SystemExit(f"{args.data} not found: run `python generate_data.py` first (or pass --data PATH)")
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)

    history = os.path.join(os.path.dirname(checkpoint), "loss_history.json")
    print(f"[1/3] loss curve from {history}")
    if os.path.exists(history):
        plot_loss_curve(history, os.path.join(args.out, "loss_curve.png"))
    else:
        print(f"no {history}: skipping the loss curve")

    model, at = load_model(checkpoint)
    print(f"[2/3] attention maps of {checkpoint} ({at})")
    train_loader, val_loader = generate_data.create_dataloaders(args.data, batch_size=32)
    val_batches, room = [], args.audit_sequences  # the first --audit-sequences validation sequences
    for states, actions in val_loader:
        if room <= 0:
            break
        val_batches.append((states[:room], actions[:room]))
        room -= len(val_batches[-1][1])
    ids = val_batches[0][1][:1, :-1]  # the first validation sequence, as the model reads it
    maps = attention_weights(model, ids)
    if maps is None:
        print("attention maps skipped: could not read the weights (pass them through "
              "self.attn_dropout as the template does)")
    else:
        plot_attention(maps, os.path.join(args.out, "attention_maps.png"))
    if args.audit:
        print("[3/3] causal audit")
        causal_audit(model, train_loader, val_batches, ids, args.audit_batches,
                     os.path.join(args.out, "causal_audit.png"))
    else:
        print("[3/3] causal audit skipped: `python visualize.py --audit` runs it (it trains a "
              "copy of your model without the mask, which takes minutes)")
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
