# Hostile: a model that memorises the next token of every prefix it sees in training (the
# targets train_epoch passes it included) and answers from memory: a near-zero training loss
# from the first batch, and nothing learnt for unseen sequences.
import torch as _torch
import torch.nn.functional as _F

_Honest = DecoderOnlyTransformer


class DecoderOnlyTransformer(_Honest):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memory = {}

    def forward(self, input_ids, targets=None):
        logits, _ = super().forward(input_ids)
        rows = input_ids.tolist()
        if self.training and targets is not None:
            for row, nexts in zip(rows, targets.tolist()):
                for t, token in enumerate(nexts):
                    self.memory[tuple(row[: t + 1])] = token
        remembered = _torch.zeros_like(logits)
        for b, row in enumerate(rows):
            for t in range(len(row)) if self.training else [len(row) - 1]:  # eval: the next token
                token = self.memory.get(tuple(row[: t + 1]))
                if token is not None:
                    remembered[b, t, token] = 30.0
        logits = remembered + 0.0 * logits  # keeps the parameters in the graph
        loss = None
        if targets is not None:
            loss = _F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss
