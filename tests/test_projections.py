"""find_projections (worker/adapt/projections.py): the attention layouts whose weights the
grader maps by shape and role, and the ones it must refuse (with a message naming the layers)
rather than map wrongly."""

import pytest
import torch
from torch import nn

from autograder.checks import oracle
from autograder.worker.adapt.projections import UnmappedProjections, find_projections, load_projections

DIM = 8


def _attention(**layers) -> nn.Module:
    module = nn.Module()
    for name, layer in layers.items():
        setattr(module, name, layer)
    return module


def _linear(rows: int, bias: bool = False) -> nn.Linear:
    return nn.Linear(DIM, rows, bias=bias)


MAPPED = {
    "template": (_attention(qkv_proj=_linear(3 * DIM), out_proj=_linear(DIM)),
                 "qkv_proj (q, k, v) and out_proj"),
    "q and kv, biases": (_attention(q_proj=_linear(DIM, True), kv_proj=_linear(2 * DIM, True),
                                    o_proj=_linear(DIM, True)), "q_proj (q), kv_proj (k, v) and o_proj"),
    "separate, biases": (_attention(q_proj=_linear(DIM, True), k_proj=_linear(DIM, True),
                                    v_proj=_linear(DIM, True), out_proj=_linear(DIM, True)),
                         "q_proj (q), k_proj (k), v_proj (v) and out_proj"),
    "nanoGPT": (_attention(c_attn=_linear(3 * DIM, True), c_proj=_linear(DIM, True)),
                "c_attn (q, k, v) and c_proj"),
    "query/key/value": (_attention(query=_linear(DIM), key=_linear(DIM), value=_linear(DIM),
                                   proj=_linear(DIM)), "query (q), key (k), value (v) and proj"),
    "wq": (_attention(wq=_linear(DIM), wk=_linear(DIM), wv=_linear(DIM), wo=_linear(DIM)),
           "wq (q), wk (k), wv (v) and wo"),
    "W_q": (_attention(W_q=_linear(DIM), W_k=_linear(DIM), W_v=_linear(DIM), W_o=_linear(DIM)),
            "W_q (q), W_k (k), W_v (v) and W_o"),
    "to_q/to_kv": (_attention(to_q=_linear(DIM), to_kv=_linear(2 * DIM), to_out=_linear(DIM)),
                   "to_q (q), to_kv (k, v) and to_out"),
    "nn.MultiheadAttention": (_attention(mha=nn.MultiheadAttention(DIM, 2, batch_first=True)),
                              "mha.in_proj_weight (q, k, v) and mha.out_proj"),
}

UNMAPPED = {
    "grouped keys and values": _attention(q_proj=_linear(DIM), kv_proj=_linear(DIM // 2),
                                          out_proj=_linear(DIM)),
    "an extra layer": _attention(qkv_proj=_linear(3 * DIM), out_proj=_linear(DIM), gate=_linear(DIM)),
    "qkv_proj left beside q/k/v": _attention(qkv_proj=_linear(3 * DIM), q_proj=_linear(DIM),
                                             k_proj=_linear(DIM), v_proj=_linear(DIM),
                                             out_proj=_linear(DIM)),
    "square nn.Parameter": _attention(W_q=nn.Parameter(torch.randn(DIM, DIM)),
                                      W_k=nn.Parameter(torch.randn(DIM, DIM)),
                                      W_v=nn.Parameter(torch.randn(DIM, DIM)), out_proj=_linear(DIM)),
}


@pytest.mark.parametrize("name", MAPPED)
def test_layout_is_mapped_by_role(name):
    attention, described = MAPPED[name]
    projections = find_projections(attention, DIM)
    assert projections.describe() == described
    qkv_weight, out_weight = torch.randn(3 * DIM, DIM), torch.randn(DIM, DIM)
    projections.load(qkv_weight, out_weight)
    x = torch.randn(2, 3, DIM)
    assert torch.allclose(torch.cat(projections.qkv(x), -1), x @ qkv_weight.T, atol=1e-5)
    _, weight, bias = projections.out
    assert torch.equal(weight, out_weight) and (bias is None or not bias.any())


@pytest.mark.parametrize("name", UNMAPPED)
def test_layout_that_cannot_be_mapped_is_named(name):
    attention = UNMAPPED[name]
    with pytest.raises(UnmappedProjections) as error:
        find_projections(attention, DIM)
    for layer, parameter in attention.named_parameters():
        if parameter.dim() == 2:
            assert layer.rsplit(".weight", 1)[0] in str(error.value)


# -- layouts whose rows only behaviour tells apart (worker/adapt/projection_roles.py) ------------

class _Session:
    def __init__(self):
        self.notes, self.state = [], {}

    def note(self, text):
        self.notes.append(text)


HEADS = 2


def _split(layout: str, q_layer, kv_layer, x):
    """(q, k, v) (batch, heads, seq, head_dim) from the layers, by `layout`."""
    batch, seq, dim = x.shape
    head_dim = dim // HEADS
    if layout == "qkv per head":  # (heads, 3, head_dim)
        q, k, v = kv_layer(x).view(batch, seq, HEADS, 3, head_dim).unbind(3)
    elif layout == "qkv per element":  # (dim, 3)
        q, k, v = kv_layer(x).view(batch, seq, HEADS, head_dim, 3).unbind(4)
    else:
        q = q_layer(x).view(batch, seq, HEADS, head_dim)
        kv = kv_layer(x)
        if layout == "kv per element":  # (heads, head_dim, 2)
            k, v = kv.view(batch, seq, HEADS, head_dim, 2).unbind(4)
        elif layout == "kv per head":  # (heads, 2, head_dim)
            k, v = kv.view(batch, seq, HEADS, 2, head_dim).unbind(3)
        else:  # "v, k blocks"
            v, k = (t.view(batch, seq, HEADS, head_dim) for t in kv.chunk(2, -1))
    return (t.transpose(1, 2) for t in (q, k, v))


class _Attention(nn.Module):
    def __init__(self, layout: str, fused_name: str = "c_attn"):
        super().__init__()
        self.layout, self.fused_name = layout, fused_name
        if layout.startswith("qkv"):
            setattr(self, fused_name, nn.Linear(DIM, 3 * DIM))
        else:
            self.q_proj, self.kv_proj = nn.Linear(DIM, DIM), nn.Linear(DIM, 2 * DIM)
        self.out_proj = nn.Linear(DIM, DIM)

    def forward(self, x, mask=None):
        batch, seq, _ = x.shape
        fused = self.layout.startswith("qkv")
        q, k, v = _split(self.layout, None if fused else self.q_proj,
                         getattr(self, self.fused_name) if fused else self.kv_proj, x)
        q, k = oracle.rope_rotate_half(q), oracle.rope_rotate_half(k)
        allowed = torch.ones(seq, seq, dtype=torch.bool).tril()
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, DIM))


