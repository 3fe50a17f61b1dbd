"""Replies that fit their op's schema but not the request: whatever the submission's process
sends, an adapter (checks/adapters.py) either returns a record a check can compute with, every
floating tensor float32 and every tensor of the shape the request implies, or fails the check
with a Verdict; never another exception, which the grader would report as its own error.
In-process: each op's honest reply, then forged variants of each field, received as the grader
receives a reply (sandbox/validation.py) through a stand-in worker."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from autograder.checks import adapters
from autograder.checks.adapters import ModelAPI
from autograder.checks.submission import Submission
from autograder.sandbox import wire
from autograder.sandbox.errors import StudentError
from autograder.sandbox.validation import MalformedReply, reply as validated
from autograder.verdict import Failed, Verdict
from autograder.worker.protocol import Op

B, S, D, H, V = 2, 3, 4, 2, 8  # batch, sequence, dim, heads, vocabulary
CONFIG = {"vocab_size": V, "dim": D, "num_heads": H, "num_layers": 1, "max_seq_len": 16}


class _Replying:
    """A worker that answers every request with one reply, received as the grader receives
    one: validated against the op's schema, a malformed one a WorkerFailure."""

    load_reply = {"ok": True}
    budget = SimpleNamespace(check="", check_seconds=1.0)

    def __init__(self, result):
        self.message = {"ok": True, "result": result, "notes": [], "memory": None}

    def begin_check(self, name, seconds):
        pass

    def ensure_loaded(self):
        return self._received(Op.LOAD)

    def _received(self, op):
        try:
            got = validated(copy.deepcopy(self.message), op)
        except MalformedReply as error:
            raise wire.malformed(str(error)) from None
        if not got["ok"]:
            raise StudentError(got["error"], got["notes"])
        return got

    def call(self, op, **args):
        got = self._received(op)
        return wire.Reply(got["result"], got["notes"])


def _tensor(*shape):
    return torch.randn(*shape)


def _ids(*shape):
    return torch.randint(V, shape)


_STEP = {"optimizer": "SGD", "given": True, "holds_model": True,
         "hyper": {"lr": 0.1, "momentum": 0.0, "betas": [0.9, 0.99]}, "had_grads": True,
         "backwards": 1, "before": [_tensor(V, D), _tensor(V, D), _tensor(V)],
         "after": [_tensor(V, D), _tensor(V, D), _tensor(V)], "grad_norm_after": 0.5}
_DECODED = {"error": None, "tokens": _ids(B, S + 2), "logits_source": "lm_head",
            "layers_sharing_an_argument": 0,
            "fresh_model": {"error": None, "tokens": _ids(B, S + 2)},
            "prefill_logits": _tensor(B, S, V), "step_logits": _tensor(B, 2, V),
            "embedded": [S, 1], "attended": [S, S + 1], "prefill_attention": _tensor(B, S, D),
            "full_tokens": _ids(B, S + 2), "full_logits": _tensor(B, 2, V),
            "full_prompt_logits": _tensor(B, S, V), "full_prompt_attention": _tensor(B, S, D)}
_RUN = {"mask": None, "train": False, "autograd": "enabled"}
_PARAMETERS = {"embedding": _tensor(V, D), "head": _tensor(V, D), "bias": _tensor(V)}

