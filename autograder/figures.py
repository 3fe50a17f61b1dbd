"""The figures of one submission: its training loss curve and its trained model's attention maps.

The channel, start to end: the convergence check (checks/test_convergence.py) stores the worker's
raw numbers in the grading context's `figures` dict,
    figures["loss"]      = {"step_losses": [...], "epoch_losses": [...], "target": 1.0,
                            "heldout_loss": 0.41}
    figures["attention"] = {"weights": tensor (layers, heads, seq, seq), "source": "softmax"}
and after the tests ran, cli.py draws them here: full-size PNGs for the TA report (--figures DIR)
and small ones that results.py embeds in the Gradescope feedback. The numbers come from the
worker, so they are checked (types, sizes) before drawing; a figure that cannot be drawn is
left out and never changes a score.
"""

import io
import math

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)
from PIL import Image  # noqa: E402  (matplotlib's own dependency)
import torch  # noqa: E402

SOURCES = {"softmax": " (your attention's softmax)",
           "recomputed": " (recomputed from your trained projections and RoPE, with a causal mask)"}
MAX_STEPS = 10_000
MAX_MAPS = 64  # layers x heads
MAX_SEQ = 512
FULL_DPI, SMALL_DPI = 100, 80
SMALL_COLOURS = 64  # the embedded PNGs are palette images: a fraction of the bytes


def _losses(values) -> list:
    """Floats from the worker's list; anything that is not a number becomes a gap (nan)."""
    if not isinstance(values, (list, tuple)):
        return []
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            else math.nan for v in values[:MAX_STEPS]]


def loss_curve(data: dict, dpi: int, small: bool = False) -> bytes:
    steps, epochs = _losses(data.get("step_losses")), _losses(data.get("epoch_losses"))
    if not steps and not epochs:
        raise ValueError("no training losses were recorded")
    figure = Figure(figsize=(6, 3.4))  # laid out by savefig's tight bounding box
    axes = figure.subplots()
    end = len(steps) or len(epochs)
    if steps:
        axes.plot(range(1, end + 1), steps, lw=1.2, color="C0", label="training loss (each step)")
    if epochs:
        axes.plot([end * (i + 0.5) / len(epochs) for i in range(len(epochs))], epochs, "s",
                  color="C1", label="train_epoch's return (epoch mean)")
    if isinstance(data.get("heldout_loss"), float) and math.isfinite(data["heldout_loss"]):
        axes.plot([end], [data["heldout_loss"]], "o", ms=8, color="C3",
                  label=f"held-out loss {data['heldout_loss']:.3f}")
    if isinstance(data.get("target"), (int, float)):
        axes.axhline(data["target"], ls="--", lw=1, color="0.4", label=f"target {data['target']:g}")
    axes.set_xlabel("training step" if steps else "epoch")
    axes.set_ylabel("cross-entropy loss")
    axes.set_ylim(bottom=0)
    axes.set_title("Training loss on the grader's data")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _png(figure, dpi, small)


def attention_maps(data: dict, dpi: int, small: bool = False) -> bytes:
    weights = data.get("weights")
    if not isinstance(weights, torch.Tensor) or weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError("the attention weights are not a (layers, heads, seq, seq) tensor")
    layers, heads, seq = weights.shape[0], weights.shape[1], weights.shape[2]
    if not 0 < layers * heads <= MAX_MAPS or not 0 < seq <= MAX_SEQ:
        raise ValueError(f"{layers} x {heads} attention maps of size {seq} are too many to draw")
    weights = torch.nan_to_num(weights.float(), nan=0.0).clamp(0, 1)
    # One image of all the maps, white gaps between them, in one axes: a grid of layers x heads
    # axes took 3x the CPU to draw (0.7 s of the grader's time on Gradescope's 0.5 vCPU).
    gap = max(1, seq // 10)
    cell = seq + gap
    mosaic = torch.full((layers * cell - gap, heads * cell - gap), math.nan)
    tint = torch.zeros(layers * cell - gap, heads * cell - gap, 4)  # red over key > query
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    for layer in range(layers):
        for head in range(heads):
            rows, columns = slice(layer * cell, layer * cell + seq), slice(head * cell, head * cell + seq)
            mosaic[rows, columns] = weights[layer, head]
            tint[rows, columns][future] = torch.tensor([1.0, 0.0, 0.0, 0.2])
    figure = Figure(figsize=(1.7 * heads + 0.9, 1.7 * layers + 0.9))
    axes = figure.subplots()
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = axes.imshow(mosaic.numpy(), cmap=colours, vmin=0, vmax=1, interpolation="nearest")
    axes.imshow(tint.numpy(), interpolation="nearest")
    axes.set_xticks([h * cell + (seq - 1) / 2 for h in range(heads)],
                    [f"head {h + 1}" for h in range(heads)], fontsize="small")
    axes.set_yticks([n * cell + (seq - 1) / 2 for n in range(layers)],
                    [f"layer {n + 1}\nquery" for n in range(layers)], fontsize="small")
    axes.tick_params(length=0, labeltop=True, labelbottom=False)
    axes.set_xlabel("key", fontsize="small")
    for spine in axes.spines.values():
        spine.set_visible(False)
    figure.colorbar(image, ax=axes, shrink=0.8, label="weight")
    source = SOURCES.get(data.get("source"), "")  # the worker's word picks one of our texts
    figure.suptitle(f"Attention weights on one held-out sequence{source};\ntinted red: future "
                    "keys, which a causal model gives weight 0", fontsize="small")
    return _png(figure, dpi, small)


def _png(figure: Figure, dpi: int, small: bool) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if not small:
        return buffer.getvalue()
    buffer.seek(0)
    palette = Image.open(buffer).convert("RGB").quantize(SMALL_COLOURS)
    compressed = io.BytesIO()
    palette.save(compressed, format="png", optimize=True)
    return compressed.getvalue()


DRAWINGS = {"loss_curve.png": ("loss", loss_curve), "attention_maps.png": ("attention", attention_maps)}


def draw(figures: dict, small: bool = False) -> tuple:
    """({file name: PNG bytes} for every figure that could be drawn, [why others could not])."""
    images, problems = {}, []
    for name, (key, function) in DRAWINGS.items():
        if not isinstance(figures.get(key), dict):
            continue
        try:
            images[name] = function(figures[key], SMALL_DPI if small else FULL_DPI, small)
        except Exception as error:  # a figure is a bonus: any failure only leaves it out
            problems.append(f"{name}: {type(error).__name__}: {error}")
    return images, problems


def describe(figures: dict) -> str:
    """The loss curve in one line of text, e.g. 'loss curve: 5.55 -> 0.41 over 80 steps'."""
    data = figures.get("loss") if isinstance(figures.get("loss"), dict) else {}
    steps = _losses(data.get("step_losses"))
    values, unit = (steps, "steps") if steps else (_losses(data.get("epoch_losses")), "epochs")
    finite = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    text = (f"loss curve: {finite[0]:.2f} -> {finite[-1]:.2f}" if finite else "loss curve: no finite loss")
    text += f" over {len(values)} {unit}"
    if isinstance(data.get("heldout_loss"), float):
        text += f"; held-out loss {data['heldout_loss']:.3f}"
    return text
