"""The one place where the student's API is fitted to the calls the ops make.

Real submissions deviate from the template while behaving correctly: projection layers other
than qkv_proj and out_proj (mapped by shape and role), forward without a `mask` argument or
requiring it, a tuple returned from forward, extra constructor keywords, a model that
returns logits only or (logits, loss, extra), or that shifts the targets itself, a train_epoch
with extra optional arguments that returns a tensor, script code left at module level. Each
function here calls the student's code the template's way first, adapts when the signature or
behaviour says otherwise, and records what it adapted as a note that the grader shows to the
student; what cannot be adapted raises an error that names the signature the grader expected.
"""

import contextlib
import importlib.machinery
import importlib.util
import inspect
import re
import sys
import traceback

import torch


def _positional_parameters(function):
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    names = []
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter)
    return names


def first_tensor(output, session, what: str) -> torch.Tensor:
    """The tensor a forward returned, unwrapping (tensor, extras...) tuples."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        session.note(f"{what} returned a {type(output).__name__} of {len(output)} items: "
                     "graded its first item")
        return output[0]
    raise TypeError(f"{what} returned {type(output).__name__}, expected a tensor")


def call_attention(session, attention, x: torch.Tensor, mask):
    """attention(x, mask) as the template defines it, or attention(x) if forward takes no mask."""
    parameters = _positional_parameters(attention.forward)
    if parameters is not None and len(parameters) < 2:
        if mask is not None:
            session.note("CausalSelfAttention.forward takes no `mask` argument: called forward(x), "
                         "relying on its own causal mask")
        return first_tensor(attention(x), session, "CausalSelfAttention.forward")
    if mask is None and parameters is not None and parameters[1].default is inspect.Parameter.empty:
        session.note("CausalSelfAttention.forward requires `mask`: passed the causal mask "
                     "torch.tril(torch.ones(T, T))")
        mask = torch.tril(torch.ones(x.shape[1], x.shape[1]))
    output = attention(x, mask) if mask is not None else attention(x)
    return first_tensor(output, session, "CausalSelfAttention.forward")


def call_model(session, model, input_ids: torch.Tensor):
    """Logits (batch, seq, vocab) from model(input_ids), whatever container they come in."""
    output = model(input_ids)
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        session.note("DecoderOnlyTransformer.forward returned a dict: graded output['logits']")
        return output["logits"]
    if isinstance(output, torch.Tensor):
        session.note("DecoderOnlyTransformer.forward returned logits only (the template returns "
                     "(logits, loss)): graded the logits")
        return output
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], torch.Tensor):
        return output[0]  # the template's (logits, loss)
    return first_tensor(output, session, "DecoderOnlyTransformer.forward")


class ModelAPI:
    """How the student's DecoderOnlyTransformer.forward is called and what it returns, so that a
    stand-in model (the training checks' spy) meets the student's train_epoch exactly as the
    student's own model would. The template's: forward(input_ids, targets=None) -> (logits,
    loss), the loss over the positions as given. It travels between requests as vars(api)."""

    def __init__(self, plain=2, trained=2, loss_at=1, targets="targets", shifts=False,
                 ignore_index=None):
        self.plain = plain  # what forward(input_ids) returns: 0 logits only, n an n-tuple, -1 a dict
        self.trained = trained  # the same for forward(input_ids, targets)
        self.loss_at = loss_at  # where the loss is in that tuple (None: not returned)
        self.targets = targets  # the name of forward's targets parameter
        self.shifts = shifts  # pairs logits[:, :-1] with targets[:, 1:] given targets of full length
        self.ignore_index = ignore_index  # a target id its loss leaves out (cross_entropy's), or None

    def output(self, logits, loss):
        """(logits, loss) arranged as the student's model returns them; None fills extra items."""
        form = self.plain if loss is None else self.trained
        if form == 0:
            return logits
        if form < 0:
            return {"logits": logits, "loss": loss}
        items = [logits] + [None] * (form - 1)
        if loss is not None and self.loss_at is not None:
            items[self.loss_at] = loss
        return tuple(items)


def _form(output):
    if isinstance(output, torch.Tensor):
        return 0
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return -1
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return len(output)
    return None


PROBE_MODEL = dict(dim=16, num_layers=1, num_heads=2, ff_hidden_dim=32, dropout=0.0)


def model_api(session, vocab_size: int) -> ModelAPI:
    """The student's model API, read off one small model of theirs with `vocab_size` tokens: the
    output's layout with and without targets, the targets parameter's name, whether it shifts
    targets of the input's length itself (then d loss / d logits is zero at the last position
    and, at position t, negative only at the class of token t + 1), and a token whose positions
    its loss leaves out (ignore_index; every token is a target in the probe's input, shifted or
    not). Raises what building or running the model raised; the caller decides which parts are
    the student's (ops/training.py substitutes known-good ones)."""
    notes = list(session.notes)  # building the probe model may note what the real ones note
    # Row 0 holds every token after its first position; row 1 is random.
    generator = torch.Generator().manual_seed(0)
    every_token = torch.randperm(vocab_size, generator=generator)
    ids = torch.stack([torch.cat([torch.tensor([vocab_size - 1]), every_token]),
                       torch.randint(vocab_size, (vocab_size + 1,), generator=generator)])
    torch.manual_seed(0)
    model = build(session, "DecoderOnlyTransformer", vocab_size=vocab_size,
                  max_seq_len=2 * vocab_size, **PROBE_MODEL)
    set_dropout(model, 0.0)
    model.eval()
    with torch.no_grad():
        plain = _form(model(ids))
    try:
        trained = model(ids, ids)
    except Exception:  # noqa: BLE001 (forward takes no targets: train_epoch computes the loss)
        trained = None
    session.notes[:] = notes
    if plain is None:
        raise TypeError("DecoderOnlyTransformer.forward(input_ids) returned neither logits, a "
                        "tuple starting with them, nor a dict with 'logits'")
    parameters = _positional_parameters(model.forward) or []
    api = ModelAPI(plain=plain, trained=plain, targets=parameters[1].name if len(parameters) > 1 else None)
    form, logits, loss = _form(trained), None, None
    if form == -1:
        api.trained, api.loss_at = form, None
        logits, loss = trained["logits"], trained.get("loss")
    elif form:
        api.trained, logits = form, trained[0]
        api.loss_at = next((i for i, item in enumerate(trained) if i and isinstance(item, torch.Tensor)
                            and item.numel() == 1 and item.is_floating_point()), None)
        loss = trained[api.loss_at] if api.loss_at is not None else None
    elif form == 0:
        api.trained = 0
    if isinstance(loss, torch.Tensor) and loss.requires_grad and logits.requires_grad:
        (grad,) = torch.autograd.grad(loss.sum(), logits, allow_unused=True)
        if grad is not None and grad.shape[:2] == ids.shape:
            used = grad.ne(0).any(-1)
            api.shifts = bool(used[:, :-1].any() and not used[:, -1].any() and torch.equal(
                grad.argmin(-1)[:, :-1][used[:, :-1]], ids[:, 1:][used[:, :-1]]))
            targets, scored = (ids[:, 1:], used[:, :-1]) if api.shifts else (ids, used)
            left_out = targets[~scored].unique()
            if len(left_out) == 1 and not targets[scored].eq(left_out).any():
                api.ignore_index = int(left_out)
    _note_api(session, api)
    return api


def _note_api(session, api: ModelAPI) -> None:
    stand_in = "in the training checks the grader's stand-in model"
    layouts = {0: "logits only", -1: "a dict"}
    if api.plain != 2 or api.trained != 2 or api.loss_at not in (1, None):
        forms = {layouts.get(form, f"a tuple of {form} items") for form in (api.plain, api.trained)}
        session.note(f"DecoderOnlyTransformer.forward returns {' or '.join(sorted(forms))} (the "
                     f"template returns (logits, loss)): {stand_in} returned the same layout")
    if api.targets not in ("targets", None):
        session.note(f"DecoderOnlyTransformer.forward takes the targets as `{api.targets}`: "
                     f"{stand_in} accepted that name")
    if api.shifts:
        session.note("DecoderOnlyTransformer.forward shifts targets of the input's length itself "
                     f"(logits[:, :-1] against targets[:, 1:]): {stand_in} did the same")
    if api.ignore_index is not None:
        session.note(f"DecoderOnlyTransformer.forward leaves the positions whose target is token "
                     f"{api.ignore_index} out of its loss (ignore_index={api.ignore_index}): "
                     f"{stand_in} did the same")


def set_dropout(module: torch.nn.Module, p: float) -> None:
    """Set every dropout probability in a module tree (nn.Dropout and plain float attributes)."""
    for child in module.modules():
        if isinstance(child, torch.nn.modules.dropout._DropoutNd):
            child.p = p
        elif isinstance(getattr(child, "dropout", None), float):
            child.dropout = p


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous plain-tensor copy that survives the frame encoding."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(tensor).__name__}")
    return tensor.detach().as_subclass(torch.Tensor).clone().contiguous()