@pytest.mark.parametrize("layout", ["kv per element", "kv per head", "v, k blocks", "qkv per head",
                                    "qkv per element"])
def test_rows_are_found_by_behaviour(layout):
    attention, session = _Attention(layout), _Session()
    qkv_weight, out_weight = torch.randn(3 * DIM, DIM), torch.randn(DIM, DIM)
    load_projections(session, attention, qkv_weight, out_weight, HEADS)
    x = torch.randn(2, 5, DIM)
    expected = oracle.attention(x, qkv_weight, out_weight, HEADS)
    assert torch.allclose(attention(x), expected, atol=1e-5)
    assert any("found by how it moves" in note for note in session.notes)


class _SplitKQV(nn.Module):
    """The template's qkv_proj, split in the order k, q, v: the bug diagnoses names."""

    def __init__(self):
        super().__init__()
        self.qkv_proj, self.out_proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x, mask=None):
        batch, seq, _ = x.shape
        k, q, v = (t.view(batch, seq, HEADS, -1).transpose(1, 2) for t in self.qkv_proj(x).chunk(3, -1))
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=torch.ones(seq, seq, dtype=torch.bool).tril())
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, DIM))


@pytest.mark.parametrize("attention, by_role", [(_Attention("qkv per head", fused_name="qkv_proj"), True),
                                                (_SplitKQV(), False)], ids=["per head", "k, q, v"])
def test_template_qkv_proj_keeps_its_documented_blocks(attention, by_role):
    """Blocks in another order in qkv_proj are the split-order bug the attention tests name, so
    the grader's [W_q; W_k; W_v] goes in as documented; a per-head layout is mapped by role."""
    session = _Session()
    qkv_weight = torch.randn(3 * DIM, DIM)
    load_projections(session, attention, qkv_weight, torch.randn(DIM, DIM), HEADS)
    assert any("found by how it moves" in note for note in session.notes) == by_role
    assert torch.equal(attention.qkv_proj.weight, qkv_weight) != by_role


class _MergedWithoutTranspose(_Attention):
    """kv per element, heads merged without transposing back: positions mix into the heads, so
    no row's role reads cleanly."""

    def forward(self, x, mask=None):
        batch, seq, _ = x.shape
        q, k, v = _split("kv per element", self.q_proj, self.kv_proj, x)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=torch.ones(seq, seq, dtype=torch.bool).tril())
        return self.out_proj(out.reshape(batch, seq, DIM))


def test_a_layout_behaviour_cannot_read_is_loaded_as_named_and_says_so():
    session = _Session()
    attention = _MergedWithoutTranspose("kv per element")
    qkv_weight = torch.randn(3 * DIM, DIM)
    load_projections(session, attention, qkv_weight, torch.randn(DIM, DIM), HEADS)
    assert torch.equal(attention.kv_proj.weight, qkv_weight[DIM:])
    assert any("could not be found from how it moves" in note and "kv_proj" in note
               for note in session.notes), session.notes
