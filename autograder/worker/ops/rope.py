"""RotaryPositionalEmbedding(dim, max_seq_len) applied to the grader's queries and keys."""

import torch

from .. import adapt
from ..protocol import Op
from ..session import op


@op(Op.ROPE)
def run_rope(session, dim: int, max_seq_len: int, q: torch.Tensor, k: torch.Tensor) -> dict:
    rope = session.require("RotaryPositionalEmbedding")(dim, max_seq_len=max_seq_len)
    output = rope(q, k)
    if not (isinstance(output, (tuple, list)) and len(output) >= 2):
        raise TypeError(f"RotaryPositionalEmbedding.forward returned {type(output).__name__}, "
                        "expected the pair (q_rotated, k_rotated)")
    return {"q": adapt.plain(output[0]), "k": adapt.plain(output[1])}
