"""The rubric: every graded test's weight, category, visibility and time limit, and every threshold.

This is the one file to edit to change how Scratch-1 is graded. The graded tests live in
autograder/checks/, one file per component; each test there has exactly one entry here (the
report plugin refuses to grade if the two disagree). Weights sum to 100.

Visibility (Gradescope): "visible" shows the test and its message at once; "after_due_date"
hides it until the deadline passes. A timeout is the wall-clock seconds for all the requests one
test (each case of a parametrized test) sends to the worker, counted from its first request; the
worker is killed and restarted when it is exceeded (see WORKER for the grading's total budget).
"""

from dataclasses import dataclass

CATEGORIES = ("interface", "rmsnorm", "causal_mask", "rope", "attention", "training", "convergence")


@dataclass(frozen=True)
class Rule:
    test: str  # "<file>::<function>" in autograder/checks
    name: str  # what the student sees as the test's title
    category: str
    weight: float
    timeout: float = 10.0
    visibility: str = "visible"


# Visibility policy: a student sees at once every check that the public tests in the student
# bundle also cover in spirit (formula, causality, RoPE, outputs, training steps, convergence), so
# no one is surprised after the deadline by a whole missing part; the deeper variants of checks
# already shown (gradients, every sequence length, gradient accumulation) stay hidden until the
# due date, so they cannot be passed by trial and error. The top-level summary counts only the
# visible tests (cli._summary); TAs see everything in batch reports.
HIDDEN_UNTIL_DUE = "after_due_date"

RULES = (
    Rule("test_interface.py::test_submission_found", "backbone.py was submitted", "interface", 1),
    Rule("test_interface.py::test_compiles", "backbone.py compiles", "interface", 1),
    Rule("test_interface.py::test_imports", "backbone.py imports", "interface", 1),
    Rule("test_interface.py::test_required_names", "backbone.py defines the template's classes "
         "and functions", "interface", 2),

    Rule("test_rmsnorm.py::test_forward_matches_reference", "RMSNorm output matches the "
         "definition (several shapes, eps and scale values)", "rmsnorm", 7),
    Rule("test_rmsnorm.py::test_gradients_match_reference", "RMSNorm scale is a learnable (dim,) "
         "parameter and gradients match", "rmsnorm", 5, visibility=HIDDEN_UNTIL_DUE),
    Rule("test_rmsnorm.py::test_zero_input_is_finite", "RMSNorm of an all-zero input is finite",
         "rmsnorm", 3),

    Rule("test_causal_mask.py::test_attention_ignores_future_tokens", "Attention outputs at "
         "positions <= t do not change when tokens after t change", "causal_mask", 6),
    Rule("test_causal_mask.py::test_attention_future_gradients_are_zero", "Gradients from future "
         "positions are exactly zero", "causal_mask", 4, visibility=HIDDEN_UNTIL_DUE),
    Rule("test_causal_mask.py::test_attention_sees_itself_and_past", "Each position attends to "
         "itself and to its past (the mask is not too strict)", "causal_mask", 3),
    Rule("test_causal_mask.py::test_model_ignores_future_tokens", "The full model's logits at "
         "positions <= t do not depend on tokens after t", "causal_mask", 4),
    Rule("test_causal_mask.py::test_sequence_lengths", "Attention is causal for every sequence "
         "length from 1 to max_seq_len", "causal_mask", 3, visibility=HIDDEN_UNTIL_DUE),

    Rule("test_rope.py::test_rope_module_relative_property", "RotaryPositionalEmbedding: scores "
         "depend only on m - n (provided code, informational)", "rope", 0),
    Rule("test_rope.py::test_attention_scores_depend_on_relative_position", "RoPE inside "
         "attention: scores depend only on the relative position m - n", "rope", 8),
    Rule("test_rope.py::test_rope_applied_to_queries_and_keys_not_values", "RoPE is applied to "
         "queries and keys, not to values", "rope", 7),

    Rule("test_attention.py::test_output_matches_reference", "Attention output matches the "
         "reference with the same weights", "attention", 9),
    Rule("test_attention.py::test_explicit_mask_matches_reference", "Attention with the causal "
         "mask passed by the model matches the reference", "attention", 3),
    Rule("test_attention.py::test_gradients_match_reference", "Attention gradients match the "
         "reference", "attention", 3, visibility=HIDDEN_UNTIL_DUE),

    Rule("test_training.py::test_next_token_targets", "train_epoch predicts actions[:, 1:] from "
         "actions[:, :-1]", "training", 4),
    Rule("test_training.py::test_gradients_zeroed_each_step", "train_epoch clears gradients "
         "before every step of the optimizer it is given", "training", 3,
         visibility=HIDDEN_UNTIL_DUE),
    Rule("test_training.py::test_gradient_norm_clipped", "train_epoch clips the gradient norm "
         "to 1.0", "training", 3),
    Rule("test_training.py::test_train_mode", "train_epoch puts the model in training mode",
         "training", 2),
    Rule("test_training.py::test_returns_mean_batch_loss", "train_epoch returns the mean batch "
         "loss as a float", "training", 3),

    Rule("test_convergence.py::test_heldout_loss", "Your model, trained by your train_epoch, "
         "reaches a held-out next-token loss below 1.0", "convergence", 15, timeout=180),
)

