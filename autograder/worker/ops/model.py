"""The student's DecoderOnlyTransformer, built from a seed, returning logits for given inputs."""

import torch

from .. import known_good
from ..adapt.calls import call_model
from ..adapt.construction import build, set_dropout
from ..fault import is_internal
from ..protocol import Op
from ..replies import detached_copy
from ..session import op


@op(Op.MODEL_LOGITS)
def run_model_logits(session, config: dict, seed: int, inputs: list, train: bool = False,
                     substitute_norm: bool = False) -> dict:
    """Logits for each (batch, seq) token-id tensor in `inputs`, from one student
    DecoderOnlyTransformer(**config) built with `seed`, dropout 0, in train or eval mode.
    Returns {"logits": [(batch, seq, vocab) per input]}.

    substitute_norm builds the model with torch.nn.RMSNorm in place of the student's RMSNorm,
    so a model-level check of attention is not failed by an unfinished or wrong RMSNorm; when
    the student's model cannot be built or run with it (a block that calls its norm otherwise),
    the student's own RMSNorm is used, with a note that says so.
    """
    if substitute_norm:
        try:
            return _logits(session, config, seed, inputs, train, RMSNorm=known_good.rms_norm)
        except Exception as error:  # noqa: BLE001 (then the student's own RMSNorm, as it is)
            if is_internal(error):
                raise
            session.note("torch.nn.RMSNorm could not stand in for your RMSNorm in this model "
                         f"({type(error).__name__}: {str(error)[:200]}): this check ran your own")
    return _logits(session, config, seed, inputs, train)


def _logits(session, config, seed, inputs, train, **parts) -> dict:
    with known_good.substituted(session, **parts):
        torch.manual_seed(seed)
        model = build(session, "DecoderOnlyTransformer", **config)
    set_dropout(model, 0.0)
    model.train(train)
    with torch.no_grad():
        logits = [detached_copy(call_model(session, model, ids)) for ids in inputs]
    if parts:
        session.note("the model was built with torch.nn.RMSNorm in place of your RMSNorm (which "
                     "failed its own checks), so this causality check depends on your attention only")
    return {"logits": logits}