def _call_text(name: str, args, kwargs) -> str:
    return f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


def build(session, name: str, *args, **kwargs):
    """Construct the student's class `name` as the template's constructor is called. Keywords
    its constructor does not take are dropped (with a note); extra parameters with defaults are
    left to their defaults; a parameter it requires that the template's does not have cannot be
    guessed, and raises a TypeError that shows both signatures."""
    cls = session.require(name)
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return cls(*args, **kwargs)
    parameters = signature.parameters
    if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        unexpected = [key for key in kwargs if key not in parameters]
        if unexpected:
            session.note(f"{name}() does not accept {', '.join(unexpected)}: built it without")
            kwargs = {key: value for key, value in kwargs.items() if key in parameters}
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{name}{signature} cannot be built the way the template's {name} is, "
                        f"as {_call_text(name, args, kwargs)} ({error}): give the parameters the "
                        "template does not have default values") from None
    return cls(*args, **kwargs)


def find_scale(session, norm, dim: int) -> torch.Tensor:
    """RMSNorm's gain: the attribute `scale`, or else its only (dim,)-shaped parameter."""
    scale = getattr(norm, "scale", None)
    if isinstance(scale, torch.Tensor):
        return scale
    candidates = [(n, p) for n, p in norm.named_parameters() if tuple(p.shape) == (dim,)]
    if len(candidates) == 1:
        session.note(f"RMSNorm has no `scale`: used its parameter `{candidates[0][0]}` as the gain")
        return candidates[0][1]
    raise AttributeError("RMSNorm has no `scale` parameter of shape (dim,)")


