"""RotaryPositionalEmbedding(dim, max_seq_len) applied to the grader's queries and keys."""

import torch

from ..adapt.calls import call_submission
from ..fault import does_not_fit
from ..protocol import Op
from ..replies import detached_copy
from ..session import op


@op(Op.ROPE)
def run_rope(session, dim: int, max_seq_len: int, q: torch.Tensor, k: torch.Tensor) -> dict:
    """The student's RotaryPositionalEmbedding(dim, max_seq_len) applied to q and k (batch,
    heads, seq, dim). Returns {"q": rotated q, "k": rotated k}, each of the shape it returned."""
    cls = session.require("RotaryPositionalEmbedding")
    rope = call_submission(cls, dim, max_seq_len=max_seq_len)
    output = call_submission(rope, q, k)
    if not (isinstance(output, (tuple, list)) and len(output) >= 2):
        returned = type(output).__name__
        raise does_not_fit(TypeError(f"RotaryPositionalEmbedding.forward returned {returned}, "
                                     "expected the pair (q_rotated, k_rotated)"))
    return {"q": detached_copy(output[0]), "k": detached_copy(output[1])}