# op: (the adapter called as a check calls it, the honest reply's result)
OPS = {
    Op.LOAD: (adapters.run_load, {"seconds": 0.03, "names": {"RMSNorm": "class RMSNorm(dim)"}}),
    Op.RMSNORM: (lambda s: adapters.run_rmsnorm(s, D, 1e-6, torch.ones(D), _tensor(B, S, D),
                                                _tensor(B, S, D)),
                 {"out": _tensor(B, S, D), "grad_x": _tensor(B, S, D), "grad_scale": _tensor(D),
                  "scale_is_parameter": True, "scale_shape": [D]}),
    Op.ROPE: (lambda s: adapters.run_rope(s, D, 16, _tensor(1, H, S, D), _tensor(1, H, S, D)),
              {"q": _tensor(1, H, S, D), "k": _tensor(1, H, S, D)}),
    Op.ATTENTION: (lambda s: adapters.run_attention(
        s, D, H, _tensor(3 * D, D), _tensor(D, D), _tensor(B, S, D), grad_out=_tensor(B, S, D),
        per_position_grads=True, repeat=True),
        {"out": _tensor(B, S, D), "own_weights": False, "again": _tensor(B, S, D),
         "grad_x": _tensor(B, S, D), "rows": _tensor(S, B, S, D), "rope": "own",
         "rope_not_substituted": ""}),
    Op.ATTENTION_RUNS: (lambda s: adapters.attempt_attention_runs(
        s, D, H, _tensor(3 * D, D), _tensor(D, D), [dict(_RUN, x=_tensor(B, S, D)),
                                                    dict(_RUN, x=_tensor(1, S + 1, D))]),
        {"outs": [_tensor(B, S, D), _tensor(1, S + 1, D)], "own_weights": False}),
    Op.MODEL_RUNS: (lambda s: adapters.run_model_runs(s, CONFIG, 0, [dict(_RUN, ids=_ids(B, S))]),
                    {"logits": [_tensor(B, S, V)]}),
    Op.MODEL_API: (lambda s: adapters.run_model_api(s, V, 1.0),
                   {"plain": 2, "trained": 2, "loss_at": 1, "targets": "targets",
                    "shifts": False, "ignore_index": None}),
    Op.TRAIN_EPOCH: (lambda s: adapters.run_train_epoch(
        s, _tensor(4, S, 7), _ids(4, S), 2, _PARAMETERS, _tensor(V), 1.0, 0.1, ModelAPI(), 1.0),
        {"steps": [_STEP], "backwards": 1, "end": [_tensor(V, D), _tensor(V, D), _tensor(V)],
         "returned": 1.5, "returned_type": "float"}),
    Op.CONVERGENCE_TRAIN: (lambda s: adapters.run_convergence_train(
        s, CONFIG, 0, _tensor(4, S, 7), _ids(4, S), 2, 2, 1e-3),
        {"epoch_losses": [2.0, 1.0], "epoch_cpu_seconds": [0.5, 1.0],
         "step_losses": [2.5, 2.0, 1.5, 1.0]}),
    Op.CONVERGENCE_PREDICT: (lambda s: adapters.run_convergence_predict(s, _ids(B, S), V),
                             {"logits": _tensor(B, V)}),
    Op.TRAINED_ATTENTION: (lambda s: adapters.run_trained_attention(s, _ids(1, S), 1, H),
                           {"weights": _tensor(1, H, S, S).softmax(-1), "source": "softmax"}),
    Op.KV_CACHE_DECODE: (lambda s: adapters.run_kv_cache_decode(
        s, CONFIG, 0, {"prompt": _ids(2, 2), "new_tokens": 2},
        [{"prompt": _ids(B, S), "new_tokens": 2}], "top_k"),
        {"found": True, "searched": [{"path": "generate", "error": None, "lengths": [S, 1],
                                      "cached": True, "layers_sharing_an_argument": 0}],
         "path": "generate", "call": "generate(ids, 2)", "greedy": True, "cases": [_DECODED]}),
    Op.KV_CACHE_HYPOTHESES: (lambda s: adapters.run_kv_cache_hypotheses(
        s, CONFIG, 0, "generate", "top_k", _ids(B, S), 2, _ids(B, S + 2)),
        {"rope_modules": 1,
         "without_rope": {"error": None, "tokens": _ids(B, S + 2), "step_logits": _tensor(B, 2, V),
                          "full_tokens": _ids(B, S + 2), "full_logits": _tensor(B, 2, V)},
         "position_zero": {"calls": 2, "logits": _tensor(B, 2, V)}}),
    Op.KV_CACHE_SPEED: (lambda s: adapters.run_kv_cache_speed(
        s, CONFIG, 0, "generate", None, _ids(1, S), 2),
        {"cached_seconds": 0.1, "full_seconds": 0.3}),
}


def _tensor_forgeries(value: torch.Tensor) -> list:
    floating = value.dtype.is_floating_point
    return [
        torch.tensor(1.0),  # 0-dim
        value.new_empty((0, *value.shape[1:])),  # empty
        value.reshape(1, *value.shape) if value.dim() < 8 else value[0],  # padded: one more dim
        value.reshape((1,) * (8 - value.dim()) + tuple(value.shape)),  # padded to 8 dims
        value.reshape(-1),  # flattened
        value[..., :-1].clone() if value.shape[-1] > 1 else value.repeat(2),  # one short
        torch.full_like(value, math.nan) if floating else value.clone(),
        torch.full_like(value, math.inf) if floating else value.clone(),
        value.to(torch.bfloat16), value.to(torch.float64), value.to(torch.float16),
        value.to(torch.int64),
        torch.full_like(value, 2**63 - 1, dtype=torch.int64),
    ]


