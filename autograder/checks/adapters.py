"""The checks' only way to run the submission: one documented function per worker operation.

Modelled on CS336's tests/adapters.py. Each function sends one request to the worker (through
the Submission handle, which turns the student's exceptions, hangs and crashes into failed
Verdicts) and returns the worker's raw measurements as a small dataclass. The operation names
are defined once, in worker/protocol.Op; a request the worker refuses as malformed raises
sandbox.errors.GraderError, an internal error of the grader, never a student error.

A new check is the recipe of README.md, "Adding a check": its test function (calling a
run_<component> here, comparing with checks/oracle.py or a property of the student's own output,
failing with a verdict.Verdict), its rubric rule, a mutant only it catches (tests/variants.py),
its calibration note and the regenerated students' table.

A reply reaches an adapter already checked against its op's schema (sandbox/validation.py: keys,
types, dense CPU tensors, floating ones as float32); what the schema cannot know follows from the
request, and each adapter checks it before returning: every tensor's shape (`shaped`: a
property verdict, since honest code can get a shape wrong), a list's length, a count's range, a
number that must be finite (`listed`, `counted`, `finite`: "malformed", since only a process
that rewrites the worker's replies can get those wrong). Either way the check fails as the
submission's: no check ever meets a tensor or number it cannot compute with.
"""

import math

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from ..verdict import Verdict, fail
from ..worker.known_good import TrainingStandIn
from ..worker.protocol import Op
from .submission import Submission, describe

ANY = None  # in an expected shape: a dimension of any size >= 1
MALFORMED_HINT = ("The grader reads this from your code's process, which must not change the "
                  "grader's worker.")
SHAPE_HINT = ("Check the shape of what your code returns (reshapes, transposes, squeezes and "
              "dtype casts before the return).")


