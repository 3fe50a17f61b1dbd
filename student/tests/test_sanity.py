"""Public sanity checks for Scratch-1. Run from the bundle folder:

    python -m pytest tests

They check properties every correct solution has (shapes, no NaN, the RMSNorm formula,
causality, positional information, a training loop that learns). Passing them is a good sign,
not a guarantee: the autograder checks the same things more thoroughly, against a reference.
"""

import inspect
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import backbone
import generate_data

DIM, HEADS, SEQ = 32, 4, 10
ATOL = 1e-5  # a correct mask leaves earlier outputs bitwise unchanged; a leak moves them by far more
CPU = torch.device("cpu")
TINY = dict(vocab_size=256, dim=32, num_layers=2, num_heads=4, ff_hidden_dim=64, max_seq_len=32,
            dropout=0.0)


def run(function, *args, **kwargs):
    """Call your code; a TODO that is still a stub fails the test with its own message."""
    try:
        return function(*args, **kwargs)
    except NotImplementedError as error:
        message = str(error)
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


def check(condition, message):
    if not condition:
        pytest.fail(message, pytrace=False)


def order_one(module):
    """Re-draw the Linear weights so activations and scores are of order one: with the small
    default init a leak of the future moves the outputs by as little as ~1e-5."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
    return module.eval()  # eval: dropout off


def attention():
    torch.manual_seed(0)
    return order_one(backbone.CausalSelfAttention(DIM, HEADS))


# ---------------------------------------------------------------------------- TODO 1: RMSNorm

def test_rmsnorm_shape_and_finite():
    x = torch.randn(2, 10, 256)
    out = run(backbone.RMSNorm(256), x)
    check(out.shape == x.shape, f"RMSNorm returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
    check(torch.isfinite(out).all(), "RMSNorm output has NaN or inf for a random input")


@pytest.mark.parametrize("eps", [1e-6, 0.1])
def test_rmsnorm_formula(eps):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 0.3 + 0.2  # small values with a non-zero mean: eps and centring matter
    norm = backbone.RMSNorm(16, eps=eps)
    with torch.no_grad():
        norm.scale.copy_(torch.rand(16) + 0.5)
    out = run(norm, x).detach()
    scale = norm.scale.detach()
    mean_square = x.pow(2).mean(-1, keepdim=True)
    expected = x / torch.sqrt(mean_square + eps) * scale
    hints = {
        "eps is added outside the square root": x / (torch.sqrt(mean_square) + eps) * scale,
        "the mean is subtracted (that is LayerNorm, RMSNorm does not centre)":
            (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, False, keepdim=True) + eps) * scale,
        "self.scale is not applied": x / torch.sqrt(mean_square + eps),
    }
    if not torch.allclose(out, expected, rtol=1e-4, atol=1e-5):
        error = float((out - expected).abs().max())
        cause = next((hint for hint, wrong in hints.items() if torch.allclose(out, wrong, atol=1e-5)), None)
        pytest.fail(f"RMSNorm(16, eps={eps:g}) differs from x / sqrt(mean(x^2 over the last dim) + eps) "
                    f"* scale by up to {error:.3g}" + (f". Likely cause: {cause}." if cause else "."),
                    pytrace=False)


def test_rmsnorm_zero_input():
    out = run(backbone.RMSNorm(16), torch.zeros(2, 3, 16))
    check(torch.isfinite(out).all(), "RMSNorm of an all-zero input gave NaN or inf: eps belongs inside "
                                     "the square root, so it never divides by zero")
    check(out.abs().max() == 0, "RMSNorm of an all-zero input should be all zeros")


# ------------------------------------------------------------ TODO 2: CausalSelfAttention

def test_attention_shape_and_finite():
    x = torch.randn(2, SEQ, DIM)
    out = run(attention(), x)
    check(out.shape == x.shape, f"CausalSelfAttention returned shape {tuple(out.shape)} for input "
                                f"{tuple(x.shape)}; expected the input's shape")
    check(torch.isfinite(out).all(), "CausalSelfAttention output has NaN or inf. Likely cause: a mask "
                                     "row with no allowed key (every position must attend to itself)")


def perturbed(base, replace):
    """Row 0: base (seq, ...); row t: base with token t replaced, for t = 1 .. seq-1."""
    rows = [base]
    for t in range(1, len(base)):
        row = base.clone()
        row[t] = replace(row[t])
        rows.append(row)
    return torch.stack(rows)


def first_leak(out):
    """'position p changed (max |delta| d) when token t was perturbed' for the first output of
    row t (see `perturbed`) at a position p < t that differs from row 0, or ''."""
    for t in range(1, len(out)):
        delta = (out[t, :t] - out[0, :t]).abs().flatten(1).amax(1)  # one value per position < t
        moved = torch.nonzero(delta > ATOL).flatten().tolist()
        if moved:
            return (f"position {moved[0]} changed (max |delta| {float(delta[moved[0]]):.2g}) when "
                    f"token {t} was perturbed")
    return ""


@torch.no_grad()
def test_attention_is_causal():
    x = perturbed(torch.randn(SEQ, DIM), lambda token: torch.randn(DIM))
    leak = first_leak(run(attention(), x))  # forward(x) without a mask must be causal on its own
    check(not leak, f"outputs at {leak}: the causal mask is missing or applied after the softmax. "
                    "Position p may only attend to positions 0..p, also when forward is called "
                    "without a mask.")


@torch.no_grad()
def test_attention_sees_itself_and_past():
    attn, x = attention(), torch.randn(1, SEQ, DIM)
    base = run(attn, x)
    changed = x.clone()
    changed[0, 0] = torch.randn(DIM)
    delta = (attn(changed) - base)[0].abs().amax(-1)
    blind = torch.nonzero(delta <= ATOL).flatten().tolist()
    check(not blind, f"outputs at positions {blind} did not change when token 0 was perturbed: every "
                     "position must attend to itself and to all earlier positions. Is the mask too "
                     "strict (keep the diagonal and everything below it)?")


@torch.no_grad()
def test_attention_explicit_mask_matches_default():
    attn, x = attention(), torch.randn(2, SEQ, DIM)
    mask = torch.tril(torch.ones(SEQ, SEQ))  # what DecoderOnlyTransformer passes: 1 = may attend
    error = float((run(attn, x, mask) - run(attn, x)).abs().max())
    check(error <= ATOL, f"forward(x, mask) with the model's causal mask differs from forward(x) by "
                         f"{error:.3g}: both must be the same causal attention. Read a passed mask as "
                         "1 = allowed, 0 = masked.")


@torch.no_grad()
def test_attention_uses_positions():
    attn, x = attention(), torch.randn(1, SEQ, DIM)
    reordered = x.clone()
    reordered[0, :-1] = x[0, :-1].flip(0)  # same earlier tokens in reverse order; last token kept
    delta = float((run(attn, reordered) - run(attn, x))[0, -1].abs().max())
    check(delta > 1e-4, f"the output at the last position did not change (max |delta| {delta:.2g}) when "
                        "the earlier tokens were put in reverse order: the attention has no positional "
                        "information. Apply self.rope to the queries and the keys, after splitting "
                        "heads (shape (batch, heads, seq, head_dim)).")


# --------------------------------------------------------------------------- the whole model

@torch.no_grad()
def test_model_forward():
    torch.manual_seed(0)
    model = backbone.DecoderOnlyTransformer(**TINY).eval()
    ids = torch.randint(256, (2, 16))
    logits, loss = run(model, ids, ids)
    check(logits.shape == (2, 16, 256), f"logits have shape {tuple(logits.shape)}, expected (2, 16, 256)")
    check(loss is not None and torch.isfinite(loss), f"the loss is not a finite number: {loss}")
    # At initialisation the model guesses almost uniformly over 256 tokens: loss close to ln(256).
    check(abs(float(loss) - math.log(256)) < 0.5, f"initial loss {float(loss):.2f}, expected about "
                                                  f"ln(256) = {math.log(256):.2f}")


@torch.no_grad()
def test_model_is_causal():
    torch.manual_seed(0)
    model = order_one(backbone.DecoderOnlyTransformer(**TINY))
    ids = perturbed(torch.randint(256, (16,)), lambda token: (token + 1) % 256)
    logits, _ = run(model, ids)
    leak = first_leak(logits)
    check(not leak, f"the model's logits at {leak}: the model passes torch.tril(torch.ones(T, T)) "
                    "(1 = may attend) to every attention layer; make sure your attention applies it "
                    "before the softmax.")


# ------------------------------------------------------------------------ TODO 3: train_epoch

def loader(num_batches, batch_size=8, seq_length=16):
    data = generate_data.generate_dataset(num_batches * batch_size, seq_length, seed=0)
    return DataLoader(TensorDataset(data["states"], data["actions"]), batch_size=batch_size)


def test_train_epoch_returns_mean_batch_loss():
    torch.manual_seed(0)
    model, batches = backbone.DecoderOnlyTransformer(**TINY), loader(3)
    model.eval()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay put
    result = run(backbone.train_epoch, model, batches, frozen, CPU, 0)
    check(isinstance(result, float), f"train_epoch returned a {type(result).__name__}; return a Python "
                                     "float (the mean batch loss)")
    check(model.training, "after train_epoch the model is in eval mode: call model.train() first, "
                          "so dropout is active while training")
    with torch.no_grad():
        losses = [float(model(actions[:, :-1], actions[:, 1:])[1]) for _, actions in batches]
        unshifted = [float(model(actions, actions)[1]) for _, actions in batches]
    expected = sum(losses) / len(losses)
    hints = {"the sum of the batch losses": sum(losses), "the last batch's loss": losses[-1],
             "the targets are the inputs themselves, not the next tokens": sum(unshifted) / len(unshifted)}
    cause = next((f" It looks like {hint}." for hint, value in hints.items()
                  if abs(result - value) < 1e-4), "")
    check(abs(result - expected) < 1e-4,
          f"train_epoch returned {result:.4f}, but the mean over the batches of the next-token loss "
          f"(inputs actions[:, :-1], targets actions[:, 1:]) is {expected:.4f}.{cause}")


def test_train_epoch_learns():
    torch.manual_seed(0)
    model, batches = backbone.DecoderOnlyTransformer(**TINY), loader(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = [run(backbone.train_epoch, model, batches, optimizer, CPU, epoch) for epoch in range(4)]
    check(all(math.isfinite(loss) for loss in losses), f"train_epoch returned non-finite losses {losses}")
    check(losses[-1] < losses[0] - 1.0, "the loss did not go down over 4 epochs on 4 batches: "
          + ", ".join(f"{loss:.3f}" for loss in losses) + ". Does train_epoch call "
          "optimizer.zero_grad(), loss.backward() and optimizer.step() for every batch?")


# ------------------------------------------------- optional: a KV cache (the mastery bonus)

def cached_paths(model):
    """The ways to call your cached decoding that the autograder also tries, in its order: a
    method named like generate_cached, generate(..., use_cache=True) (any generate keyword
    with "cache" or "kv" in its name), and generate itself."""
    methods = [getattr(model, name) for name in sorted(dir(type(model)))
               if name != "generate" and not hasattr(nn.Module, name) and "generate" in name
               and ("cache" in name.lower() or "kv" in name.lower())]
    paths = [(f"{method.__name__}()", method, {}) for method in methods]
    keywords = [k for k in inspect.signature(model.generate).parameters if "cache" in k or "kv" in k]
    paths += [(f"generate({k}=True)", model.generate, {k: True}) for k in keywords]
    return paths + [("generate()", model.generate, {})]


def uses_cache(model, method, switch):
    """Whether every step after the prompt feeds attention fewer positions than the sequence has."""
    seen = []
    first = next(m for m in model.modules() if isinstance(m, backbone.CausalSelfAttention))
    hook = first.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        method(torch.randint(256, (2, 4)), 3, **switch)
    except NotImplementedError:
        return False
    finally:
        hook.remove()
    return len(seen) >= 2 and all(length < 4 + step for step, length in enumerate(seen) if step)


@torch.no_grad()
def test_kv_cache_matches_full_forward():
    """Greedy decoding through your cache gives the tokens and logits of full forward passes."""
    torch.manual_seed(0)
    model = order_one(backbone.DecoderOnlyTransformer(**TINY))
    nn.init.normal_(model.token_embedding.weight)
    found = next(((name, method, switch) for name, method, switch in cached_paths(model)
                  if uses_cache(model, method, switch)), None)
    if found is None:
        pytest.skip("no KV-cache path found (optional: see generate's docstring)")
    name, method, switch = found
    logits = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: logits.append(out[:, -1]))
    try:
        for length in (1, 7, TINY["max_seq_len"] - 12):
            prompt, logits[:] = torch.randint(256, (2, length)), []
            cached = run(method, prompt, 12, top_k=1, **switch)
            full = prompt
            for step in range(12):
                expected = run(model, full)[0][:, -1]
                got = logits[step] if step < len(logits) else None
                where = (f"{name} with a {length}-token prompt, new token {step + 1}"
                         f"{' (from the prompt pass)' if step == 0 else ''}")
                check(got is None or torch.allclose(got, expected, atol=1e-4, rtol=1e-4),
                      f"{where}: its logits differ from a full forward pass's by up to "
                      f"{float((got - expected).abs().max()):.3g}. "
                      + ("Is the prompt pass causal, with the whole prompt embedded?" if step == 0 else
                         "Are the new query and key rotated at their true position, and the cached "
                         "keys stored rotated and never rotated again?"))
                full = torch.cat([full, expected.argmax(-1, keepdim=True)], dim=1)
                check(torch.equal(cached[:, :full.shape[1]], full),
                      f"{where}: it chose other tokens than greedy full forward passes "
                      f"({cached[:, full.shape[1] - 1].tolist()} instead of {full[:, -1].tolist()})")
    finally:
        hook.remove()