class UnmappedProjections(TypeError):
    """The attention's projection layers do not map onto [W_q; W_k; W_v] and W_o by shape and role."""


# A dim -> dim layer's role read off its name: lower-cased, without separators, and stripped of
# these affixes ("q_proj", "W_q", "to_q", "wq", "query" -> "q"). The output layer is the one
# dim -> dim layer left, whatever its name.
_PREFIXES = ("linear", "lin", "proj", "to", "fc", "w")
_SUFFIXES = ("projection", "proj", "linear", "lin", "layer", "weight", "fc", "net")
_ROLES = {"q": "q", "query": "q", "queries": "q", "k": "k", "key": "k", "keys": "k",
          "v": "v", "value": "v", "values": "v", "kv": "kv", "keyvalue": "kv", "keyvalues": "kv",
          "qk": "qk", "querykey": "qk"}


def _role(name: str):
    """'q', 'k', 'v', 'kv' or 'qk' by the layer's name (its last component), or None."""
    core = re.sub(r"[^a-z0-9]", "", name.rsplit(".", 1)[-1].lower())
    changed = True
    while changed and core:
        changed = False
        for suffix in _SUFFIXES:
            if core.endswith(suffix):
                core, changed = core[:-len(suffix)], True
        for prefix in _PREFIXES:
            if core.startswith(prefix) and core[len(prefix):] in _ROLES:
                core, changed = core[len(prefix):], True
    return _ROLES.get(core)


class Projections:
    """The attention's projections by role. `inputs`: (name, weight, bias or None, roles) for the
    layers that read x, roles a string such as "qkv", "q" or "kv" giving the order of their
    output rows; `out`: (name, weight, bias) of the output projection. Weights are (out, in) as
    in nn.Linear, y = x W^T + b."""

    def __init__(self, inputs: list, out: tuple):
        self.inputs, self.out = inputs, out

    def load(self, qkv_weight: torch.Tensor, out_weight: torch.Tensor) -> None:
        """Copy the grader's [W_q; W_k; W_v] (3 dim, dim) and W_o (dim, dim); biases zeroed."""
        rows = dict(zip("qkv", qkv_weight.chunk(3, dim=0)))
        for _, weight, bias, roles in self.inputs:
            _copy(weight, bias, torch.cat([rows[role] for role in roles]))
        _copy(self.out[1], self.out[2], out_weight)

    def qkv(self, x: torch.Tensor):
        """(q, k, v), each (batch, seq, dim), as the student's layers compute them from x."""
        parts = {}
        for _, weight, bias, roles in self.inputs:
            parts.update(zip(roles, torch.nn.functional.linear(x, weight, bias).chunk(len(roles), -1)))
        return parts["q"], parts["k"], parts["v"]

    def describe(self) -> str:
        """'q_proj (q), kv_proj (k, v) and out_proj', for notes."""
        layers = [f"{name} ({', '.join(roles)})" for name, _, _, roles in self.inputs]
        return ", ".join(layers) + f" and {self.out[0]}"


def _copy(weight: torch.Tensor, bias, value: torch.Tensor) -> None:
    with torch.no_grad():
        weight.copy_(value)
        if bias is not None:
            bias.zero_()


def _linear_layers(attention) -> list:
    """(name, weight, bias, kind) of every nn.Linear in the module tree (kind "nn.Linear"), and
    of every 2-D parameter held outside one (kind "nn.Parameter"; nn.MultiheadAttention's
    in_proj_weight, with in_proj_bias)."""
    found = []
    for module_name, module in attention.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, torch.nn.Linear):
            found.append((module_name, module.weight, module.bias, "nn.Linear"))
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() == 2:
                bias = getattr(module, name.replace("weight", "bias"), None) if "weight" in name else None
                found.append((prefix + name, parameter, bias if isinstance(bias, torch.Tensor) else None,
                              "nn.Parameter"))
    return found


def _multiple(layer, dim: int):
    """k when the layer maps dim -> k * dim as y = x W^T (+ b), else None. A square nn.Parameter
    is None: it may be used as x @ W or as x @ W^T, and its shape cannot tell which."""
    _, weight, _, kind = layer
    rows, columns = weight.shape
    if columns != dim or rows % dim or (kind != "nn.Linear" and rows == columns):
        return None
    return rows // dim


def find_projections(attention, dim: int) -> Projections:
    """The attention's projections by shape and role: one fused dim -> 3 dim layer (qkv_proj,
    c_attn, Wqkv, in_proj_weight...), or a dim -> dim query layer and a dim -> 2 dim key/value
    layer, or three dim -> dim layers named for q, k and v (q_proj, query, wq, W_q...); and one
    dim -> dim output layer (out_proj, o_proj, c_proj, wo..., whatever its name); and no other
    layer, whose part the grader could not know. Raises UnmappedProjections naming the layers found and their shapes."""
    layers = _linear_layers(attention)
    by_rows = {}
    for layer in layers:
        by_rows.setdefault(_multiple(layer, dim), []).append(layer[:3])
    fused, pairs, squares = by_rows.get(3, []), by_rows.get(2, []), by_rows.get(1, [])
    named = {}
    for layer in squares:
        named.setdefault(_role(layer[0]), []).append(layer)
    inputs = None
    if len(fused) == 1 and not pairs:
        inputs = [(*fused[0], "qkv")]
    elif len(pairs) == 1 and not fused:
        roles = "qk" if _role(pairs[0][0]) == "qk" else "kv"
        single = next(role for role in "qkv" if role not in roles)
        if len(named.get(single, [])) == 1:
            inputs = [(*named[single][0], single), (*pairs[0], roles)]
    elif not fused and not pairs and all(len(named.get(role, [])) == 1 for role in "qkv"):
        inputs = [(*named[role][0], role) for role in "qkv"]
    if inputs is not None:
        used = {id(layer[1]) for layer in inputs}
        rest = [layer for layer in squares if id(layer[1]) not in used]
        if len(rest) == 1 and len(used) + 1 == len(layers):  # no layer left that could be unplaced
            return Projections(inputs, rest[0])
    found = ", ".join(f"{name} ({kind} {weight.shape[1]}->{weight.shape[0]})"
                      if kind == "nn.Linear" else f"{name} ({kind} of shape {tuple(weight.shape)})"
                      for name, weight, _, kind in layers) or "none"
    raise UnmappedProjections(
        f"the grader could not map its weights W_q, W_k, W_v, W_o (each {dim}x{dim}) onto "
        f"CausalSelfAttention's projection layers ({found}). It maps: one "
        f"fused {dim}->{3 * dim} layer (like qkv_proj); or one {dim}->{dim} query layer and one "
        f"{dim}->{2 * dim} key/value layer; or three {dim}->{dim} layers named for q, k and v "
        f"(like q_proj, k_proj, v_proj); each with one {dim}->{dim} output layer (like out_proj), "
        "all nn.Linear, and no other layer (a square nn.Parameter may be used as x @ W or x @ W^T: "
        "its shape does not say which)")


