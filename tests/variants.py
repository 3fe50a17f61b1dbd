"""Variants of the reference: one-bug mutants and correct alternatives, made by exact edits.

Each variant is a list of (old, new) replacements applied to reference/backbone.py; every `old`
must occur exactly once, so a variant breaks loudly if the reference changes under it. A mutant
names the categories that must lose points (`loses`) and those that may lose points because they
sit downstream of the bug (`may_lose`); every other category must keep full marks. A correct
alternative loses nothing and must score 100.
"""

from dataclasses import dataclass

from grading import REFERENCE


@dataclass(frozen=True)
class Variant:
    name: str
    edits: tuple
    loses: frozenset = frozenset()
    may_lose: frozenset = frozenset()

    def source(self) -> str:
        with open(REFERENCE) as file:
            text = file.read()
        for old, new in self.edits:
            count = text.count(old)
            if count != 1:
                raise ValueError(f"variant {self.name}: {old!r} occurs {count} times in the reference")
            text = text.replace(old, new)
        return text


def mutant(name, edits, loses, may_lose=()):
    return Variant(name, tuple(edits), frozenset(loses.split()), frozenset(may_lose.split() if may_lose else ()))


def alternative(name, edits):
    return Variant(name, tuple(edits))


INTERLEAVED_ROPE = '''def rope_interleaved(x: torch.Tensor) -> torch.Tensor:
    """RoPE pairing dimensions (2i, 2i + 1), as in the RoFormer paper."""
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):'''

VARIANTS = [
    mutant("layernorm_instead_of_rmsnorm",
           [("        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)",
             "        x = x - x.mean(dim=-1, keepdim=True)\n"
             "        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)")],
           loses="rmsnorm", may_lose="convergence"),
    mutant("no_causal_mask",
           [('        scores = scores.masked_fill(mask == 0, float("-inf"))\n', "")],
           loses="causal_mask", may_lose="convergence"),
    mutant("rope_on_queries_only",
           [("        q, k = self.rope(q, k)", "        q, _ = self.rope(q, k)")],
           loses="rope", may_lose="attention convergence"),
    mutant("no_target_shift",
           [("inputs, targets = actions[:, :-1], actions[:, 1:]",
             "inputs, targets = actions[:, :-1], actions[:, :-1]")],
           loses="training", may_lose="convergence"),
    alternative("interleaved_rope",
                [("class CausalSelfAttention(nn.Module):", INTERLEAVED_ROPE),
                 ("        q, k = self.rope(q, k)", "        q, k = rope_interleaved(q), rope_interleaved(k)")]),
]
