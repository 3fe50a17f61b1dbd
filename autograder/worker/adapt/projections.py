"""The attention's projection layers, found by shape and role, and the grader's weights
[W_q; W_k; W_v] and W_o loaded into them."""

import re

import torch

from . import projection_roles


class UnmappedProjections(TypeError):
    """The attention's projection layers do not map onto [W_q; W_k; W_v] and W_o by shape and role."""

    does_not_fit = True  # fault.py: the submission's layout, not the kit's error


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
    layers that read x, roles a string such as "qkv", "q" or "kv" naming the blocks of their
    output rows in order; `out`: (name, weight, bias) of the output projection; `rows`: per
    input layer, the row of the grader's [W_q; W_k; W_v] (3 dim, dim) each of its output rows
    computes (by default the blocks `roles` names; projection_roles may find another order).
    Weights are (out, in) as in nn.Linear, y = x W^T + b."""

    def __init__(self, inputs: list, out: tuple):
        self.inputs, self.out = inputs, out
        dim = out[1].shape[0]
        self.rows = [torch.cat([torch.arange(dim) + "qkv".index(role) * dim for role in roles])
                     for *_, roles in inputs]

    def load(self, qkv_weight: torch.Tensor, out_weight: torch.Tensor) -> None:
        """Copy the grader's [W_q; W_k; W_v] (3 dim, dim) and W_o (dim, dim); biases zeroed."""
        for (_, weight, bias, _), rows in zip(self.inputs, self.rows):
            _copy(weight, bias, qkv_weight[rows])
        _copy(self.out[1], self.out[2], out_weight)

    def qkv(self, x: torch.Tensor):
        """(q, k, v), each (batch, seq, dim), as the student's layers compute them from x."""
        dim = self.out[1].shape[0]
        merged = x.new_zeros(*x.shape[:-1], 3 * dim)
        for (_, weight, bias, _), rows in zip(self.inputs, self.rows):
            merged[..., rows] = torch.nn.functional.linear(x, weight, bias)
        return merged.split(dim, dim=-1)

    def blockwise(self, rows: list) -> bool:
        """Whether `rows` (as self.rows) keep every role in whole blocks of dim rows in order,
        whatever the blocks' order."""
        dim = self.out[1].shape[0]
        return all(bool((block - block[0] == torch.arange(dim)).all()) and int(block[0]) % dim == 0
                   for layer in rows for block in layer.split(dim))

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


def load_projections(session, attention, qkv_weight: torch.Tensor, out_weight: torch.Tensor,
                     num_heads: int):
    """Copy the grader's [W_q; W_k; W_v] and W_o into the attention module's projections, found
    by shape and role (find_projections; biases zeroed), each row by the role its behaviour
    shows (projection_roles) where that differs from the blocks its shape and name suggest;
    noting a layout other than the template's qkv_proj + out_proj. The template's qkv_proj keeps
    its documented [W_q; W_k; W_v] blocks when behaviour shows blocks in another order: its
    split order is graded (diagnoses names it)."""
    dim = out_weight.shape[0]
    projections = find_projections(attention, dim)
    template = [name for name, *_ in projections.inputs] + [projections.out[0]] == ["qkv_proj", "out_proj"]
    cache = session.state.setdefault("projection_rows", {})
    key = (type(attention), dim, num_heads)
    if key not in cache:
        cache[key] = projection_roles.grader_rows(session, attention, projections, num_heads)
    rows = cache[key]
    reordered = rows is not None and not all(torch.equal(a, b) for a, b in zip(rows, projections.rows))
    if not template:
        session.note(f"CausalSelfAttention uses {projections.describe()} instead of qkv_proj and "
                     "out_proj: loaded the grader's W_q, W_k, W_v, W_o into them by role")
    guessed = [name for name, _, _, roles in projections.inputs if len(roles) > 1]
    if rows is None and guessed and not template:
        session.note(f"the role of each row of {' and '.join(guessed)} could not be found from how it "
                     "moves your attention's output: its rows were taken as blocks in the order "
                     f"{projections.describe()} gives, a guess from shape and name; a numeric "
                     "difference may come from this layout rather than from your computation")
    if reordered and not (template and projections.blockwise(rows)):
        projections.rows = rows
        names = " and ".join(name for name, *_ in projections.inputs)
        session.note(f"the rows of {names} are not [W_q; W_k; W_v] blocks in that order (the role "
                     "of each row was found by how it moves your attention's output): loaded the "
                     "grader's W_q, W_k, W_v into them row by row, by role")
    projections.load(qkv_weight, out_weight)