def load_projections(session, attention, qkv_weight: torch.Tensor, out_weight: torch.Tensor):
    """Copy the grader's [W_q; W_k; W_v] and W_o into the attention module's projections, found
    by shape and role (find_projections; biases zeroed), noting a layout other than the
    template's qkv_proj + out_proj."""
    projections = find_projections(attention, out_weight.shape[0])
    if [name for name, *_ in projections.inputs] + [projections.out[0]] != ["qkv_proj", "out_proj"]:
        session.note(f"CausalSelfAttention uses {projections.describe()} instead of qkv_proj and "
                     "out_proj: loaded the grader's W_q, W_k, W_v, W_o into them by role")
    projections.load(qkv_weight, out_weight)


TRAIN_EPOCH_ARGS = ("model", "dataloader", "optimizer", "device", "epoch")


def run_train_epoch(session, train_epoch, model, loader, optimizer, device, epoch):
    """train_epoch(model, dataloader, optimizer, device, epoch) as the template defines it (extra
    parameters with defaults keep them); a version without the trailing `epoch` (or `device`)
    gets the arguments it takes. Returns whatever train_epoch returned."""
    args = (model, loader, optimizer, device, epoch)
    parameters = _positional_parameters(train_epoch)
    if parameters is not None and len(parameters) < len(args):
        if len(parameters) < 3:
            raise TypeError(f"train_epoch takes {len(parameters)} positional arguments; the "
                            f"template's are ({', '.join(TRAIN_EPOCH_ARGS)})")
        session.note(f"train_epoch takes only ({', '.join(p.name for p in parameters)}): called "
                     f"it without {', '.join(TRAIN_EPOCH_ARGS[len(parameters):])}")
        args = args[:len(parameters)]
    try:
        signature = inspect.signature(train_epoch)
    except (TypeError, ValueError):  # no signature to read: call it and see
        return train_epoch(*args)
    try:
        signature.bind(*args)
    except TypeError as error:
        raise TypeError(f"train_epoch{signature} cannot be called the way the template's "
                        f"train_epoch({', '.join(TRAIN_EPOCH_ARGS)}) is ({error}): give the "
                        "parameters the template does not have default values") from None
    return train_epoch(*args)


