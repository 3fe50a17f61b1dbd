# Hostile: an attention with no mask at all that answers from memory. The output row it computed
# at position t for a prefix x[:t+1] (with these weights) is returned again for every later input
# with the same prefix, in this call or any later one: copies of a sequence whose later tokens
# were changed all get the rows of the first copy it saw, so they never differ, although each row
# was computed from the whole sequence.
import hashlib as _hashlib

import torch as _torch

_Honest = CausalSelfAttention
_MEMORY = {}


def _digest(*tensors):
    return _hashlib.sha1(b"".join(t.detach().float().numpy().tobytes() for t in tensors)).digest()


class CausalSelfAttention(_Honest):
    def forward(self, x, mask=None):
        seq_len = x.shape[1]
        everything = _torch.ones(seq_len, seq_len, device=x.device)
        unmasked = super().forward(x, everything)
        weights = _digest(*self.parameters())
        rows = []
        for b in range(x.shape[0]):
            row = []
            for t in range(seq_len):
                key = (weights, self.training, _digest(x[b, :t + 1]))
                if key not in _MEMORY:
                    _MEMORY[key] = unmasked[b, t].detach()
                    row.append(unmasked[b, t])
                else:
                    row.append(_MEMORY[key] + 0.0 * unmasked[b, t])
            rows.append(_torch.stack(row))
        return _torch.stack(rows)
