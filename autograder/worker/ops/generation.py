"""The student's cached decoding (the mastery checks): which path caches, what it computes, and
how long it takes, next to decoding by full forward passes of the same model.

The model is the student's own DecoderOnlyTransformer in eval mode with dropout 0, its weights
redrawn from a seed at order one (each Linear N(0, 1/fan_in), each Embedding N(0, 1)): with the
template's 0.02-std init the attention is nearly uniform and the logits nearly flat, so a cache
that rotates keys at the wrong positions decodes the same tokens as a correct one. Forward hooks
record what each step of a decoding does, without changing it: how many positions it embeds and
feeds to the first attention layer, the logits of the vocabulary head, and the first attention
layer's output on the prompt. The worker never judges: the grader compares (checks/test_mastery.py).
"""

import time

import torch

from ..adapt.calls import call_model
from ..adapt.construction import build, set_dropout
from ..adapt.decoding import decode_paths
from ..fault import is_internal
from ..protocol import Op
from ..replies import detached_copy
from ..session import describe_error, op


def build_model(session, config: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build(session, "DecoderOnlyTransformer", **config)
    set_dropout(model, 0.0)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    * module.in_features ** -0.5)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
    return model


def _attention_layers(session, model) -> list:
    cls = getattr(session.module, "CausalSelfAttention", None)
    return [m for m in model.modules() if isinstance(m, cls)] if isinstance(cls, type) else []


class SharedArguments:
    """Pre-hooks on every attention layer recording the objects other than tensors (dicts,
    lists, cache objects) passed to each: `shared()` is how many layers got an object another
    layer got too (the same cache handed to every layer). The objects are kept, so that no id
    is reused while decoding."""

    def __init__(self, layers: list):
        self.seen, self.kept = {}, []
        self.handles = [layer.register_forward_pre_hook(self._hook(index), with_kwargs=True)
                        for index, layer in enumerate(layers)]

    def _hook(self, index: int):
        def hook(_module, args, kwargs):
            for value in (*args, *kwargs.values()):
                if value is not None and not isinstance(value, (torch.Tensor, bool, int, float, str)):
                    self.kept.append(value)
                    self.seen.setdefault(id(value), set()).add(index)
        return hook

    def shared(self) -> int:
        return max((len(layers) for layers in self.seen.values() if len(layers) > 1), default=0)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _first_attention(session, model):
    cls = getattr(session.module, "CausalSelfAttention", None)
    if isinstance(cls, type):
        return next((m for m in model.modules() if isinstance(m, cls)), None)
    return None


def _vocabulary_head(model, vocab_size: int):
    head = getattr(model, "lm_head", None)
    if isinstance(head, torch.nn.Linear) and head.out_features == vocab_size:
        return head
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == vocab_size]
    return heads[-1] if heads else None


def _logits_of(output):
    """The logits tensor in a model's output (tensor, (logits, ...) tuple or {"logits": ...})."""
    if isinstance(output, dict):
        output = output.get("logits")
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output if isinstance(output, torch.Tensor) and output.dim() == 3 else None


