"""
Scratch-1: The Transformer Backbone.

A decoder-only Transformer that predicts the next tokenised action of a 7-DOF robot arm.
Complete the three TODOs:

    TODO 1  RMSNorm.forward
    TODO 2  CausalSelfAttention.forward   (multi-head, causal mask, RoPE on Q and K)
    TODO 3  train_epoch

Everything else is provided. Run `python backbone.py` to train on data/trajectories.pkl
(make it first with `python generate_data.py`).
"""

import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root Mean Square normalisation (Zhang & Sennrich, 2019).

    RMS(x) = sqrt(mean(x^2) + eps) over the last dimension; output = x / RMS(x) * scale.
    Unlike LayerNorm there is no mean subtraction and no bias.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))  # learnable gain, shape (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., dim) -> (..., dim)
        # TODO 1 (RMSNorm): compute the root mean square of x over its last dimension, with eps
        # added inside the square root, divide x by it, and multiply by self.scale.
        # BEGIN SOLUTION
        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return x / rms * self.scale
        # END SOLUTION


class RotaryPositionalEmbedding(nn.Module):
    """Rotary positional embedding (Su et al., RoFormer), "rotate-half" pairing.

    Dimension i is rotated together with dimension i + dim/2 by the angle position * theta_i,
    theta_i = base^(-2i/dim). The dot product of a rotated query at position m and a rotated
    key at position n then depends on the positions only through m - n.
    """

    def __init__(self, dim: int, max_seq_len: int = 2048, base: float = 10000.0):
        super().__init__()
        assert dim % 2 == 0, "RoPE needs an even head dimension"
        self.dim = dim
        self.max_seq_len = max_seq_len
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))  # (dim/2,)
        positions = torch.arange(max_seq_len).float()  # (max_seq_len,)
        angles = torch.outer(positions, inv_freq)  # (max_seq_len, dim/2)
        angles = torch.cat([angles, angles], dim=-1)  # (max_seq_len, dim)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    @staticmethod
    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([-x2, x1], dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor):
        # q, k: (batch, heads, seq, head_dim) -> same shapes, rotated by position
        seq_len = q.shape[-2]
        cos = self.cos_cached[:seq_len].to(q.dtype)  # (seq, head_dim)
        sin = self.sin_cached[:seq_len].to(q.dtype)
        q_rot = q * cos + self.rotate_half(q) * sin
        k_rot = k * cos + self.rotate_half(k) * sin
        return q_rot, k_rot


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends only to positions <= t."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        assert dim % num_heads == 0, "dim must be divisible by num_heads"
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)  # rows: [W_q; W_k; W_v]
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = RotaryPositionalEmbedding(self.head_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """x: (batch, seq, dim) -> (batch, seq, dim).

        mask: optional (seq, seq) tensor, 1 where attention is allowed and 0 where it is not.
        When no mask is passed the attention must still be causal: this module is used on its
        own, and its name promises it.
        """
        # TODO 2 (CausalSelfAttention): project x to queries, keys and values with qkv_proj
        # (split in that order), split them into heads of size head_dim, apply self.rope to
        # the queries and keys (not the values), compute scaled dot-product scores, mask out
        # every key position after the query position, softmax over the keys, apply
        # attn_dropout, combine the values, merge the heads, and project with out_proj
        # (then resid_dropout).
        # BEGIN SOLUTION
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv_proj(x).split(self.dim, dim=2)  # 3 x (batch, seq, dim)
        q = q.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)  # (b, h, s, hd)
        k = k.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        q, k = self.rope(q, k)

        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (b, h, s, s)
        if mask is None:
            mask = torch.tril(torch.ones(seq_len, seq_len, device=x.device))
        scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = self.attn_dropout(F.softmax(scores, dim=-1))

        out = weights @ v  # (b, h, s, hd)
        out = out.transpose(1, 2).contiguous().view(batch, seq_len, dim)
        return self.resid_dropout(self.out_proj(out))
        # END SOLUTION


