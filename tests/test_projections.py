"""find_projections (worker/adapt/projections.py): the attention layouts whose weights the
grader maps by shape and role, and the ones it must refuse (with a message naming the layers)
rather than map wrongly."""

import pytest
import torch
from torch import nn

from autograder.worker.adapt.projections import UnmappedProjections, find_projections

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