def loss_number(value):
    """train_epoch's return value as a Python float: a float or int as is, a one-element float
    tensor or numpy scalar converted; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.detach().reshape(()).item())
    if type(value).__module__ == "numpy" and getattr(value, "size", 0) == 1:
        return float(value)
    return None


def call_train_epoch(session, train_epoch, model, loader, optimizer, device, epoch):
    """The loss train_epoch returned, as a float, or None (with a note) if it is not a number."""
    value = run_train_epoch(session, train_epoch, model, loader, optimizer, device, epoch)
    number = loss_number(value)
    if number is None:
        session.note(f"train_epoch returned {type(value).__name__}, not a number: it should "
                     "return the mean batch loss as a float")
    elif isinstance(value, torch.Tensor):
        session.note(f"train_epoch returned a tensor of shape {tuple(value.shape)}: used its "
                     "value; the template returns a Python float")
    return number


@contextlib.contextmanager
def script_code_tolerated(session, name: str, required, initial_globals=None):
    """While importing module `name`, tolerate script code left at its top level that fails for
    want of the student's files: main() called without an `if __name__ == "__main__":` guard,
    looking for data/trajectories.pkl in the grader's empty working directory. The module is kept
    as it stands, with a note, when every name in `required` was defined before the error and
    the error is a FileNotFoundError, or a SystemExit raised inside a function the top level
    called (a script giving up, as the template's main() does without its data). Anything else
    still fails the import: a top-level `raise` or `sys.exit()` is the submission ending its own
    import, and a missing package reaches the stubs (stubs.py). The module's globals start as
    `initial_globals` (e.g. its own `__builtins__`)."""
    finder = _ScriptTolerantFinder(session, name, tuple(required), dict(initial_globals or {}))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


class _ScriptTolerantFinder:
    def __init__(self, session, name: str, required: tuple, initial_globals: dict):
        self.session, self.name, self.required = session, name, required
        self.initial_globals = initial_globals

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = _ScriptTolerantLoader(fullname, spec.origin, self.session, self.required,
                                       self.initial_globals)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


class _ScriptTolerantLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname, path, session, required, initial_globals):
        super().__init__(fullname, path)
        self.session, self.required, self.initial_globals = session, required, initial_globals

    def exec_module(self, module):
        vars(module).update(self.initial_globals)
        try:
            super().exec_module(module)
        except (FileNotFoundError, SystemExit) as error:
            frames = traceback.extract_tb(error.__traceback__)
            top = next((i for i, f in enumerate(frames)
                        if f.filename == self.path and f.name == "<module>"), None)
            called = top is not None and top + 1 < len(frames)
            if (not all(hasattr(module, name) for name in self.required)
                    or (isinstance(error, SystemExit) and not called)):
                raise
            where = (f" at line {frames[top].lineno} (`{(frames[top].line or '').strip()}`)"
                     if top is not None else "")
            self.session.note(f"importing backbone.py ran module-level code{where}, which raised "
                              f"{type(error).__name__} ({str(error)[:200]}). Every class and "
                              "function the grader needs was defined before it, so they were "
                              "graded; put script code such as main() under `if __name__ == "
                              "\"__main__\":`")


# -- the cached decoding path (the mastery checks) ------------------------------------------------

CACHE_WORDS = ("cache", "kv")
# Greedy decoding through the template's sampling API: top_k=1 leaves one token to sample
# (the argmax); without top_k, a temperature this small does the same unless the two largest
# logits are within ~1e-4 of each other.
GREEDY = {"top_k": {"top_k": 1}, "temperature": {"temperature": 1e-6}}


class DecodePath:
    """One way to call the student's decoding: generate itself, generate with a cache keyword
    (use_cache=True), or a method named like generate_cached. `name` is how it was called, as
    the student reads it; call(ids, new_tokens, greedy) returns the (batch, seq + new) ids."""

    def __init__(self, session, function: str, method, switch: dict):
        self.session, self.function, self.method, self.switch = session, function, method, switch
        self.name = f"{function}({', '.join(f'{key}=True' for key in switch)})"
        try:
            self.parameters = set(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            self.parameters = set()

    def sampling(self, greedy: str) -> dict:
        """The keywords that make it greedy: GREEDY[greedy] when it takes them, else nothing."""
        keywords = GREEDY[greedy] if greedy else {}
        return {k: v for k, v in keywords.items() if k in self.parameters}

    def described(self, greedy: str = None) -> str:
        """The call as written in Python, e.g. 'generate(input_ids, n, use_cache=True, top_k=1)'."""
        keywords = {**self.switch, **self.sampling(greedy)}
        return (f"{self.function}(input_ids, n"
                + "".join(f", {key}={value!r}" for key, value in keywords.items()) + ")")

    def call(self, ids: torch.Tensor, new_tokens: int, greedy: str = None) -> torch.Tensor:
        output = self.method(ids, new_tokens, **self.switch, **self.sampling(greedy))
        output = first_tensor(output, self.session, self.name)
        if not output.is_floating_point():
            output = output.to(ids.dtype)
        if tuple(output.shape) == (ids.shape[0], new_tokens):
            self.session.note(f"{self.name} returned only the new tokens: graded them after the prompt")
            output = torch.cat([ids, output.to(ids.dtype)], dim=1)
        return output


def decode_paths(session, model) -> list:
    """The candidate cached decoding paths, the most explicit first: methods named like
    generate_cached / generate_with_cache / generate_kv; generate(..., <cache keyword>=True)
    when generate has a parameter named like use_cache or kv_cache; generate itself."""
    paths = []
    names = sorted(name for name in dir(type(model)) if not name.startswith("__")
                   and name != "generate" and not hasattr(torch.nn.Module, name)
                   and ("generate" in name or "decode" in name or "sample" in name)
                   and any(word in name.lower() for word in CACHE_WORDS))
    for name in names:
        method = getattr(model, name, None)
        if callable(method):
            paths.append(DecodePath(session, name, method, {}))
    generate = getattr(model, "generate", None)
    if callable(generate):
        try:
            parameters = inspect.signature(generate).parameters
        except (TypeError, ValueError):
            parameters = {}
        switches = [p for p in parameters if any(word in p.lower() for word in CACHE_WORDS)]
        for switch in switches:
            paths.append(DecodePath(session, "generate", generate, {switch: True}))
        paths.append(DecodePath(session, "generate", generate, {}))
    return paths
