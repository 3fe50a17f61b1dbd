"""The student's DecoderOnlyTransformer, built from a seed, returning logits for given inputs."""

import torch

from .. import adapt, known_good
from ..protocol import Op
from ..session import op


@op(Op.MODEL_LOGITS)
def model_logits(session, config: dict, seed: int, inputs: list, train: bool = False,
                 substitute_norm: bool = False) -> dict:
    """Logits for each (batch, seq) tensor in `inputs`, from one model built with `seed`.

    substitute_norm builds the model with torch.nn.RMSNorm in place of the student's RMSNorm,
    so a model-level check of attention is not failed by an unfinished or wrong RMSNorm.
    """
    parts = {}
    if substitute_norm:
        parts["RMSNorm"] = known_good.rms_norm
        session.note("the model was built with torch.nn.RMSNorm in place of your RMSNorm (which "
                     "failed its own checks), so this causality check depends on your attention only")
    with known_good.substituted(session, **parts):
        torch.manual_seed(seed)
        model = adapt.build(session, "DecoderOnlyTransformer", **config)
    adapt.set_dropout(model, 0.0)
    model.train(train)
    with torch.no_grad():
        logits = [adapt.plain(adapt.call_model(session, model, ids)) for ids in inputs]
    return {"logits": logits}