class FeedForward(nn.Module):
    """SwiGLU feed-forward network: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.1):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, seq, dim) -> (batch, seq, dim)
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + ff(norm(x))."""

    def __init__(self, dim: int, num_heads: int, ff_hidden_dim: int, dropout: float = 0.1):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, dropout)
        self.norm2 = RMSNorm(dim)
        self.ff = FeedForward(dim, ff_hidden_dim, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        x = x + self.ff(self.norm2(x))
        return x


class DecoderOnlyTransformer(nn.Module):
    """Token embedding -> N Transformer blocks -> RMSNorm -> linear head over the vocabulary."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        num_layers: int,
        num_heads: int,
        ff_hidden_dim: int,
        max_seq_len: int = 2048,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(
            [TransformerBlock(dim, num_heads, ff_hidden_dim, dropout) for _ in range(num_layers)]
        )
        self.norm_final = RMSNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor = None):
        """input_ids: (batch, seq) token ids; targets: (batch, seq) next-token ids or None.

        Returns (logits, loss): logits (batch, seq, vocab_size); loss the mean cross-entropy
        over all positions, or None without targets.
        """
        seq_len = input_ids.shape[1]
        if seq_len > self.max_seq_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_seq_len {self.max_seq_len}")
        mask = torch.tril(torch.ones(seq_len, seq_len, device=input_ids.device))
        x = self.token_embedding(input_ids)  # (batch, seq, dim)
        for block in self.blocks:
            x = block(x, mask)
        logits = self.lm_head(self.norm_final(x))  # (batch, seq, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = None) -> torch.Tensor:
        """Sample max_new_tokens tokens after input_ids (batch, seq); returns (batch, seq + new).

        top_k=1 samples the most likely token every time (greedy decoding).

        Optional, the course's mastery bonus: a key/value cache. Add it as a keyword of this
        method, generate(..., use_cache=True), or as a method named like generate_cached with the
        same arguments (or make generate itself cache). The autograder finds it by watching it run
        (after the prompt, each step must feed attention the new token only) and checks that it
        keeps this contract; tests/test_sanity.py runs the same comparison on your model:
          - same arguments and return value as generate; top_k=1 makes it greedy;
          - the prompt runs through the model once, with the causal mask, filling each layer's
            cache; every later step feeds only the newest token (batch, 1);
          - a new token's query and key are rotated by RoPE at the token's true position (the
            number of positions already cached); cached keys are stored rotated, never rotated
            again;
          - greedy decoding through it gives the same tokens, and at every step the same logits
            (up to float rounding), as decoding by full forward passes, for every prompt length
            from 1 and batch size, while prompt + new tokens fit in max_seq_len.
        """
        for _ in range(max_new_tokens):
            context = input_ids[:, -self.max_seq_len:]
            logits, _ = self(context)
            logits = logits[:, -1, :] / temperature  # (batch, vocab)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            input_ids = torch.cat([input_ids, next_id], dim=1)
        return input_ids


def train_epoch(model: nn.Module, dataloader, optimizer: torch.optim.Optimizer,
                device: torch.device, epoch: int) -> float:
    """Train for one epoch of next-token prediction and return the mean batch loss (a float).

    Each batch is (states, actions) with actions (batch, seq) of token ids. The model reads
    actions[:, :-1] and predicts actions[:, 1:].
    """
    # TODO 3 (train_epoch): put the model in training mode; for every batch, split the actions
    # into inputs and next-token targets, clear the old gradients, compute the loss, backpropagate,
    # clip the gradient norm to 1.0, and take an optimizer step. Return the mean of the batch
    # losses as a Python float.
    # BEGIN SOLUTION
    model.train()
    total_loss, num_batches = 0.0, 0
    for _states, actions in dataloader:
        actions = actions.to(device)
        inputs, targets = actions[:, :-1], actions[:, 1:]  # (batch, seq - 1) each
        optimizer.zero_grad()
        _, loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        total_loss += loss.item()
        num_batches += 1
    return total_loss / max(num_batches, 1)
    # END SOLUTION


@torch.no_grad()
def evaluate(model: nn.Module, dataloader, device: torch.device) -> float:
    """Mean next-token loss over a dataloader, in eval mode."""
    model.eval()
    total_loss, num_batches = 0.0, 0
    for _states, actions in dataloader:
        actions = actions.to(device)
        _, loss = model(actions[:, :-1], actions[:, 1:])
        total_loss += loss.item()
        num_batches += 1
    return total_loss / max(num_batches, 1)


class TrainingRun:
    """What `python backbone.py` keeps between steps: the batch order, the checkpoints and the
    per-step loss history, so an interrupted run resumes at the exact step it stopped at.

    The training batches of epoch e come in an order fixed by (seed, e), so a resumed run sees
    the same batches as an uninterrupted one; `last.pt` (full state: model, optimizer, random
    number generators, position in the epoch) is written every `save_every` steps and at each
    epoch's end; `epoch_N.pt` holds only the model's weights (small, for visualize.py).
    """

    def __init__(self, args, model, optimizer, device, config):
        self.args, self.model, self.optimizer, self.device = args, model, optimizer, device
        self.config = config
        self.directory = args.checkpoints
        self.last = os.path.join(self.directory, "last.pt")
        self.epoch, self.step_in_epoch = 0, 0  # the next batch to train on
        self.epochs, self.steps = [], []  # per-epoch summaries; per-step training losses
        self.stop_requested = False
        self._loss = None

    # -- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "config": self.config, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                 "epochs": self.epochs, "steps": self.steps, "code": source_fingerprint(),
                 "cpu_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def save(self) -> None:
        """Write last.pt atomically (an interrupted write never destroys the previous one)."""
        os.makedirs(self.directory, exist_ok=True)
        torch.save(self.state(), self.last + ".tmp")
        os.replace(self.last + ".tmp", self.last)
        with open(os.path.join(self.directory, "loss_history.json"), "w") as f:
            json.dump({"epochs": self.epochs, "steps": self.steps}, f)

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.epochs, self.steps = state["epochs"], state["steps"]
        torch.set_rng_state(state["cpu_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- one epoch ----------------------------------------------------------------------------

    def batches(self, dataset) -> "EpochBatches":
        """This epoch's training batches, from step_in_epoch on, for train_epoch."""
        return EpochBatches(self, dataset)

    def _record_loss(self, module, inputs, output):
        if module.training and isinstance(output, tuple) and len(output) > 1 \
                and isinstance(output[1], torch.Tensor):
            self._loss = output[1].item()

    def end_epoch(self, returned_loss: float, val_loss: float, seconds: float, first_step: int):
        """Record the epoch (its training loss is what train_epoch returned, combined with the
        steps before a resume), save the full state and the small epoch_N.pt."""
        total = self.step_in_epoch
        before = [loss for epoch, step, loss in self.steps if epoch == self.epoch and step < first_step]
        if first_step and len(before) == first_step:  # train_epoch saw only the steps after the resume
            returned_loss = (sum(before) + returned_loss * (total - first_step)) / total
        self.epochs.append(dict(epoch=self.epoch + 1, train_loss=returned_loss,
                                train_perplexity=math.exp(min(returned_loss, 50)),
                                val_loss=val_loss, val_perplexity=math.exp(min(val_loss, 50)),
                                seconds=seconds))
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.save()
        torch.save({"model": self.model.state_dict(), "config": self.config, "epoch": self.epoch},
                   os.path.join(self.directory, f"epoch_{self.epoch}.pt"))


class EpochBatches:
    """The batches of run.epoch in the order fixed by (seed, epoch), from run.step_in_epoch on,
    with a progress line. When the training loop asks for the next batch, the previous step is
    done: it is recorded, and a checkpoint is saved every save_every steps or on Ctrl-C."""

    def __init__(self, run: TrainingRun, dataset):
        self.run, self.dataset = run, dataset
        size = run.args.batch_size
        self.total = (len(dataset) + size - 1) // size

    def __len__(self):
        return self.total - self.run.step_in_epoch

    def __iter__(self):
        run, size = self.run, self.run.args.batch_size
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(
            run.args.seed * 1000 + run.epoch))
        hook = run.model.register_forward_hook(run._record_loss)
        start, first = time.time(), run.step_in_epoch
        try:
            for step in range(first, self.total):
                run._loss = None
                yield self.dataset[order[step * size:(step + 1) * size]]
                run.step_in_epoch = step + 1
                if run._loss is not None:
                    run.steps.append([run.epoch, step, run._loss])
                self._progress(step, (time.time() - start) / (step + 1 - first))
                if run.stop_requested:
                    run.save()
                    raise Interrupted
                if run.step_in_epoch % run.args.save_every == 0:
                    run.save()
        finally:
            hook.remove()
            print()

    def _progress(self, step: int, seconds_per_step: float) -> None:
        loss = self.run._loss
        shown = f"  loss {loss:.3f}  ppl {math.exp(min(loss, 50)):.2f}" if loss is not None else ""
        print(f"\repoch {self.run.epoch + 1}/{self.run.args.epochs} "
              f"[{'#' * (20 * (step + 1) // self.total):<20}] {step + 1}/{self.total}  "
              f"eta {seconds_per_step * (self.total - step - 1):.0f}s{shown}   ", end="", flush=True)