class Recorder:
    """Hooks recording each forward step of the model while it decodes: `embedded` and
    `attended` (positions per call of the token embedding and of the first attention layer's
    input projection), `head` and `model` (the logits, (batch, seq, vocab) per call, from the
    vocabulary head and from the model's forward), and `attention` (the first attention layer's
    output on its first call, (batch, seq, dim))."""

    def __init__(self, session, model, vocab_size: int):
        self.embedded, self.attended, self.head, self.model = [], [], [], []
        self.attention = None
        self.handles = []
        embedding = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)
                          and m.num_embeddings == vocab_size), None)
        if embedding is not None:
            self._before(embedding, lambda x: self.embedded.append(int(x.shape[-1])))
        attention = _first_attention(session, model)
        if attention is not None:
            projection = getattr(attention, "qkv_proj", None) or getattr(attention, "q_proj", None)
            target = projection if isinstance(projection, torch.nn.Module) else attention
            self._before(target, lambda x: self.attended.append(int(x.shape[-2])))
            output = getattr(attention, "out_proj", None)
            self._after(output if isinstance(output, torch.nn.Module) else attention, self._attention)
        head = _vocabulary_head(model, vocab_size)
        if head is not None:
            self._after(head, lambda out: self.head.append(detached_copy(out).float()))
        self._after(model, self._model)

    def _before(self, module, record):
        def hook(_module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()), None)
            if isinstance(x, torch.Tensor) and x.dim() >= 2:
                record(x)
        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _after(self, module, record):
        self.handles.append(module.register_forward_hook(lambda _m, _args, output: record(output)))

    def _attention(self, output):
        if self.attention is None:
            output = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(output, torch.Tensor):
                self.attention = detached_copy(output).float()

    def _model(self, output):
        logits = _logits_of(output)
        if logits is not None:
            self.model.append(detached_copy(logits).float())

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def logits(self, steps: int):
        """(source, the first call's logits (batch, seq, vocab), [(batch, vocab) at the last
        position of each of the first `steps` calls]), from the vocabulary head when it was
        called once per step at least, else from the model's forward; Nones when neither was."""
        for source, calls in (("vocabulary head", self.head), ("model forward", self.model)):
            if len(calls) >= steps:
                return source, calls[0], torch.stack([c[:, -1] for c in calls[:steps]], dim=1)
        return None, None, None


def full_greedy(session, model, prompt: torch.Tensor, new_tokens: int, vocab_size: int):
    """Greedy decoding by full forward passes: (ids (batch, seq + new), logits at each step's
    last position (batch, new, vocab), the first pass's logits (batch, seq, vocab), the first
    attention layer's output on the prompt)."""
    ids, steps, first, attention = prompt, [], None, None
    with torch.no_grad():
        for step in range(new_tokens):
            recorder = Recorder(session, model, vocab_size) if step == 0 else None
            try:
                logits = call_model(session, model, ids).float()
            finally:
                if recorder is not None:
                    recorder.remove()
                    attention = recorder.attention
            if step == 0:
                first = detached_copy(logits)
            steps.append(detached_copy(logits[:, -1]))
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True).to(ids.dtype)], dim=1)
    return ids, torch.stack(steps, dim=1), first, attention


def _decode(session, model, path, prompt, new_tokens, greedy, seed, vocab_size):
    """(the path's decoding of the prompt, seeded, or None; the recorder; the error the
    student's code raised, described, or None). An error of the kit's own is raised."""
    recorder = Recorder(session, model, vocab_size)
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            tokens = path.call(prompt, new_tokens, greedy)
        return tokens, recorder, None
    except BaseException as error:  # noqa: BLE001 (student code: any error is data here)
        if is_internal(error):
            raise
        return None, recorder, describe_error(error)
    finally:
        recorder.remove()


def find_path(session, model, prompt: torch.Tensor, new_tokens: int, seed: int, vocab_size: int):
    """(the first candidate of decode_paths that uses a cache, or None; what each
    candidate did on the probe: its positions per step in the first attention layer, or its
    error). A path uses a cache when every forward step after the first processes fewer
    positions than the sequence holds by then (decoding by full passes processes all of them)."""
    searched = []
    for path in decode_paths(session, model):
        arguments = SharedArguments(_attention_layers(session, model))
        try:
            tokens, recorder, error = _decode(session, model, path, prompt, new_tokens, None, seed,
                                              vocab_size)
        finally:
            arguments.remove()
        lengths = recorder.attended or recorder.embedded
        cached = error is None and len(lengths) >= 2 and all(
            length < prompt.shape[1] + step for step, length in enumerate(lengths) if step)
        searched.append({"path": path.name, "error": error, "lengths": lengths, "cached": cached,
                         "layers_sharing_an_argument": arguments.shared()})
        if cached:
            return path, searched
    return None, searched


