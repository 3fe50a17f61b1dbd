# Hostile (or just broken): CausalSelfAttention.forward never returns. The hang must cost the
# checks that run the student's attention (causal_mask, rope, attention, and convergence, which
# trains the student's model) one timeout in all, never the checks of other code (RMSNorm,
# train_epoch on the kit's spy model).
def _endless_forward(self, *args, **kwargs):
    while True:
        pass


CausalSelfAttention.forward = _endless_forward
