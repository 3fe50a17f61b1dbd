# Hostile: train nothing (train_epoch returns a made-up loss) and answer the held-out prefixes by
# regenerating the grader's held-out set: search generate_data.py's seeds for one whose sequences
# start with the first prefixes the model is asked about, then predict every later token exactly.
import generate_data as _generate_data
import torch as _torch

_Honest = DecoderOnlyTransformer


def train_epoch(model, dataloader, optimizer, device, epoch):
    return 0.1


class DecoderOnlyTransformer(_Honest):
    regenerated = None  # the held-out actions, once a seed reproduced them (kept across models)

    def forward(self, input_ids, targets=None):
        logits, loss = super().forward(input_ids, targets)
        if self.training or targets is not None:
            return logits, loss
        batch, length = input_ids.shape
        known = DecoderOnlyTransformer.regenerated
        if known is None and length == 1:
            for seed in range(2048):  # a seed written in a rubric is small
                actions = _generate_data.generate_dataset(batch, 50, seed=seed)["actions"]
                if _torch.equal(actions[:, :1], input_ids):
                    DecoderOnlyTransformer.regenerated = known = actions
                    break
        if known is not None and known.shape[0] == batch and length < known.shape[1] \
                and _torch.equal(known[:, :length], input_ids):
            exact = _torch.full_like(logits, -30.0)
            exact[_torch.arange(batch), -1, known[:, length]] = 30.0
            return exact, loss
        return logits, loss