def _path_named(session, model, name: str):
    return next(path for path in decode_paths(session, model) if path.name == name)


@op(Op.KV_CACHE_DECODE)
def run_kv_cache_decode(session, config: dict, seed: int, probe: dict, cases: list,
                        greedy: str) -> dict:
    """Find the cached path (probe: {"prompt", "new_tokens"}, decoded with its default sampling),
    then decode each case ({"prompt": (batch, seq) ids, "new_tokens"}) greedily through it and by
    full forward passes. Returns {"found": False, "searched"} or {"found": True, "path": its
    name, "call": the call as written, "greedy": whether it took the greedy keyword,
    "searched": [{"path", "error", "lengths": positions per step, "cached"}], "cases": [per
    case: "error", "tokens" (batch, seq + new), "layers_sharing_an_argument" (how many attention
    layers were passed one and the same non-tensor object, e.g. a cache dict; 0 when none),
    "fresh_model" (when the case raised or its tokens differ from the full passes': {"error",
    "tokens"} of the same case decoded as the first call of a freshly built model, else None),
    "logits_source", "prefill_logits" (batch, seq,
    vocab), "step_logits" (batch, new, vocab), "embedded", "attended", "prefill_attention"
    (batch, seq, dim), and the same by full passes: "full_tokens", "full_logits",
    "full_prompt_logits", "full_prompt_attention"]}."""
    vocab = config["vocab_size"]
    model = build_model(session, config, seed)
    path, searched = find_path(session, model, probe["prompt"], probe["new_tokens"], seed, vocab)
    if path is None:
        return {"found": False, "searched": searched}
    session.note(f"KV-cache path found: {path.name} (after the prompt, each step fed "
                 f"{max(searched[-1]['lengths'][1:])} position(s) to attention)"
                 + (f"; decoded greedily as {path.described(greedy)}" if cases else ""))
    results = []
    for case in cases:
        prompt, new_tokens = case["prompt"], case["new_tokens"]
        arguments = SharedArguments(_attention_layers(session, model))
        try:
            tokens, recorder, error = _decode(session, model, path, prompt, new_tokens, greedy, seed,
                                              vocab)
        finally:
            arguments.remove()
        source, prefill, steps = recorder.logits(new_tokens)
        full_tokens, full_steps, full_prompt, full_attention = full_greedy(session, model, prompt,
                                                                           new_tokens, vocab)
        fresh = None
        if error is not None or not torch.equal(tokens, full_tokens):
            # the same case as the first call of a new model: a cache left from earlier calls
            # cannot reach it
            fresh_model = build_model(session, config, seed)
            fresh_tokens, _, fresh_error = _decode(session, fresh_model, _path_named(
                session, fresh_model, path.name), prompt, new_tokens, greedy, seed, vocab)
            fresh = {"error": fresh_error, "tokens": detached_copy(fresh_tokens)
                     if fresh_tokens is not None else None}
        results.append({
            "layers_sharing_an_argument": arguments.shared(), "fresh_model": fresh,
            "error": error, "tokens": detached_copy(tokens) if tokens is not None else None,
            "logits_source": source, "prefill_logits": prefill, "step_logits": steps,
            "embedded": recorder.embedded, "attended": recorder.attended,
            "prefill_attention": recorder.attention,
            "full_tokens": full_tokens, "full_logits": full_steps, "full_prompt_logits": full_prompt,
            "full_prompt_attention": full_attention,
        })
    return {"found": True, "path": path.name, "call": path.described(greedy),
            "greedy": bool(path.sampling(greedy)), "searched": searched, "cases": results}


def _rope_modules(session, model) -> list:
    cls = getattr(session.module, "RotaryPositionalEmbedding", None)
    return [m for m in model.modules() if isinstance(cls, type) and isinstance(m, cls)]