class Interrupted(Exception):
    """Raised at a step boundary after Ctrl-C, once the checkpoint is saved."""


def source_fingerprint() -> str:
    """A hash of this file, to tell a student who resumes that their code changed since."""
    import hashlib
    with open(os.path.abspath(__file__), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def parse_args(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Train the Scratch-1 backbone on tokenised "
                                                 "robot-arm trajectories.")
    parser.add_argument("--data", default="data/trajectories.pkl", help="dataset from generate_data.py")
    parser.add_argument("--checkpoints", default="checkpoints", help="folder for checkpoints and "
                        "loss_history.json (default: checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in "
                        "CHECKPOINTS/last.pt (without it, training starts from scratch)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--save-every", type=int, default=200, metavar="STEPS",
                        help="steps between checkpoints of the full state (default 200)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch "
                        "(default: half the cores, at most 4; more threads often run slower on a "
                        "busy laptop)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    import signal
    from generate_data import create_dataloaders

    args = parse_args(argv)
    config = dict(vocab_size=256, dim=256, num_layers=4, num_heads=8, ff_hidden_dim=1024,
                  max_seq_len=50, dropout=0.1)
    learning_rate = 3e-4

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads or max(1, min(4, (os.cpu_count() or 2) // 2)))
    if not os.path.exists(args.data):
        raise SystemExit(f"{args.data} not found: run `python generate_data.py` first "
                         "(or pass --data PATH).")
    train_loader, val_loader = create_dataloaders(args.data, batch_size=args.batch_size, seed=args.seed)
    torch.manual_seed(args.seed)
    model = DecoderOnlyTransformer(**config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    run = TrainingRun(args, model, optimizer, device, config)

    if args.resume and os.path.exists(run.last):
        state = torch.load(run.last, map_location=device, weights_only=True)
        run.restore(state)
        print(f"resuming {run.last}: epoch {run.epoch + 1}, step {run.step_in_epoch}")
        if state.get("code") != source_fingerprint():
            print("note: backbone.py changed since this checkpoint was written; its weights are "
                  "resumed anyway (drop --resume to start over with your new code)")
    elif args.resume:
        print(f"nothing to resume in {args.checkpoints}/: starting a fresh run")
    elif os.path.exists(run.last):
        print(f"starting a fresh run; the earlier run in {args.checkpoints}/ will be overwritten "
              "(pass --resume to continue it instead)")
    if run.epoch >= args.epochs:
        print(f"the run in {args.checkpoints}/ already finished its {run.epoch} epochs: nothing to "
              "do (raise --epochs to train longer, or drop --resume to start over)")
        return

    num_params = sum(p.numel() for p in model.parameters())
    threads = f", {torch.get_num_threads()} CPU threads (--threads)" if device.type == "cpu" else ""
    print(f"device {device}{threads}, {num_params / 1e6:.2f}M parameters, "
          f"{len(train_loader)} batches per epoch, a checkpoint every {args.save_every} steps")

    def request_stop(signum, frame):
        if run.stop_requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once, without saving
        run.stop_requested = True
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)")

    signal.signal(signal.SIGINT, request_stop)
    start = time.time() - (run.epochs[-1]["seconds"] if run.epochs else 0.0)
    try:
        while run.epoch < args.epochs:
            first_step = run.step_in_epoch
            loss = train_epoch(model, run.batches(train_loader.dataset), optimizer, device, run.epoch)
            val_loss = evaluate(model, val_loader, device)
            run.end_epoch(float(loss), val_loss, time.time() - start, first_step)
            last = run.epochs[-1]
            print(f"epoch {run.epoch}/{args.epochs}  train loss {last['train_loss']:.4f} (ppl "
                  f"{last['train_perplexity']:.2f})  val loss {val_loss:.4f} (ppl "
                  f"{last['val_perplexity']:.2f})  ({last['seconds']:.0f}s)")
    except Interrupted:
        print(f"saved {run.last} at epoch {run.epoch + 1}, step {run.step_in_epoch}: continue "
              f"with `python backbone.py --resume`")
        raise SystemExit(130) from None  # the shell's code for a run stopped by Ctrl-C


if __name__ == "__main__":
    main()
