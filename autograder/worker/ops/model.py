"""The student's DecoderOnlyTransformer, built from a seed, returning logits for given inputs."""

import torch

from .. import known_good
from ..adapt.calls import call_model
from ..adapt.construction import build, set_dropout
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
    so a model-level check of attention is not failed by an unfinished or wrong RMSNorm.
    """
    parts = {}
    if substitute_norm:
        parts["RMSNorm"] = known_good.rms_norm
        session.note("the model was built with torch.nn.RMSNorm in place of your RMSNorm (which "
                     "failed its own checks), so this causality check depends on your attention only")
    with known_good.substituted(session, **parts):
        torch.manual_seed(seed)
        model = build(session, "DecoderOnlyTransformer", **config)
    set_dropout(model, 0.0)
    model.train(train)
    with torch.no_grad():
        logits = [detached_copy(call_model(session, model, ids)) for ids in inputs]
    return {"logits": logits}
