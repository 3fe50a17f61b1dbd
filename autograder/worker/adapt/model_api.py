"""How the student's DecoderOnlyTransformer.forward is called and what it returns (ModelAPI),
read off one small model of theirs (the API probe), so that the training checks' stand-in
model meets the student's train_epoch exactly as the student's own model would."""

import torch

from ..fault import does_not_fit
from .calls import call_submission, positional_parameters
from .construction import build, set_dropout


class Layout:
    """What forward returns, as an int so that it travels in a reply as plain data: a tuple (or
    list) of n items, the logits first, is n itself."""

    LOGITS_ONLY = 0  # the logits tensor itself
    DICT = -1  # a dict with "logits" (and "loss")
    TEMPLATE = 2  # the template's (logits, loss)


TEMPLATE_LOSS_AT = 1  # where the template's tuple holds the loss


def layout_of(output):
    """The Layout of a forward's output, or None when it holds no logits where expected."""
    if isinstance(output, torch.Tensor):
        return Layout.LOGITS_ONLY
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return Layout.DICT
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return len(output)
    return None


class ModelAPI:
    """How the student's DecoderOnlyTransformer.forward is called and what it returns. The
    template's: forward(input_ids, targets=None) -> (logits, loss), the loss over the positions
    as given. It travels between requests as a reply (as_reply, from_reply)."""

    # The reply's names of two fields (the checks hand the reply back as it came).
    _REPLY_NAMES = {"without_targets": "plain", "with_targets": "trained"}

    def __init__(self, without_targets=Layout.TEMPLATE, with_targets=Layout.TEMPLATE,
                 loss_at=TEMPLATE_LOSS_AT, targets="targets", shifts=False, ignore_index=None):
        self.without_targets = without_targets  # the Layout of forward(input_ids)
        self.with_targets = with_targets  # the Layout of forward(input_ids, targets)
        self.loss_at = loss_at  # where the loss is in that tuple (None: not returned)
        self.targets = targets  # the name of forward's targets parameter
        self.shifts = shifts  # pairs logits[:, :-1] with targets[:, 1:] given targets of full length
        self.ignore_index = ignore_index  # a target id its loss leaves out (cross_entropy's), or None

    def as_reply(self) -> dict:
        """{"plain": Layout without targets, "trained": Layout with targets, "loss_at",
        "targets", "shifts", "ignore_index"}: plain data for a reply."""
        return {self._REPLY_NAMES.get(name, name): value for name, value in vars(self).items()}

    @classmethod
    def from_reply(cls, reply: dict) -> "ModelAPI":
        """The ModelAPI that as_reply() gave `reply`; the template's when reply is None."""
        names = {wire: name for name, wire in cls._REPLY_NAMES.items()}
        return cls(**{names.get(key, key): value for key, value in (reply or {}).items()})

    def output(self, logits, loss):
        """(logits, loss) arranged as the student's model returns them; None fills extra items."""
        layout = self.without_targets if loss is None else self.with_targets
        if layout == Layout.LOGITS_ONLY:
            return logits
        if layout == Layout.DICT:
            return {"logits": logits, "loss": loss}
        items = [logits] + [None] * (layout - 1)
        if loss is not None and self.loss_at is not None:
            items[self.loss_at] = loss
        return tuple(items)


PROBE_MODEL = dict(dim=16, num_layers=1, num_heads=2, ff_hidden_dim=32, dropout=0.0)


def read(session, vocab_size: int) -> ModelAPI:
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
        without_targets = layout_of(call_submission(model, ids))
    try:
        trained = call_submission(model, ids, ids)
    except Exception:  # noqa: BLE001 (forward takes no targets: train_epoch computes the loss)
        trained = None
    session.notes[:] = notes
    if without_targets is None:
        raise does_not_fit(TypeError(
            "DecoderOnlyTransformer.forward(input_ids) returned neither logits, a tuple starting "
            "with them, nor a dict with 'logits'"))
    parameters = positional_parameters(model.forward) or []
    api = ModelAPI(without_targets=without_targets, with_targets=without_targets,
                   targets=parameters[1].name if len(parameters) > 1 else None)
    layout, logits, loss = layout_of(trained), None, None
    if layout == Layout.DICT:
        api.with_targets, api.loss_at = layout, None
        logits, loss = trained["logits"], trained.get("loss")
    elif layout:  # a tuple of `layout` items
        api.with_targets, logits = layout, trained[0]
        api.loss_at = next((i for i, item in enumerate(trained) if i and isinstance(item, torch.Tensor)
                            and item.numel() == 1 and item.is_floating_point()), None)
        loss = trained[api.loss_at] if api.loss_at is not None else None
    elif layout == Layout.LOGITS_ONLY:
        api.with_targets = Layout.LOGITS_ONLY
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
    _note(session, api)
    return api


def _note(session, api: ModelAPI) -> None:
    stand_in = "in the training checks the grader's stand-in model"
    names = {Layout.LOGITS_ONLY: "logits only", Layout.DICT: "a dict"}
    if (api.without_targets != Layout.TEMPLATE or api.with_targets != Layout.TEMPLATE
            or api.loss_at not in (TEMPLATE_LOSS_AT, None)):
        layouts = {names.get(layout, f"a tuple of {layout} items")
                   for layout in (api.without_targets, api.with_targets)}
        session.note(f"DecoderOnlyTransformer.forward returns {' or '.join(sorted(layouts))} (the "
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