def _forgeries(value) -> list:
    """Values of the same schema type as `value` that an honest worker would never send."""
    if isinstance(value, torch.Tensor):
        return _tensor_forgeries(value)
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [-1, 0, 2**63 - 1, -2**63, 2**31 + 1]
    if isinstance(value, float):
        return [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e308, 5e-324]
    if isinstance(value, str):
        return ["", "x" * 1000, "softmax", "recomputed", "template"]
    if isinstance(value, list):
        return [[], value * 3, value[:1] * 5]
    if isinstance(value, dict):
        return [{}]
    return []


def _fields(value, path=()):
    """(path, value) of every field of a result, containers included."""
    yield path, value
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        yield from _fields(item, (*path, key))


def _replaced(result, path, value):
    forged = copy.deepcopy(result)
    target = forged
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return forged


def _forged_results(result):
    for path, value in _fields(result):
        if path:
            for forged in _forgeries(value):
                yield path, _replaced(result, path, forged)
        if value is None:  # an optional field left out: give it something of another kind
            for forged in (torch.zeros(()), torch.zeros(0), torch.zeros((1,) * 8)):
                yield path, _replaced(result, path, forged)


def _outcome(adapter, result):
    """The adapter's record, or the Verdict it failed with (any other exception propagates)."""
    try:
        return adapter(Submission(_Replying(result)))
    except Failed as failed:
        return failed.verdict


def _tensors(value, path=()):
    """(path, tensor) of every tensor in an adapter's record."""
    if isinstance(value, torch.Tensor):
        yield path, value
        return
    if hasattr(value, "__dataclass_fields__"):
        value = vars(value)
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, (list, tuple)) else ())
    for key, item in items:
        yield from _tensors(item, (*path, key))


@pytest.mark.parametrize("op", list(OPS))
def test_forged_replies_of_each_op_fail_the_check_and_never_raise(op):
    adapter, honest = OPS[op]
    record = _outcome(adapter, honest)
    assert not isinstance(record, Verdict), record  # the honest reply is accepted
    ranks = {where: tensor.dim() for where, tensor in _tensors(record)}
    count = 0
    for path, forged in _forged_results(honest):
        got = _outcome(adapter, forged)  # Failed is caught: anything else fails this test
        count += 1
        for where, tensor in _tensors(got):  # what the checks compute with
            assert tensor.dtype == torch.float32 or not tensor.dtype.is_floating_point, path
            assert tensor.dim() == ranks.get(where, tensor.dim()) and tensor.numel(), (path, where)
    assert count >= 5


def test_honest_float64_and_bfloat16_outputs_are_judged_by_their_values():
    # Before: the reference with RMSNorm returning float64 lost three rmsnorm checks as
    # "the grader hit an internal error ... Double did not match Float".
    adapter, honest = OPS[Op.RMSNORM]
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        out = honest["out"].to(dtype)
        run = adapter(Submission(_Replying(dict(honest, out=out))))
        assert run.out.dtype == torch.float32 and torch.equal(run.out, out.float())


@pytest.mark.parametrize("out, found", [
    (torch.tensor(1.0), "shape ()"),
    (torch.zeros(0, S, D), f"shape (0, {S}, {D})"),
    (torch.zeros((1,) * 5 + (B, S, D)), f"shape (1, 1, 1, 1, 1, {B}, {S}, {D})"),
], ids=["0-dim", "empty", "8-dim"])
def test_a_wrongly_shaped_output_names_the_shape_found_and_expected(out, found):
    adapter, honest = OPS[Op.RMSNORM]
    verdict = _outcome(adapter, dict(honest, out=out))
    assert verdict.kind == "property" and verdict.found == found, verdict
    assert verdict.expected == f"shape ({B}, {S}, {D})" and "RMSNorm's output" in verdict.measured


def test_a_nan_or_huge_count_is_the_submissions_malformed_reply():
    adapter, honest = OPS[Op.KV_CACHE_SPEED]
    verdict = _outcome(adapter, dict(honest, cached_seconds=math.nan))
    assert verdict.kind == "malformed" and verdict.found == "nan", verdict
    adapter, honest = OPS[Op.MODEL_API]
    verdict = _outcome(adapter, dict(honest, loss_at=2**63 - 1))
    assert verdict.kind == "malformed" and str(2**63 - 1) in verdict.found, verdict