def _without_rotation(module) -> None:
    """The module rotates nothing: forward returns (q, k) as given, and its cos/sin tables (for
    code that slices them itself) are 1 and 0."""
    module.forward = lambda q, k, *args, **kwargs: (q, k)
    for name, value in (("cos_cached", 1.0), ("sin_cached", 0.0)):
        table = getattr(module, name, None)
        if isinstance(table, torch.Tensor):
            setattr(module, name, torch.full_like(table, value))


def _new_positions_unrotated(module, prompt_length: int, calls: list) -> None:
    """forward rotates as before, except positions >= prompt_length, which it leaves as they
    are: rotating at position 0 (the angle 0) in every RoPE convention."""
    original = module.forward

    def forward(q, k, *args, **kwargs):
        calls.append(1)
        q_rotated, k_rotated = original(q, k, *args, **kwargs)
        if q.shape[-2] > prompt_length:
            q_rotated = torch.cat([q_rotated[..., :prompt_length, :], q[..., prompt_length:, :]], dim=-2)
            k_rotated = torch.cat([k_rotated[..., :prompt_length, :], k[..., prompt_length:, :]], dim=-2)
        return q_rotated, k_rotated
    module.forward = forward


@op(Op.KV_CACHE_HYPOTHESES)
def run_kv_cache_hypotheses(session, config: dict, seed: int, path: str, greedy: str,
                            prompt: torch.Tensor, new_tokens: int, tokens: torch.Tensor) -> dict:
    """Raw material for naming a RoPE bug of the cached steps, on fresh copies of the model:
    "without_rope": the cached path and full passes with every RotaryPositionalEmbedding made
    the identity; "position_zero": full passes over `tokens` (the cached path's own output)
    with the positions after the prompt left unrotated, i.e. rotated at position 0, the logits
    at each step (batch, new, vocab). Returns {"rope_modules": how many, and when any:
    "without_rope": {"error", "tokens", "step_logits", "full_tokens", "full_logits"},
    "position_zero": {"calls": rope calls, "logits"}}."""
    vocab = config["vocab_size"]
    model = build_model(session, config, seed)
    modules = _rope_modules(session, model)
    result = {"rope_modules": len(modules)}
    if not modules:
        return result
    for module in modules:
        _without_rotation(module)
    decoded, recorder, error = _decode(session, model, _path_named(session, model, path), prompt,
                                       new_tokens, greedy, seed, vocab)
    _, _, steps = recorder.logits(new_tokens)
    full_tokens, full_steps, _, _ = full_greedy(session, model, prompt, new_tokens, vocab)
    result["without_rope"] = {"error": error, "tokens": detached_copy(decoded) if decoded is not None else None,
                              "step_logits": steps, "full_tokens": full_tokens, "full_logits": full_steps}
    model = build_model(session, config, seed)
    calls = []
    for module in _rope_modules(session, model):
        _new_positions_unrotated(module, prompt.shape[1], calls)
    with torch.no_grad():
        logits = call_model(session, model, tokens[:, :-1]).float()
    result["position_zero"] = {"calls": len(calls),
                               "logits": detached_copy(logits[:, prompt.shape[1] - 1:])}
    return result


@op(Op.KV_CACHE_SPEED)
def run_kv_cache_speed(session, config: dict, seed: int, path: str, greedy: str,
                       prompt: torch.Tensor, new_tokens: int) -> dict:
    """CPU seconds (this process, one thread) to decode new_tokens after the prompt through the
    cached path and by full forward passes, each after a 2-token warm-up. Returns
    {"cached_seconds", "full_seconds"}."""
    vocab = config["vocab_size"]
    model = build_model(session, config, seed)
    cached = _path_named(session, model, path)
    seconds = {}
    for name, decode in (("cached", lambda n: cached.call(prompt, n, greedy)),
                         ("full", lambda n: full_greedy(session, model, prompt, n, vocab))):
        with torch.no_grad():
            decode(2)
            start = time.process_time()
            decode(new_tokens)
            seconds[name] = time.process_time() - start
    return {"cached_seconds": seconds["cached"], "full_seconds": seconds["full"]}