# Limits of the worker process (see autograder/sandbox.py), sized for Gradescope's default machine
# (0.5 vCPU, where CPU-bound work runs ~2x slower than on one core here; 768 MB for grader + worker)
# from measurements of the reference on one core (taskset -c 0), 2 runs or more each:
#   time   import 1-4 s; every module-level check's requests <= 0.7 s (<= 1.0 s for attention
#          looped over heads and query positions); convergence 5.5-6 s CPU (8-12 s wall on a
#          loaded machine), the looped attention 17.7 s CPU (3.2x). Checks get 10 s (the rubric's
#          default timeout, 7x the slowest on Gradescope), convergence 180 s (the 3.2x-slower
#          version needs ~36 s there; a 100x slower one is stopped).
#   memory peak VmData of the worker 314-319 MB (torch 175 MB, torch._dynamo, which the first
#          optimizer imports, 70 MB), RssAnon 277-286 MB; it fails below 320 MB. The grader
#          itself peaks at 344 MB RSS (237 MB anonymous, the rest torch's libraries, shared with
#          the worker); both together 615 MB. The RLIMIT_DATA below bounds the pair by 237 MB
#          + the limit (anonymous) + ~110 MB of shared, reclaimable library pages.
# Worst case for the whole grading: total_seconds of worker time plus the grader's own ~30 s on
# Gradescope (~5.5 min), whatever the submission does.
WORKER = dict(
    import_timeout=30.0,  # the import of backbone.py, once per worker start (torch: 1-4 s)
    # RLIMIT_DATA: a larger allocation fails inside the worker. 384 MB (the reference + 65 MB)
    # made correct variants (an adapter-passed mask, extra keywords) fail intermittently with
    # "can't allocate memory" in convergence; 640 MB is twice the reference's peak. The price:
    # grader (237 MB anonymous) + a worker at its limit can exceed Gradescope's default 768 MB,
    # so a submission that allocates up to the limit can get the container killed (scoring 0,
    # which gains it nothing); set the assignment's memory to 1.5 GB to rule that out.
    memory_bytes=640 * 2**20,
    cpu_seconds=300,
    file_bytes=64 * 2**20,
    processes=64,  # RLIMIT_NPROC of the worker user (as root only)
    output_chars=20_000,
    reply_bytes=16 * 2**20,  # the largest reply of the reference is 1 MB
    total_seconds=300.0,  # everything the worker does in one grading, restarts included
    timeout_budget=120.0,  # once timeouts have cost this much, the remaining checks fail fast
)

