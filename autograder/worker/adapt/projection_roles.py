"""Which query, key or value component each output row of the attention's input projections
computes, found by behaviour, for layouts that shapes and names do not tell apart: keys and
values interleaved per element in one kv_proj ((..., head_dim, 2)), a fused layer laid out per
head ((heads, 3, head_dim)), layers named otherwise than they are used.

One forward of a batch of identical sequences, out_proj set to the identity: sequence b has
row b of the projections' output raised by DELTA at position P only (a forward hook), sequence
0 is the baseline. How the output moves tells the row's role, whatever the mask does:

- a value component d moves output dim d only (the attention weights of the rows that see
  position P, times DELTA): its head and its index within the head are d's;
- a query component moves output row P only (one query's scores), in its head's dims;
- a key component moves every row that sees position P (one key's scores), in its head's dims.

Within a head, queries (and keys) keep the order of their rows: a layout permutes heads and
roles, not the dims RoPE pairs. The result is trusted only when it is a complete, consistent
assignment (every component of W_q, W_k, W_v once); an attention whose batch elements interact
or whose heads mix gives none, and the layout read from shapes and names stands.
"""

import torch

from .calls import call_attention

SEQ, POSITION, DELTA = 6, 3, 1.0
# What counts as moved: a unit change of one projection output moves what it reaches by O(0.1-1)
# (random inputs and the student's initial weights) and leaves the rest bitwise equal or within
# float32 rounding of the batched matmuls (~1e-7 of the largest output).
RELATIVE_TOLERANCE = 1e-6


def _hook(additions: torch.Tensor):
    def add(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.shape != additions.shape:
            raise _Inconclusive()
        return output + additions
    return add


class _Inconclusive(Exception):
    pass


def grader_rows(session, attention, projections, num_heads: int):
    """For each input layer of `projections` (projections.Projections), a LongTensor giving,
    for each of its output rows, the row of the grader's [W_q; W_k; W_v] (3 dim, dim) that it
    computes; None when behaviour does not tell (a layer that is not an nn.Linear module, a
    forward that fails, an inconsistent or incomplete assignment)."""
    modules = dict(attention.named_modules())
    layers = [modules.get(name) for name, *_ in projections.inputs]
    out_layer = modules.get(projections.out[0])
    if not all(isinstance(m, torch.nn.Linear) for m in (*layers, out_layer)):
        return None
    dim = out_layer.weight.shape[0]
    sizes = [layer.weight.shape[0] for layer in layers]
    total = sum(sizes)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, SEQ, dim, generator=generator).expand(total + 1, -1, -1).contiguous()
    hooks, start = [], 1
    for layer, size in zip(layers, sizes):
        additions = torch.zeros(total + 1, SEQ, size)
        additions[torch.arange(start, start + size), POSITION, torch.arange(size)] = DELTA
        hooks.append(layer.register_forward_hook(_hook(additions)))
        start += size
    saved = [(p, p.detach().clone()) for p in out_layer.parameters()]
    training = attention.training
    notes = list(session.notes)
    try:
        with torch.no_grad():
            out_layer.weight.copy_(torch.eye(dim))
            if out_layer.bias is not None:
                out_layer.bias.zero_()
            attention.eval()
            out = call_attention(session, attention, x, torch.tril(torch.ones(SEQ, SEQ)))
    except Exception:  # noqa: BLE001 (the checks run the module again and report its errors)
        return None
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for parameter, value in saved:
                parameter.copy_(value)
        attention.train(training)
        session.notes[:] = notes
    if out.shape != (total + 1, SEQ, dim):
        return None
    return _assign(out, dim, num_heads, sizes)


def _assign(out: torch.Tensor, dim: int, num_heads: int, sizes: list):
    head_dim = dim // num_heads
    tolerance = RELATIVE_TOLERANCE * max(1.0, float(out.abs().nan_to_num().max()))
    moved = (out[1:] - out[0]).abs().nan_to_num() > tolerance  # (rows, seq, dim)
    values, queries, keys = {}, {}, {}
    for row, changed in enumerate(moved):
        dims = changed.any(0).nonzero().flatten().tolist()
        positions = changed.any(1).nonzero().flatten().tolist()
        heads = {d // head_dim for d in dims}
        if len(heads) != 1:
            return None
        (head,) = heads
        if len(dims) == 1:
            values[row] = dims[0]
        elif positions == [POSITION]:
            queries.setdefault(head, []).append(row)
        else:
            keys.setdefault(head, []).append(row)
    if sorted(values.values()) != list(range(dim)):
        return None
    grader = torch.empty(sum(sizes), dtype=torch.long)
    for row, d in values.items():
        grader[row] = 2 * dim + d
    for offset, found in ((0, queries), (dim, keys)):
        if sorted(found) != list(range(num_heads)) or any(len(r) != head_dim for r in found.values()):
            return None
        for head, rows in found.items():
            grader[torch.tensor(rows)] = offset + head * head_dim + torch.arange(head_dim)
    return list(grader.split(sizes))
