"""The rubric: every graded test's weight, category, visibility and time limit, and every threshold.

This is the one file to edit to change how Scratch-1 is graded. The graded tests live in
autograder/checks/, one file per component; each test there has exactly one entry here (the
report plugin refuses to grade if the two disagree). Weights sum to 100, plus the points of the
bonus categories (BONUS_CATEGORIES: 0 unless MASTERY_BONUS).

Visibility (Gradescope): "visible" shows the test and its message at once; "after_due_date"
hides it until the deadline passes. A timeout is the wall-clock seconds for all the requests one
test (each case of a parametrized test) sends to the worker, counted from its first request; the
worker is killed and restarted when it is exceeded (see WORKER for the grading's total budget).
"""

from dataclasses import dataclass

CATEGORIES = ("interface", "rmsnorm", "causal_mask", "rope", "attention", "training", "convergence",
              "mastery")
# Categories of the course's optional bonus: their points (0 unless MASTERY_BONUS) come on top
# of the 100, and a submission without the feature loses nothing.
BONUS_CATEGORIES = ("mastery",)


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
         "depend only on m - n, angles t * base^(-2i/dim) (provided code, informational)",
         "rope", 0),
    Rule("test_rope.py::test_attention_scores_depend_on_relative_position", "RoPE inside "
         "attention: scores change with the relative position m - n, and only with it", "rope", 5),
    Rule("test_rope.py::test_rope_applied_to_queries_and_keys_not_values", "RoPE rotates both "
         "the queries and the keys, and not the values", "rope", 5),
    Rule("test_rope.py::test_rope_angles_in_each_head", "RoPE angles are t * base^(-2i/head_dim) "
         "within each head (one head, and two heads with head_dim < dim)", "rope", 5),

    Rule("test_attention.py::test_output_matches_reference", "Attention output matches the "
         "reference with the same weights", "attention", 6),
    Rule("test_attention.py::test_explicit_mask_matches_reference", "Attention with the causal "
         "mask passed by the model matches the reference", "attention", 2),
    Rule("test_attention.py::test_gradients_match_reference", "Attention gradients match the "
         "reference", "attention", 2, visibility=HIDDEN_UNTIL_DUE),
    Rule("test_attention.py::test_deterministic_in_eval_mode", "Attention is deterministic in "
         "eval mode (dropout off)", "attention", 3),
    Rule("test_attention.py::test_sequences_attended_independently", "Each sequence of a batch "
         "is attended to on its own", "attention", 2),

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
#   memory (2026-11-30, in ../shared/tools/gsbox.sh's 768 MB cgroup, sampled every 30 ms)
#          peak VmData of the worker 252 MB, RssAnon 217 MB (it no longer imports torch._dynamo
#          or sympy: worker/eager_dynamo.py, worker/gradients.py); the grader's RssAnon 186 MB
#          and RssFile 110 MB (torch's libraries, shared with the worker); the cgroup's peak
#          374-394 MB for the whole grading.
# Worst case for the whole grading: total_seconds of worker time plus the grader's own ~30 s on
# Gradescope (~5.5 min), whatever the submission does.
WORKER = dict(
    import_timeout=30.0,  # the import of backbone.py, once per worker start (torch: 1-4 s)
    # The preflight of every fresh worker (start python, import torch, answer; 1-4 s here, ~2x
    # on Gradescope's 0.5 vCPU); missing it is an internal error of the grader, not the student's.
    start_timeout=60.0,
    # RLIMIT_DATA: a larger allocation fails inside the worker. At most memory_bytes (2.5x the
    # reference's 252 MB peak: correct variants such as an adapter-passed mask need more in
    # convergence), and never more than the container leaves once the grader has
    # grader_memory_bytes (autograder/memory.py): in Gradescope's default 768 MB that gives
    # 432 MB, so the worker's own limit always fires before the container's OOM killer.
    memory_bytes=640 * 2**20,
    # The grader's RssAnon 186 MB + RssFile 110 MB (shared libraries, counted once in the
    # cgroup) measured above, + 40 MB for Gradescope's harness, page cache and the kernel.
    grader_memory_bytes=336 * 2**20,
    # A request that ends with the worker's data size this close to its limit used up the memory
    # (its code kept what it allocated): the check fails with a memory message and the worker is
    # restarted for the next one. The reference ends every request >= 180 MB below the limit.
    memory_margin_bytes=32 * 2**20,
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
    # log-weights to RoPE's, correct <= 1.5e-6, the nearest other version >= 0.83 (the RoPE angle
    # faults of tests/variants.py: 0.13 with frequencies base^(-2i/(head_dim - 1)), 1.0 with
    # base^(-i/head_dim), 1.3 RoPE before the head split, 1.4 cos and sin swapped). min_spread:
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
    # bench/CONVERGENCE.md for the budget, measured with bench/convergence.py as graded here: the
    # reference ends at 0.43-0.48 after 60 steps (seeds 0-4), while attention without a mask,
    # without RoPE or without the past stays at 1.78 or above (seeds 0-1); at 80 steps and 128
    # held-out sequences the same figures were 0.42-0.43 and 1.78, for 2.0 CPU-s more on
    # Gradescope's 0.5 vCPU (issue 10: grading must fit 10 CPU-s there).
    # 64 held-out sequences: the per-sequence loss has std 0.11 (reference, 3 seeds), so the
    # mean is known to +-0.014, 40 times less than the gap to the target.
    data=dict(train_sequences=960, val_sequences=64, seq_length=50, train_seed=1001,
              val_seed=2002),
    model=dict(vocab_size=256, dim=64, num_layers=2, num_heads=4, ff_hidden_dim=256,
               max_seq_len=50, dropout=0.0),
    seed=0,
    batch_size=32,
    epochs=2,  # 2 x 30 batches = 60 optimizer steps
    learning_rate=3e-3,
)