# Numerical tolerances for comparisons with the reference (float32 throughout).
TOLERANCES = dict(
    # RMSNorm output and gradients (test_rmsnorm.py's inputs): correct versions (rsqrt, float32 or
    # float64 upcasts, norm / sqrt(dim), x * scale / rms) use <= 0.06 of the allowance
    # atol + rtol * |expected|; the nearest bugs exceed it >= 8e4-fold on the case that shows
    # them (eps 1e-2, inputs of size 0.05): eps outside the square root 9.8e5, no eps 1.7e6, eps
    # ten times too large 8e4.
    rmsnorm=dict(rtol=1e-5, atol=1e-5),
    # Attention output and input gradient against the reference: correct versions (either RoPE
    # pairing, einsum, float64, -1e9, SDPA, separate q/k/v layers) are off by <= 7.2e-7; the
    # nearest attention bug (no 1/sqrt(head_dim)) by >= 1.0, the nearest RoPE bug by >= 0.7.
    attention=dict(rtol=1e-4, atol=1e-5),
    # rtol/atol: the RoPE module (reference off by <= 1.9e-6), and the readout probe of
    # test_rope.py (|output| outside the one-hot dims, negative weights, |row sum - 1|): correct
    # versions <= 2.4e-7, RoPE also on the values >= 0.052. log_weights: misfit of the probe's
    # log-weights to RoPE's, correct <= 1.5e-6, the nearest other version >= 0.83. min_spread:
    # how much they vary with i - j, correct >= 0.35, no RoPE or RoPE on only Q or K <= 4.2e-8.
    # min_scale: correct fits at scale 1 (4 without 1/sqrt(head_dim)), no-RoPE-like ones at ~0.
    rope=dict(rtol=1e-4, atol=1e-5, log_weights=1e-3, min_spread=1e-3, min_scale=0.1),
    # Outputs at positions <= t when later tokens change, and gradients on later tokens. Every
    # mask that gives future keys zero weight (-inf, -1e9, -1e4, bool/torch.where, SDPA,
    # float64) gives bitwise-equal outputs and exactly-zero gradients; renormalising after the
    # softmax or a softmax shift taken over all keys (correct in exact arithmetic) moves them by
    # <= 4e-7 (outputs) and 2e-7 (gradients); the full model's logits by <= 9e-8. The nearest
    # leak, weights zeroed after the softmax, moves the attention output by >= 3e-3 (T=64; >= 0.1
    # at T=8) and its gradient by >= 0.1; the full model's logits (0.02-std init, so nearly
    # uniform attention) by >= 2e-4 (20 seeds).
    causal=dict(atol=1e-5),
)

# The training checks: train_epoch on the grader's spy model (autograder/checks/test_training.py).
TRAINING = dict(
    # The model-API request (once per grading, outside every check's time limit): a small model
    # of the student's with known-good attention and RMSNorm, run twice: 0.01-0.05 s for the
    # reference and the template (first call, one core); 10 s is the rubric's default check limit.
    api_seconds=10.0,
    max_norm=1.0,
    # |total gradient norm at step - max_norm|: clip_grad_norm_ leaves <= 2.2e-7 (30 seeds); the
    # nearest wrong clipping, each parameter tensor clipped on its own, leaves 0.42.
    norm_tolerance=1e-4,
    # The returned loss against the mean of the batch losses: correct versions (loss.item() sums,
    # token-weighted means, 0-d tensors) are within 1e-7; on the checks' data the nearest wrong
    # return (the first batch's loss) is 2% off.
    loss_rtol=1e-5,
)

# The convergence check: the student's model and train_epoch on the grader's dataset.
CONVERGENCE = dict(
    target_loss=1.0,
    # (held-out loss below, fraction of the points): the first tier the loss reaches counts
    tiers=((1.0, 1.0), (1.5, 0.5), (2.5, 0.2)),
    # Sequence length 50 keeps the entropy floor at 0.375 (0.64 at length 24); see
    # bench/CONVERGENCE.md for the budget: the reference passes 0.8 by step 40 and ends near 0.39
    # at step 80 on every seed, while attention without a mask, without RoPE or without the past
    # stays at 1.76 or above.
    # 128 held-out sequences: the per-sequence loss has std 0.11 (reference, 3 seeds), so the
    # mean is known to +-0.01, and the prefix-only evaluation costs half of what 256 did.
    data=dict(train_sequences=1280, val_sequences=128, seq_length=50, train_seed=1001,
              val_seed=2002),
    model=dict(vocab_size=256, dim=64, num_layers=2, num_heads=4, ff_hidden_dim=256,
               max_seq_len=50, dropout=0.0),
    seed=0,
    batch_size=32,
    epochs=2,  # 2 x 40 batches = 80 optimizer steps
    learning_rate=3e-3,
)


def rule_for(test: str) -> Rule:
    for rule in RULES:
        if rule.test == test:
            return rule
    raise KeyError(test)
