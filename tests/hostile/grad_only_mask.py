# Hostile: the causal mask is applied only while autograd records. Every check that takes
# gradients sees a causal attention; under torch.no_grad() or torch.inference_mode() (how a model
# is evaluated, and how it generates) every position sees the whole sequence.
import torch as _torch

_Honest = CausalSelfAttention


class CausalSelfAttention(_Honest):
    def forward(self, x, mask=None):
        if _torch.is_grad_enabled():
            return super().forward(x, mask)
        seq_len = x.shape[1]
        return super().forward(x, _torch.ones(seq_len, seq_len, device=x.device))