# The course's mastery bonus (+10 beyond 100: KV-caching 5, RoPE derivation and ablation 5, the
# latter graded by hand). The switch: False shows the KV-cache tests with their findings, worth 0
# points (Gradescope shows a 0-point test as information); True makes the KV-cache check worth
# MASTERY_POINTS on top of the 100 (set the Gradescope assignment's total to 100: a score above it
# is extra credit). Nothing else changes either way; without a cache the tests say "no KV-cache
# path found". The speed-up is information only.
MASTERY_BONUS = False
MASTERY_POINTS = 5


def mastery_rules(bonus: bool) -> tuple:
    return (
        Rule("test_mastery.py::test_kv_cache_matches_full_forward", "KV-cache decoding gives the "
             "tokens and logits of decoding by full forward passes (mastery bonus)", "mastery",
             MASTERY_POINTS if bonus else 0, timeout=20),
        Rule("test_mastery.py::test_kv_cache_speedup", "KV-cache speed-up over decoding by full "
             "forward passes (informational)", "mastery", 0, timeout=20),
    )


RULES = RULES + mastery_rules(MASTERY_BONUS)

# The mastery checks (autograder/checks/test_mastery.py, worker/ops/generation.py).
MASTERY = dict(
    # The student's model with seeded order-one weights; vocab_size differs from every other
    # Linear's output size, so the vocabulary head is the only Linear with that many outputs.
    model=dict(vocab_size=96, dim=64, num_layers=2, num_heads=4, ff_hidden_dim=128, max_seq_len=32,
               dropout=0.0),
    seed=0,
    batch=3,
    # (prompt length, new tokens): a 1-token prompt, a short and a long one, and one that fills
    # max_seq_len; each decodes greedily until the sequence nearly fills max_seq_len.
    cases=((1, 16), (7, 12), (16, 16), (29, 3)),
    probe=(4, 3),  # (prompt length, new tokens) of the run that finds the cached path
    # Logits of the cached path against full forward passes (order-one logits, |logit| <= ~6):
    # correct caches (the base of tests/mastery_variants.py, a cache returning (out, present_kv),
    # one in generate_cached(), generate_with_kv_cache slicing RoPE's tables) differ by
    # <= 1.5e-6; the nearest bug (keys rotated after the concatenation, 1-token prompt) by 0.31.
    rtol=1e-4, atol=1e-4,
    # Timing: the course's model size with a longer window, one sequence, a 96-token prompt and
    # 32 new tokens (the reference with a cache: 0.17-0.18 s cached, 0.74 s by full passes, 1.1 s
    # of CPU for the whole test on this machine).
    speed=dict(model=dict(vocab_size=256, dim=256, num_layers=4, num_heads=8, ff_hidden_dim=1024,
                          max_seq_len=128, dropout=0.0), prompt=96, new_tokens=32),
)


def rule_for(test: str) -> Rule:
    for rule in RULES:
        if rule.test == test:
            return rule
    raise KeyError(test)
