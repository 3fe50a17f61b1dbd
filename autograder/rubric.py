"""The rubric: every graded test's weight, category, visibility and time limit, and every threshold.

This is the one file to edit to change how Scratch-1 is graded. The graded tests live in
autograder/checks/, one file per component; each test there has exactly one entry here (the
report plugin refuses to grade if the two disagree). Weights sum to 100, plus the points of the
bonus categories (BONUS_CATEGORIES: 0 unless MASTERY_BONUS).

Visibility (Gradescope): "visible" shows the test and its message at once; "after_due_date"
hides it until the deadline passes. A timeout is the wall-clock seconds for all the requests one
test (each case of a parametrized test) sends to the worker, counted from its first request; the
worker is killed and restarted when it is exceeded (see WORKER for the grading's total budget).

What each field means, and its unit: autograder/rubric_records.py. Why each number is what it
is (what correct versions measure, what the nearest bugs measure, and the bench script that
reproduces the figures): bench/CALIBRATION.md, one section per record; change a number only
together with its section there.
"""

from .rubric_records import (ConvergenceData, ConvergenceSpec, MasterySpec, MasterySpeed,
                             ModelConfig, RopeTolerance, Rule, Tolerance, Tolerances, TrainingSpec,
                             WorkerLimits)

CATEGORIES = ("interface", "rmsnorm", "causal_mask", "rope", "attention", "training", "convergence",
              "mastery")
# Categories of the course's optional bonus: their points (0 unless MASTERY_BONUS) come on top
# of the 100, and a submission without the feature loses nothing.
BONUS_CATEGORIES = ("mastery",)


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


def rule_for(test: str) -> Rule:
    for rule in RULES:
        if rule.test == test:
            return rule
    raise KeyError(test)


# -- the thresholds ----------------------------------------------------------------------------

# Sized for Gradescope's default machine (0.5 vCPU, 768 MB for grader and worker).
WORKER = WorkerLimits(  # see bench/CALIBRATION.md#worker
    import_timeout=30.0,
    start_timeout=60.0,
    memory_bytes=640 * 2**20,
    grader_memory_bytes=336 * 2**20,
    memory_margin_bytes=32 * 2**20,
    cpu_seconds=300,
    cpu_cores=1.0,
    file_bytes=64 * 2**20,
    disk_bytes=256 * 2**20,
    processes=64,
    output_chars=20_000,
    reply_bytes=16 * 2**20,
    total_seconds=300.0,
    timeout_budget=120.0,
)

TOLERANCES = Tolerances(
    rmsnorm=Tolerance(rtol=1e-5, atol=1e-5),  # see bench/CALIBRATION.md#rmsnorm
    attention=Tolerance(rtol=1e-4, atol=1e-5),  # see bench/CALIBRATION.md#attention
    # see bench/CALIBRATION.md#rope
    rope=RopeTolerance(rtol=1e-4, atol=1e-5, log_weights=1e-3, min_spread=1e-3, min_scale=0.1),
    causal=Tolerance(rtol=0.0, atol=1e-5),  # absolute only; see bench/CALIBRATION.md#causal
)

TRAINING = TrainingSpec(  # see bench/CALIBRATION.md#training
    api_seconds=10.0,
    epoch_seconds=30.0,
    max_norm=1.0,
    update_rtol=1e-3,
    loss_rtol=1e-5,
)

CONVERGENCE = ConvergenceSpec(  # see bench/CALIBRATION.md#convergence and bench/CONVERGENCE.md
    target_loss=1.0,
    tiers=((1.0, 1.0), (1.5, 0.5), (2.5, 0.2)),
    data=ConvergenceData(train_sequences=960, val_sequences=64, seq_length=50),
    model=ModelConfig(vocab_size=256, dim=64, num_layers=2, num_heads=4, ff_hidden_dim=256,
                      max_seq_len=50, dropout=0.0),
    batch_size=32,
    epochs=2,  # 2 x 30 batches = 60 optimizer steps
    learning_rate=3e-3,
)

MASTERY = MasterySpec(  # see bench/CALIBRATION.md#mastery
    model=ModelConfig(vocab_size=96, dim=64, num_layers=2, num_heads=4, ff_hidden_dim=128,
                      max_seq_len=32, dropout=0.0),
    seed=0,
    batch=3,
    cases=((1, 16), (7, 12), (16, 16), (29, 3)),  # a 1-token prompt, a short, a long, a full one
    probe=(4, 3),
    tolerance=Tolerance(rtol=1e-4, atol=1e-4),
    speed=MasterySpeed(model=ModelConfig(vocab_size=256, dim=256, num_layers=4, num_heads=8,
                                         ff_hidden_dim=1024, max_seq_len=128, dropout=0.0),
                       prompt=96, new_tokens=32),
)
