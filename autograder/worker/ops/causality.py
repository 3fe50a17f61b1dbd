"""Runs of the student's attention and model for the causal checks: one module, several inputs,
each in the mode and under the autograd state the grader asks for, in the order it sends them.

The grader shuffles the runs and the rows within each, and compares what comes back across
requests and across worker processes (checks/causality.py): code that keeps state between calls,
or masks only while autograd records, shows it there. Nothing here judges.
"""

import random

import numpy
import torch

from .. import known_good
from ..adapt.calls import call_attention, call_model
from ..adapt.construction import build, set_dropout
from ..fault import is_internal
from ..protocol import Op
from ..replies import detached_copy
from ..session import BadRequest, op
from .attention import with_weights

# How a run's forward is called: autograd recording (the input requires grad), under
# torch.no_grad(), or under torch.inference_mode().
AUTOGRAD = {"enabled": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def _seed(seed: int) -> None:
    """Every generator the student's constructor may draw from: the same module in every process."""
    torch.manual_seed(seed)
    random.seed(seed)
    numpy.random.seed(seed % 2**32)


def _autograd(run: dict):
    if run.get("autograd") not in AUTOGRAD:
        raise BadRequest(f"autograd must be one of {sorted(AUTOGRAD)}")
    return AUTOGRAD[run["autograd"]]()


@op(Op.ATTENTION_RUNS)
def run_attention_runs(session, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                       out_weight: torch.Tensor, runs: list, own_weights_fallback: bool = False) -> dict:
    """The student's CausalSelfAttention(dim, num_heads), built once with dropout 0 and the
    grader's projection weights (qkv_weight (3 dim, dim) = [W_q; W_k; W_v], out_weight (dim,
    dim)), run on each of `runs` in turn: {"x": (batch, seq, dim), "mask": (seq, seq) or None,
    "train": bool, "autograd": "enabled" | "no_grad" | "inference_mode"}. Returns {"outs":
    [(batch, seq, dim) per run], "own_weights": bool}: with own_weights_fallback, weights that
    cannot be mapped onto the module leave its own initial ones (seeded) and say so."""
    _seed(0)
    attention, own_weights = with_weights(session, dim, num_heads, qkv_weight, out_weight,
                                          own_weights_fallback=own_weights_fallback)
    outs = []
    for run in runs:
        attention.train(bool(run["train"]))
        x = run["x"].clone().requires_grad_(run["autograd"] == "enabled")
        with _autograd(run):
            outs.append(detached_copy(call_attention(session, attention, x, run.get("mask"))))
    return {"outs": outs, "own_weights": own_weights}


@op(Op.MODEL_RUNS)
def run_model_runs(session, config: dict, seed: int, runs: list, substitute_norm: bool = False) -> dict:
    """One student DecoderOnlyTransformer(**config) built with `seed` (torch, random and numpy
    seeded, so every process builds the same model), dropout 0, run on each of `runs` in turn:
    {"ids": (batch, seq) token ids, "train": bool, "autograd": as for run_attention_runs}.
    Returns {"logits": [(batch, seq, vocab) per run]}.

    substitute_norm builds the model with torch.nn.RMSNorm in place of the student's RMSNorm,
    so a model-level check of attention is not failed by an unfinished or wrong RMSNorm; when
    the student's model cannot be built or run with it (a block that calls its norm otherwise),
    the student's own RMSNorm is used, with a note that says so."""
    if substitute_norm:
        try:
            return _model_runs(session, config, seed, runs, RMSNorm=known_good.rms_norm)
        except Exception as error:  # noqa: BLE001 (then the student's own RMSNorm, as it is)
            if is_internal(error):
                raise
            session.note("torch.nn.RMSNorm could not stand in for your RMSNorm in this model "
                         f"({type(error).__name__}: {str(error)[:200]}): this check ran your own")
    return _model_runs(session, config, seed, runs)


def _model_runs(session, config: dict, seed: int, runs: list, **parts) -> dict:
    with known_good.substituted(session, **parts):
        _seed(seed)
        model = build(session, "DecoderOnlyTransformer", **config)
    set_dropout(model, 0.0)
    logits = []
    for run in runs:
        model.train(bool(run["train"]))
        with _autograd(run):
            logits.append(detached_copy(call_model(session, model, run["ids"])))
    if parts:
        session.note("the model was built with torch.nn.RMSNorm in place of your RMSNorm (which "
                     "failed its own checks), so this causality check depends on your attention only")
    return {"logits": logits}
