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
        raise NotImplementedError("TODO 1 (RMSNorm) is not implemented yet: complete it in backbone.py")


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
        raise NotImplementedError("TODO 2 (CausalSelfAttention) is not implemented yet: complete it in backbone.py")


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
        """Sample max_new_tokens tokens after input_ids (batch, seq); returns (batch, seq + new)."""
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
    raise NotImplementedError("TODO 3 (train_epoch) is not implemented yet: complete it in backbone.py")


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


class ProgressBar:
    """Wraps a dataloader and prints one updating line per epoch: batches done, time, ETA and
    the latest training loss (read from the model's output, whatever train_epoch does)."""

    def __init__(self, dataloader, model: nn.Module, label: str):
        self.dataloader, self.label, self.loss = dataloader, label, None
        self.hook = model.register_forward_hook(self._record_loss)

    def _record_loss(self, module, inputs, output):
        if module.training and isinstance(output, tuple) and output[1] is not None:
            self.loss = output[1].item()

    def __len__(self):
        return len(self.dataloader)

    def __iter__(self):
        start, total = time.time(), len(self.dataloader)
        for done, batch in enumerate(self.dataloader, 1):
            yield batch
            elapsed = time.time() - start
            loss = f"  loss {self.loss:.3f}" if self.loss is not None else ""
            print(f"\r{self.label} [{'#' * (20 * done // total):<20}] {done}/{total}  "
                  f"{elapsed:.0f}s, eta {elapsed / done * (total - done):.0f}s{loss}   ",
                  end="", flush=True)
        print()
        self.hook.remove()


def main():
    from generate_data import create_dataloaders

    config = dict(vocab_size=256, dim=256, num_layers=4, num_heads=8, ff_hidden_dim=1024,
                  max_seq_len=50, dropout=0.1)
    batch_size, learning_rate, num_epochs = 32, 3e-4, 10
    data_path, checkpoint_dir = "data/trajectories.pkl", "checkpoints"
    last_checkpoint = os.path.join(checkpoint_dir, "last.pt")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not os.path.exists(data_path):
        raise SystemExit(f"{data_path} not found: run `python generate_data.py` first.")
    train_loader, val_loader = create_dataloaders(data_path, batch_size=batch_size)
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(**config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    history, first_epoch = [], 0
    if os.path.exists(last_checkpoint):  # resume an interrupted run
        state = torch.load(last_checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, first_epoch = state["history"], state["epoch"] + 1
        print(f"resuming after epoch {first_epoch} from {last_checkpoint}")
    num_params = sum(p.numel() for p in model.parameters())
    print(f"device {device}, {num_params / 1e6:.2f}M parameters, "
          f"{len(train_loader)} batches per epoch")

    os.makedirs(checkpoint_dir, exist_ok=True)
    start = time.time() - (history[-1]["seconds"] if history else 0.0)
    for epoch in range(first_epoch, num_epochs):
        progress = ProgressBar(train_loader, model, f"epoch {epoch + 1}/{num_epochs}")
        train_loss = train_epoch(model, progress, optimizer, device, epoch)
        val_loss = evaluate(model, val_loader, device)
        elapsed = time.time() - start
        history.append(dict(epoch=epoch, train_loss=train_loss, val_loss=val_loss,
                            seconds=elapsed))
        print(f"epoch {epoch + 1}/{num_epochs}  train loss {train_loss:.4f}  "
              f"val loss {val_loss:.4f}  ({elapsed:.0f}s)")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "config": config, "epoch": epoch, "history": history}
        torch.save(state, os.path.join(checkpoint_dir, f"epoch_{epoch + 1}.pt"))
        torch.save(state, last_checkpoint)
        with open(os.path.join(checkpoint_dir, "loss_history.json"), "w") as f:
            json.dump(history, f, indent=2)


if __name__ == "__main__":
    main()