def _shape_words(shape) -> str:
    return "(" + ", ".join("any" if size is ANY else str(size) for size in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def _malformed(what: str, found: str, expected: str):
    fail(Verdict(measured=what, found=found, expected=expected, hint=MALFORMED_HINT,
                 kind="malformed"))


def shaped(tensor, shape: tuple, what: str, optional: bool = False):
    """`tensor` (a received tensor; None allowed when `optional`) once its shape is `shape`
    (ANY: any size >= 1 there); otherwise the check fails with a property verdict naming the
    shape found and the one expected (an honest bug, e.g. a forgotten reshape, looks the same)."""
    if tensor is None and optional:
        return None
    found = f"shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) else "no tensor"
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != len(shape) or any(
            size < 1 if want is ANY else size != want for size, want in zip(tensor.shape, shape)):
        fail(Verdict(measured=f"the shape of {what}", found=found,
                     expected=f"shape {_shape_words(shape)}", hint=SHAPE_HINT, kind="property"))
    return tensor


def listed(values: list, count: int, what: str) -> list:
    """`values` once it has `count` items; otherwise the check fails, the submission's."""
    if len(values) != count:
        _malformed(f"the number of {what}", f"{len(values)}", f"{count}")
    return values


def counted(value: int, what: str, low: int = 0, high: int = 2**31) -> int:
    """`value` (an int) once low <= value <= high; otherwise the check fails, the submission's."""
    if not low <= value <= high:
        _malformed(what, f"{value}", f"a count from {low} to {high}")
    return value


def finite(value: float, what: str, low: float = -math.inf) -> float:
    """`value` (a float) once it is finite and >= low; otherwise the check fails, the
    submission's."""
    if not (math.isfinite(value) and value >= low):
        _malformed(what, f"{value}", f"a finite number of at least {low:g}" if low > -math.inf
                   else "a finite number")
    return value


@dataclass(frozen=True)
class RMSNormRun:
    """out: the output, the input's shape. grad_x, grad_scale: gradients of <out, grad_out> with
    respect to the input and the scale (None when none reached it). scale_is_parameter: the
    scale is an nn.Parameter registered on the module; scale_shape: its shape."""

    out: torch.Tensor
    grad_x: Optional[torch.Tensor]
    grad_scale: Optional[torch.Tensor]
    scale_is_parameter: bool
    scale_shape: list


def run_rmsnorm(submission: Submission, dim: int, eps: float, scale: torch.Tensor, x: torch.Tensor,
                grad_out: torch.Tensor) -> RMSNormRun:
    """The student's RMSNorm(dim, eps) with its scale set to `scale` (dim,), run on x (..., dim)
    and backward from <out, grad_out>."""
    got = submission.call(Op.RMSNORM, "RMSNorm", dim=dim, eps=eps, scale=scale, x=x,
                          grad_out=grad_out)
    return RMSNormRun(out=shaped(got["out"], x.shape, "RMSNorm's output"),
                      grad_x=shaped(got["grad_x"], x.shape, "RMSNorm's gradient w.r.t. its input",
                                    optional=True),
                      grad_scale=shaped(got["grad_scale"], scale.shape,
                                        "RMSNorm's gradient w.r.t. its scale", optional=True),
                      scale_is_parameter=got["scale_is_parameter"],
                      scale_shape=got["scale_shape"])


@dataclass(frozen=True)
class RopeRun:
    """q, k: the rotated queries and keys, the shapes of the inputs."""

    q: torch.Tensor
    k: torch.Tensor


def run_rope(submission: Submission, dim: int, max_seq_len: int, q: torch.Tensor,
             k: torch.Tensor) -> RopeRun:
    """The student's RotaryPositionalEmbedding(dim, max_seq_len) applied to q and k, both
    (batch, heads, seq, dim)."""
    got = submission.call(Op.ROPE, "RotaryPositionalEmbedding", dim=dim, max_seq_len=max_seq_len,
                          q=q, k=k)
    return RopeRun(q=shaped(got["q"], q.shape, "RotaryPositionalEmbedding's rotated queries"),
                   k=shaped(got["k"], k.shape, "RotaryPositionalEmbedding's rotated keys"))


ATTENTION = "CausalSelfAttention"  # what an attention request runs, in messages


@dataclass(frozen=True)
class AttentionRun:
    """out: the output (batch, seq, dim). own_weights: the module ran with its own initial weights
    (the grader's could not be mapped onto it; only with own_weights_fallback). again: the output
    of a second call on the same x (with repeat). grad_x: the gradient of <out, grad_out> w.r.t. x
    (with grad_out); rows: one such gradient per output position, rows[t] = d<out[:, t],
    grad_out[:, t]>/dx (with per_position_grads). rope: which RoPE the output used, "template"
    (the template's RotaryPositionalEmbedding stood in for self.rope) or "own";
    rope_not_substituted: why the template's could not stand in ('' when it did or was not
    asked to)."""

    out: torch.Tensor
    own_weights: bool
    again: Optional[torch.Tensor] = None
    grad_x: Optional[torch.Tensor] = None
    rows: Optional[torch.Tensor] = None
    rope: str = "own"
    rope_not_substituted: str = ""


def run_attention(submission: Submission, dim: int, num_heads: int, qkv_weight: torch.Tensor,
                  out_weight: torch.Tensor, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  train: bool = False, grad_out: Optional[torch.Tensor] = None,
                  per_position_grads: bool = False, rope: str = "own", dropout: float = 0.0,
                  repeat: bool = False, own_weights_fallback: bool = False) -> AttentionRun:
    """The student's CausalSelfAttention(dim, num_heads) with the projection weights qkv_weight
    (3 * dim, dim) = [W_q; W_k; W_v] and out_weight (dim, dim), run on x (batch, seq, dim) with
    `mask` (seq, seq), 1 where attention is allowed (None: forward's own default), in train mode
    when `train`. Every dropout is 0 unless `dropout` > 0 (the module is then built with it and left
    so). rope="template": the template's RotaryPositionalEmbedding stands in for self.rope where
    it can. own_weights_fallback: keep the module's own weights when the grader's cannot be
    mapped. The other arguments ask for the AttentionRun fields they name."""
    return _attention_run(submission.call(
        Op.ATTENTION, ATTENTION, dim=dim, num_heads=num_heads, qkv_weight=qkv_weight,
        out_weight=out_weight, x=x, mask=mask, train=train, grad_out=grad_out,
        per_position_grads=per_position_grads, rope=rope, dropout=dropout, repeat=repeat,
        own_weights_fallback=own_weights_fallback), x)


def _attention_run(got: dict, x: torch.Tensor) -> AttentionRun:
    """The AttentionRun of a reply to a request on x (batch, seq, dim)."""
    batch, seq, dim = x.shape
    optional = dict(again=(x.shape, "CausalSelfAttention's output of a second call"),
                    grad_x=(x.shape, "CausalSelfAttention's gradient w.r.t. its input"),
                    rows=((seq, batch, seq, dim),
                          "CausalSelfAttention's gradients w.r.t. its input, one per position"))
    return AttentionRun(**{**got, "out": shaped(got["out"], x.shape, "CausalSelfAttention's output"),
                           **{name: shaped(got[name], shape, what)
                              for name, (shape, what) in optional.items() if name in got}})


def attempt_attention(submission: Submission, **request) -> Tuple[Optional[AttentionRun], str]:
    """run_attention with the same keyword arguments, except that when the student's code raises
    it returns (None, the error described) instead of failing the check: (run, '') otherwise."""
    result, error = submission.attempt(Op.ATTENTION, ATTENTION, **request)
    return (None if error else _attention_run(result, request["x"])), error


@dataclass(frozen=True)
class LoadRun:
    """error: why importing backbone.py raised, described ('' when it imported). seconds: how
    long the import took; names: {template name: "missing", or its kind and signature, e.g.
    "class RMSNorm(dim: int, eps: float = 1e-06)"} (empty when it raised)."""

    error: str = ""
    seconds: float = 0.0
    names: dict = field(default_factory=dict)


def run_load(submission: Submission) -> LoadRun:
    """backbone.py imported in the worker (once per grading: later calls give the same answer)."""
    reply = submission.load()
    if not reply.get("ok"):
        return LoadRun(error=describe(reply["error"]))
    return LoadRun(seconds=finite(reply["result"]["seconds"], "the seconds the import took", 0.0),
                   names=reply["result"]["names"])


# -- attention_runs, model_runs (the causal checks: several runs of one module) ----------------

@dataclass(frozen=True)
class AttentionRuns:
    """outs: the output (batch, seq, dim) of each run, in the order sent; own_weights: the
    module ran with its own initial weights (the grader's could not be mapped onto it)."""

    outs: list
    own_weights: bool = False


def attempt_attention_runs(submission: Submission, dim: int, num_heads: int,
                           qkv_weight: torch.Tensor, out_weight: torch.Tensor, runs: list,
                           own_weights_fallback: bool = True) -> Tuple[Optional[AttentionRuns], str]:
    """One student CausalSelfAttention(dim, num_heads), dropout 0, with the projection weights
    qkv_weight (3 * dim, dim) = [W_q; W_k; W_v] and out_weight (dim, dim), run on each of
    `runs` in turn: {"x": (batch, seq, dim), "mask": (seq, seq) 1 = may attend, or None,
    "train": bool, "autograd": "enabled" | "no_grad" | "inference_mode"}. (AttentionRuns, '')
    or, when the student's code raised, (None, the error described)."""
    result, error = submission.attempt(Op.ATTENTION_RUNS, ATTENTION, dim=dim, num_heads=num_heads,
                                       qkv_weight=qkv_weight, out_weight=out_weight, runs=runs,
                                       own_weights_fallback=own_weights_fallback)
    if error:
        return None, error
    outs = listed(result["outs"], len(runs), "CausalSelfAttention's outputs, one per run")
    return AttentionRuns(outs=[shaped(out, run["x"].shape, "CausalSelfAttention's output")
                               for out, run in zip(outs, runs)],
                         own_weights=result["own_weights"]), ""


def run_model_runs(submission: Submission, config: dict, seed: int, runs: list,
                   substitute_norm: bool = False) -> list:
    """The logits (batch, seq, vocab_size) of each of `runs` ({"ids": (batch, seq), "train":
    bool, "autograd": as for attempt_attention_runs}) from one student
    DecoderOnlyTransformer(**config) built with `seed` (the same in every worker process),
    every dropout 0; substitute_norm builds it with torch.nn.RMSNorm in place of the student's."""
    logits = listed(submission.call(Op.MODEL_RUNS, "DecoderOnlyTransformer", config=config,
                                    seed=seed, runs=runs, substitute_norm=substitute_norm)["logits"],
                    len(runs), "DecoderOnlyTransformer's logits, one per run")
    return [shaped(out, (*run["ids"].shape, config["vocab_size"]), "DecoderOnlyTransformer's logits")
            for out, run in zip(logits, runs)]


# -- model_api ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelAPI:
    """How the student's DecoderOnlyTransformer.forward is called and what it returns
    (worker/adapt.ModelAPI). plain, trained: the layout of forward(input_ids) and of
    forward(input_ids, targets): 0 logits only, n an n-tuple, -1 a dict. loss_at: the loss's
    index in that tuple (None: not returned). targets: the targets parameter's name. shifts: it
    pairs logits[:, :-1] with targets[:, 1:] itself. ignore_index: a target id its loss leaves
    out, or None."""

    plain: int = 2
    trained: int = 2
    loss_at: Optional[int] = 1
    targets: Optional[str] = "targets"
    shifts: bool = False
    ignore_index: Optional[int] = None


MAX_RETURNED = 1024  # items of a tuple forward returns: far more than any API the template allows


def run_model_api(submission: Submission, vocab_size: int, seconds: float) -> ModelAPI:
    """The student's model API, read off their DecoderOnlyTransformer with `vocab_size` tokens
    built with the grader's attention and RMSNorm. Requested once per grading
    (Submission.call_once, under its own time limit of `seconds`): every caller gets the same
    answer, or the same failed Verdict."""
    got = submission.call_once(
        Op.MODEL_API, "reading the API of your DecoderOnlyTransformer (built with the grader's "
        "attention and RMSNorm)", seconds, vocab_size=vocab_size)
    layout = "the layout of what forward returns (0: logits, n: an n-tuple, -1: a dict)"
    return ModelAPI(**{**got, "plain": counted(got["plain"], layout, -1, MAX_RETURNED),
                       "trained": counted(got["trained"], layout, -1, MAX_RETURNED),
                       "loss_at": None if got["loss_at"] is None else counted(
                           got["loss_at"], "the loss's place in what forward returns", 0,
                           MAX_RETURNED - 1)})


# -- train_epoch -------------------------------------------------------------------------------
# What one call of train_epoch did to the grader's stand-in model (worker/ops/training.py). The
# parameters are raw values the grader checks by recomputing them; every other field is what
# the student's process says about itself: usable to word a likely cause, never to grant a point.

@dataclass(frozen=True)
class OptimizerStep:
    """One step() of any optimizer during the call: before, after: the stand-in's parameters
    [embedding (vocab, dim), head (vocab, dim), bias (vocab,)] around it. Said by the worker:
    optimizer, its class name; given, it is the optimizer passed to train_epoch; holds_model, it
    holds the stand-in's parameters; hyper, its first parameter group's hyperparameters (lr,
    momentum, betas, ...); had_grads, a non-zero gradient was on the model at step(); backwards,
    backward passes that reached the model since the previous step; grad_norm_after, the gradient norm at the next zero_grad() or the epoch's end (None: no
    gradient; absent: neither came)."""

    optimizer: str
    given: bool
    holds_model: bool
    hyper: dict
    had_grads: bool
    backwards: int
    before: list
    after: list
    grad_norm_after: Optional[float] = None


@dataclass(frozen=True)
class TrainEpochRun:
    """steps: every OptimizerStep, in order; backwards: backward
    passes that reached the model in all (said by the worker); end: the parameters
    when train_epoch returned; returned: its return value as a float (None when it was not a
    number); returned_type: its type's name."""

    steps: list
    backwards: int
    end: list
    returned: Optional[float]
    returned_type: str


def run_train_epoch(submission: Submission, states: torch.Tensor, actions: torch.Tensor,
                    batch_size: int, parameters: dict, train_offset: torch.Tensor,
                    grad_scale: float, learning_rate: float, api: Optional[ModelAPI],
                    seconds: float) -> TrainEpochRun:
    """One call of the student's train_epoch (once per grading: Submission.call_once, under
    its own time limit of `seconds`) on worker.known_good.TrainingStandIn(**parameters
    {"embedding", "head", "bias"}, train_offset (vocab,), grad_scale) taking on `api` (the
    template's API when None), with SGD(learning_rate), over an unshuffled DataLoader of
    (states (N, seq, state_dim), actions (N, seq)) in batches of `batch_size`; the model is
    passed in eval mode."""
    got = submission.call_once(Op.TRAIN_EPOCH, "train_epoch", seconds, states=states,
                               actions=actions, batch_size=batch_size, parameters=parameters,
                               train_offset=train_offset, grad_scale=grad_scale,
                               learning_rate=learning_rate,
                               api=vars(api) if api is not None else None)
    try:
        return read_train_epoch_reply(got, [parameters[name] for name in TrainingStandIn.PARAMETERS])
    except (TypeError, KeyError, ValueError) as error:
        # Only the submission's code runs in the worker besides the kit's: a reply the kit's
        # op cannot give is the submission's doing.
        fail(Verdict(measured="the worker's reply to the train_epoch request",
                     found=f"malformed ({str(error)[:200]})", kind="property",
                     expected="the reply the grader's train_epoch op gives",
                     hint="train_epoch must train the model it is given, not reach into the grader."))


def read_train_epoch_reply(got: dict, like: list) -> TrainEpochRun:
    """The TrainEpochRun of a reply, every field checked against its type (parameters: float32
    tensors shaped as `like`); raises TypeError, KeyError or ValueError otherwise."""
    def parameters(value):
        if not (isinstance(value, list) and len(value) == len(like) and all(
                isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == p.shape
                and t.layout == torch.strided and torch.isfinite(t).all() for t, p in zip(value, like))):
            raise ValueError("parameters that are not the model's")
        return value

    def typed(value, kinds, name):
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise TypeError(f"{name} of type {type(value).__name__}")
        return value

    def hyperparameters(value):
        typed(value, dict, "hyper")
        kept = {typed(k, str, "hyperparameter name")[:40]: v for k, v in list(value.items())[:20]
                if isinstance(v, (bool, int, float)) or (isinstance(v, list) and len(v) <= 4
                                                         and all(isinstance(x, float) for x in v))}
        numbers = [v for v in kept.values() if not isinstance(v, list)] + kept.get("betas", [])
        if not all(math.isfinite(v) for v in numbers) or len(kept.get("betas", [0, 0])) != 2:
            raise ValueError("hyperparameters that are not numbers an optimizer holds")
        return kept

    steps = [OptimizerStep(optimizer=typed(step["optimizer"], str, "optimizer")[:100],
                           given=typed(step["given"], bool, "given"),
                           holds_model=typed(step["holds_model"], bool, "holds_model"),
                           hyper=hyperparameters(step["hyper"]),
                           had_grads=typed(step["had_grads"], bool, "had_grads"),
                           backwards=typed(step["backwards"], int, "backwards"),
                           before=parameters(step["before"]), after=parameters(step["after"]),
                           grad_norm_after=typed(step.get("grad_norm_after"), (float, type(None)),
                                                 "grad_norm_after"))
             for step in typed(got["steps"], list, "steps")[:10_000]]
    return TrainEpochRun(steps=steps,
                         backwards=typed(got["backwards"], int, "backwards"),
                         end=parameters(got["end"]),
                         returned=typed(got["returned"], (float, type(None)), "returned"),
                         returned_type=typed(got["returned_type"], str, "returned_type")[:100])


# -- convergence -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvergenceTraining:
    """epoch_losses: what train_epoch returned after each epoch (as returned, any type);
    epoch_cpu_seconds: CPU seconds from the start to each epoch's end; step_losses: the loss of
    every forward call that returned (logits, loss), for the loss-curve figure."""

    epoch_losses: list
    epoch_cpu_seconds: list
    step_losses: list


def run_convergence_train(submission: Submission, config: dict, seed: int, states: torch.Tensor,
                          actions: torch.Tensor, batch_size: int, epochs: int,
                          learning_rate: float) -> ConvergenceTraining:
    """The student's DecoderOnlyTransformer(**config), seeded, trained by their train_epoch for
    `epochs` epochs with AdamW(learning_rate) over a shuffled (seeded) DataLoader of (states
    (N, seq, state_dim), actions (N, seq)); the worker keeps the trained model for
    run_convergence_predict and run_trained_attention."""
    got = submission.call(
        Op.CONVERGENCE_TRAIN, "training your DecoderOnlyTransformer with your train_epoch",
        config=config, seed=seed, states=states, actions=actions, batch_size=batch_size,
        epochs=epochs, learning_rate=learning_rate)
    return ConvergenceTraining(
        epoch_losses=listed(got["epoch_losses"], epochs, "losses train_epoch returned, one per epoch"),
        epoch_cpu_seconds=[finite(seconds, "the CPU seconds of an epoch", 0.0) for seconds in listed(
            got["epoch_cpu_seconds"], epochs, "epoch times, one per epoch")],
        step_losses=got["step_losses"])


def run_convergence_predict(submission: Submission, prefixes: torch.Tensor,
                            vocab_size: int) -> torch.Tensor:
    """The trained model's logits (batch, vocab_size) at the last position of each prefix
    (batch, t)."""
    logits = submission.call(Op.CONVERGENCE_PREDICT, "your trained model", prefixes=prefixes)["logits"]
    return shaped(logits, (prefixes.shape[0], vocab_size),
                  "the trained model's logits at the last position")


@dataclass(frozen=True)
class AttentionMaps:
    """weights: the trained model's attention weights (layers, heads, seq, seq); source:
    "softmax" (its own softmax, recorded) or "recomputed" (from its projections and RoPE)."""

    weights: torch.Tensor
    source: str


def run_trained_attention(submission: Submission, tokens: torch.Tensor, num_layers: int,
                          num_heads: int) -> AttentionMaps:
    """The trained model's (num_layers layers of num_heads heads) attention weights on tokens
    (1, seq), for the figures."""
    got = submission.call(Op.TRAINED_ATTENTION, "drawing your model's attention maps", tokens=tokens)
    seq = tokens.shape[1]
    return AttentionMaps(weights=shaped(got["weights"], (num_layers, num_heads, seq, seq),
                                        "the trained model's attention weights"),
                         source=got["source"])


# -- kv_cache ----------------------------------------------------------------------------------
# The student's cached decoding, found and measured by worker/ops/generation.py. An `error`
# below is the student's exception as the worker describes it ({"kind", "message",
# "line", "where"}), for submission.describe; None when the code did not raise.

KV_CACHE = "your cached decoding"  # what the requests run, in messages

@dataclass(frozen=True)
class SearchedPath:
    """One candidate decoding path tried on the probe: its name ("generate(use_cache=True)"),
    its error, the positions its first attention layer (else its embedding) saw at each step,
    and whether that counts as a cache; layers_sharing_an_argument: how many attention layers
    were passed one and the same non-tensor object (a cache shared across layers), 0 when none."""

    path: str
    error: Optional[dict]
    lengths: list
    cached: bool
    layers_sharing_an_argument: int = 0


@dataclass(frozen=True)
class DecodedCase:
    """One prompt (batch, P) decoded greedily for `new` tokens through the cached path and by
    full forward passes. tokens, full_tokens: (batch, P + new) ids (tokens None when it raised).
    step_logits, full_logits: the logits that chose each new token (batch, new, vocab), where
    the cached path's could be recorded (logits_source says from what), else None.
    prefill_logits, full_prompt_logits: the prompt pass's logits (batch, P, vocab);
    prefill_attention, full_prompt_attention: its first attention layer's output; embedded,
    attended: positions fed to the embedding and to the first attention layer at each step.
    layers_sharing_an_argument: how many attention layers were passed one and the same
    non-tensor object (a cache shared across layers), 0 when none. fresh_model: when the case
    failed, {"error", "tokens"} of it decoded as the first call of a freshly built model."""

    error: Optional[dict]
    tokens: Optional[torch.Tensor]
    logits_source: Optional[str]
    prefill_logits: Optional[torch.Tensor]
    step_logits: Optional[torch.Tensor]
    embedded: list
    attended: list
    prefill_attention: Optional[torch.Tensor]
    full_tokens: torch.Tensor
    full_logits: torch.Tensor
    full_prompt_logits: Optional[torch.Tensor]
    full_prompt_attention: Optional[torch.Tensor]
    layers_sharing_an_argument: int = 0
    fresh_model: Optional[dict] = None


@dataclass(frozen=True)
class KVCacheDecoding:
    """found: a cached path was found (searched: every candidate tried, in order). When found:
    path, its name; call, how it was called ("generate(ids, n, top_k=1, use_cache=True)");
    greedy, whether it takes the greedy sampling asked for; cases, one DecodedCase per case."""

    found: bool
    searched: list
    cases: list
    path: str = ""
    call: str = ""
    greedy: bool = False


def run_kv_cache_decode(submission: Submission, config: dict, seed: int, probe: dict,
                        cases: list, greedy: str) -> KVCacheDecoding:
    """On the student's DecoderOnlyTransformer(**config) with seeded weights: find the cached
    decoding path (probe {"prompt": (batch, P) ids, "new_tokens"}, decoded with its default
    sampling), then decode each case ({"prompt", "new_tokens"}) greedily through it (greedy:
    "top_k" for top_k=1, "temperature" for temperature 1e-6) and by full forward passes."""
    got = submission.call(Op.KV_CACHE_DECODE, KV_CACHE, config=config, seed=seed, probe=probe,
                          cases=cases, greedy=greedy)
    searched = [SearchedPath(**{**entry, "layers_sharing_an_argument": counted(
        entry["layers_sharing_an_argument"], "attention layers sharing an argument")})
        for entry in got["searched"]]
    decoded = listed(got.get("cases", []), len(cases) if got["found"] else 0,
                     "decoded cases, one per prompt")
    return KVCacheDecoding(**{**got, "searched": searched, "cases": [
        _decoded_case(case, spec["prompt"].shape, spec["new_tokens"], config)
        for case, spec in zip(decoded, cases)]})


def _decoded_case(got: dict, prompt: tuple, new: int, config: dict) -> DecodedCase:
    """The DecodedCase of one case's reply for a prompt of shape (batch, P), `new` tokens. What
    the full passes give has its exact shape; what the cached path gives, its rank (a wrong
    length is the check's to judge)."""
    batch, length = prompt
    vocab, dim = config["vocab_size"], config["dim"]
    fresh = got["fresh_model"]
    return DecodedCase(**{
        **got,
        "tokens": shaped(got["tokens"], (batch, ANY), "the cached path's ids", optional=True),
        "prefill_logits": shaped(got["prefill_logits"], (batch, ANY, vocab),
                                 "the cached path's prompt logits", optional=True),
        "step_logits": shaped(got["step_logits"], (batch, ANY, vocab),
                              "the cached path's logits at each step", optional=True),
        "prefill_attention": shaped(got["prefill_attention"], (batch, ANY, dim),
                                    "the cached path's first attention output", optional=True),
        "full_tokens": shaped(got["full_tokens"], (batch, length + new), "full decoding's ids"),
        "full_logits": shaped(got["full_logits"], (batch, new, vocab), "full decoding's logits"),
        "full_prompt_logits": shaped(got["full_prompt_logits"], (batch, length, vocab),
                                     "full decoding's prompt logits", optional=True),
        "full_prompt_attention": shaped(got["full_prompt_attention"], (batch, length, dim),
                                        "full decoding's first attention output", optional=True),
        "layers_sharing_an_argument": counted(got["layers_sharing_an_argument"],
                                              "attention layers sharing an argument"),
        "fresh_model": None if fresh is None else {**fresh, "tokens": shaped(
            fresh["tokens"], (batch, ANY), "a fresh model's cached ids", optional=True)}})


@dataclass(frozen=True)
class DecodingWithoutRope:
    """The cached path and full passes with every RotaryPositionalEmbedding made the identity:
    as in DecodedCase (tokens None when the cached path raised)."""

    error: Optional[dict]
    tokens: Optional[torch.Tensor]
    step_logits: Optional[torch.Tensor]
    full_tokens: torch.Tensor
    full_logits: torch.Tensor


@dataclass(frozen=True)
class PositionZero:
    """Full passes over the cached path's own tokens with the positions after the prompt rotated
    at position 0: logits (batch, new, vocab) at each step; calls: RoPE forward calls seen (0:
    the model never called its RoPE module)."""

    calls: int
    logits: torch.Tensor


@dataclass(frozen=True)
class RopeHypotheses:
    """rope_modules: how many RotaryPositionalEmbedding modules the model has; when any, the two
    reruns (else None)."""

    rope_modules: int
    without_rope: Optional[DecodingWithoutRope] = None
    position_zero: Optional[PositionZero] = None


def run_kv_cache_hypotheses(submission: Submission, config: dict, seed: int, path: str,
                            greedy: str, prompt: torch.Tensor, new_tokens: int,
                            tokens: torch.Tensor) -> RopeHypotheses:
    """Reruns that tell RoPE bugs of the cached steps apart, on fresh copies of the same seeded
    model: the cached path `path` with RoPE switched off, and full passes over `tokens` (the
    cached path's output for `prompt`) with the new positions rotated at position 0."""
    got = submission.call(Op.KV_CACHE_HYPOTHESES, KV_CACHE, config=config, seed=seed, path=path,
                          greedy=greedy, prompt=prompt, new_tokens=new_tokens, tokens=tokens)
    rope_modules = counted(got["rope_modules"], "RotaryPositionalEmbedding modules")
    if rope_modules and not {"without_rope", "position_zero"} <= set(got):
        _malformed("the reruns with RoPE changed", "missing", "both, since the model has RoPE")
    if not rope_modules:
        return RopeHypotheses(rope_modules=0)
    batch, length = prompt.shape
    vocab = config["vocab_size"]
    off, zero = got["without_rope"], got["position_zero"]
    return RopeHypotheses(
        rope_modules=rope_modules,
        without_rope=DecodingWithoutRope(
            error=off["error"],
            tokens=shaped(off["tokens"], (batch, ANY), "the ids without RoPE", optional=True),
            step_logits=shaped(off["step_logits"], (batch, ANY, vocab),
                               "the cached path's logits without RoPE", optional=True),
            full_tokens=shaped(off["full_tokens"], (batch, length + new_tokens),
                               "full decoding's ids without RoPE"),
            full_logits=shaped(off["full_logits"], (batch, new_tokens, vocab),
                               "full decoding's logits without RoPE")),
        position_zero=PositionZero(
            calls=counted(zero["calls"], "RoPE calls"),
            logits=shaped(zero["logits"], (batch, ANY, vocab),
                          "the logits with new positions rotated at 0")))


@dataclass(frozen=True)
class DecodingSpeed:
    """CPU seconds (one thread) to decode the new tokens through the cached path and by full
    forward passes."""

    cached_seconds: float
    full_seconds: float


def run_kv_cache_speed(submission: Submission, config: dict, seed: int, path: str,
                       greedy: Optional[str], prompt: torch.Tensor, new_tokens: int) -> DecodingSpeed:
    """Time `new_tokens` of decoding after `prompt` (1, P) through the cached path `path` and by
    full forward passes, each after a 2-token warm-up."""
    got = submission.call(Op.KV_CACHE_SPEED, KV_CACHE, config=config, seed=seed, path=path,
                          greedy=greedy, prompt=prompt, new_tokens=new_tokens)
    return DecodingSpeed(**{name: finite(got[name], f"the CPU seconds of {words}", 0.0)
                            for name, words in (("cached_seconds", "cached decoding"),
                                                ("full_seconds", "full passes"))})
