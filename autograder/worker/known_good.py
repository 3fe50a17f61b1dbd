"""Public, known-good stand-ins for the parts of the model that a check does not grade.

Isolation by substitution: to grade one category, the worker swaps every other part the check
needs for code that is known to be right and that students have too: the template's provided
code (student/backbone.py, copied into the sandbox as worker/template_backbone.py: its
RotaryPositionalEmbedding, FeedForward and model wiring; its TODOs raise) and torch.nn modules.
The reference solution never enters the worker.
"""

import contextlib
import functools
import importlib.util
import math
import os

import torch
import torch.nn.functional as F

TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template_backbone.py")


@functools.lru_cache(maxsize=1)
def template():
    """The template's module (under a private name, so it never shadows the submission)."""
    spec = importlib.util.spec_from_file_location("scratch1_template", TEMPLATE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rms_norm(dim: int, eps: float = 1e-6, *_args, **_options) -> torch.nn.Module:
    """torch.nn.RMSNorm, built as the template's RMSNorm(dim, eps) is (a student's block may pass
    its RMSNorm further options, which a known-good norm has no use for)."""
    return torch.nn.RMSNorm(dim, eps=eps)


class CausalAttention(torch.nn.Module):
    """Causal multi-head self-attention from public parts: the template's layout (qkv_proj,
    out_proj, rope = the template's RotaryPositionalEmbedding) and
    F.scaled_dot_product_attention. forward(x (batch, seq, dim), mask=None) -> (batch, seq, dim);
    a passed mask (seq, seq) has 1 where attention is allowed."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, **_ignored):
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv_proj = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = torch.nn.Linear(dim, dim, bias=False)
        self.rope = template().RotaryPositionalEmbedding(self.head_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        batch, seq_len, dim = x.shape
        q, k, v = (t.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in self.qkv_proj(x).split(dim, dim=-1))
        q, k = self.rope(q, k)
        allowed = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).tril()
        if mask is not None:
            allowed = allowed & mask.to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             scale=1.0 / math.sqrt(self.head_dim))
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq_len, dim))


@contextlib.contextmanager
def substituted(session, **parts):
    """Within the block, the submission's module-level names (e.g. RMSNorm=rms_norm,
    CausalSelfAttention=CausalAttention) are the given stand-ins, so the student's classes that
    build them (TransformerBlock, DecoderOnlyTransformer) build the stand-ins instead."""
    module = session.module
    originals = {name: getattr(module, name) for name in parts if hasattr(module, name)}
    for name, part in parts.items():
        setattr(module, name, part)
    try:
        yield
    finally:
        for name in parts:
            if name in originals:
                setattr(module, name, originals[name])
            else:
                delattr(module, name)


class RopeCallMismatch(Exception):
    """The student's attention calls self.rope otherwise than the template's attention does."""


def _no_offset(value) -> bool:
    """An argument a RoPE call may carry beside q and k that leaves the positions at 0, 1, ...:
    None, or a position offset of 0."""
    return value is None or (type(value) is int and value == 0)


def template_rope(head_dim: int, expected_shape: tuple, own: torch.nn.Module) -> torch.nn.Module:
    """The template's RotaryPositionalEmbedding(head_dim), to stand in for a student's
    `attention.rope` (`own`), answering the student's call the way `own` does: rope(q, k) or
    rope(x) (one tensor at a time), with extra arguments that leave the positions at 0, 1, ...
    (offset=0, None), returning what `own` returns for the same call (one tensor, or a tuple
    whose first two items are the rotated q and k, its other items passed through). The tensors
    must have `expected_shape` (batch, heads, seq, head_dim): a student's own RoPE may expect
    another layout, where the template's would silently rotate the wrong axis. Any other call
    raises RopeCallMismatch. `.used` tells whether the attention ran it or read its cos/sin
    tables."""
    base = template().RotaryPositionalEmbedding

    class TemplateRope(base):
        def __init__(self):
            super().__init__(head_dim)
            self.used = False

        def __getattr__(self, name):
            if name in ("cos_cached", "sin_cached"):
                self.__dict__["used"] = True
            return super().__getattr__(name)

        def forward(self, *args, **kwargs):
            values = (*args, *kwargs.values())
            tensors = [t for t in values if isinstance(t, torch.Tensor)]
            shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else repr(t) for t in values]
            if (len(tensors) not in (1, 2) or any(tuple(t.shape) != tuple(expected_shape) for t in tensors)
                    or not all(_no_offset(v) for v in values if not isinstance(v, torch.Tensor))):
                raise RopeCallMismatch(f"self.rope was called with {shapes}, not with q and k (or "
                                       f"one of them) of shape {tuple(expected_shape)}")
            try:
                returned = own(*args, **kwargs)  # the student's return structure for this call
            except Exception:  # noqa: BLE001 (a broken RoPE of the student's: the template's own form)
                returned = tensors[0] if len(tensors) == 1 else tuple(tensors)
            q, k = tensors if len(tensors) == 2 else tensors * 2
            if "q" in kwargs and "k" in kwargs:
                q, k = kwargs["q"], kwargs["k"]
            q_rotated, k_rotated = super().forward(q, k)
            self.used = True
            if len(tensors) == 1 and isinstance(returned, torch.Tensor):
                return q_rotated
            if (len(tensors) == 2 and isinstance(returned, (tuple, list)) and len(returned) >= 2
                    and all(isinstance(r, torch.Tensor) for r in returned[:2])):
                return type(returned)((q_rotated, k_rotated, *returned[2:]))
            raise RopeCallMismatch(f"your RoPE returned {type(returned).__name__} for this call, "
                                   "which the template's cannot imitate")

    return TemplateRope()


class TrainingStandIn(torch.nn.Module):
    """The training checks' model: a token embedding and a linear head over `vocab_size` tokens,
    each position predicted from its own token (no attention, so no bug of the student's model
    can reach it). The grader imports this same class to recompute, on its side, every update
    that train_epoch must make (checks/training_evidence.py).

    Parameters (the grader's, drawn per grading): embedding (vocab, dim), head (vocab, dim),
    bias (vocab,). logits(input_ids (batch, seq)) -> (batch, seq, vocab)
    = embedding[ids] * grad_scale @ (head * grad_scale)^T + bias, plus the fixed vector
    train_offset (vocab,) in train mode only: train and eval mode give different logits, as
    dropout does, but deterministically, so the grader can tell from an update which mode it was
    computed in. grad_scale makes every gradient grad_scale times (embedding, head) what the
    logits alone would give, so a batch's gradient norm is far above the clipping norm."""

    PARAMETERS = ("embedding", "head", "bias")  # the order of parameters()

    def __init__(self, embedding: torch.Tensor, head: torch.Tensor, bias: torch.Tensor,
                 train_offset: torch.Tensor, grad_scale: float):
        super().__init__()
        self.embedding = torch.nn.Parameter(embedding.detach().clone())
        self.head = torch.nn.Parameter(head.detach().clone())
        self.bias = torch.nn.Parameter(bias.detach().clone())
        self.register_buffer("train_offset", train_offset.detach().clone())
        self.grad_scale = grad_scale

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        scale = self.grad_scale
        logits = F.embedding(input_ids, self.embedding * scale) @ (self.head * scale).T + self.bias
        return logits + self.train_offset if self.training else logits
