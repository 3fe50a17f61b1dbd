"""The rubric's record types: what each field of autograder/rubric.py's tables means, in which unit.

rubric.py holds the values (the table); the measured margins behind them are in
bench/CALIBRATION.md. Every record is frozen: a check reads the rubric, never changes it.
"""

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    test: str  # "<file>::<function>" in autograder/checks
    name: str  # what the student sees as the test's title
    category: str
    weight: float  # points
    timeout: float = 10.0  # seconds of wall clock for the test's requests to the worker
    visibility: str = "visible"


@dataclass(frozen=True)
class Tolerance:
    """Values match when |actual - expected| <= atol + rtol * |expected| everywhere (float32)."""
    rtol: float  # relative: a fraction of |expected|
    atol: float  # absolute: in the compared values' own units


@dataclass(frozen=True)
class RopeTolerance(Tolerance):
    """rtol/atol for the RoPE module and for test_rope.py's readout probe (|output| outside the
    one-hot dims, negative weights, |row sum - 1|), plus the thresholds of the probe's fit of the
    attention log-weights (log A[i, j]) to RoPE's."""
    log_weights: float  # largest misfit of the log-weights to RoPE's that still counts as RoPE
    min_spread: float  # how much the log-weights must vary with i - j to show a position effect
    min_scale: float  # smallest fitted scale of RoPE's log-weights that counts as RoPE (correct: 1)


@dataclass(frozen=True)
class Tolerances:
    """Comparisons of the student's tensors with expected ones, per check."""
    rmsnorm: Tolerance  # RMSNorm output and gradients against the definition
    attention: Tolerance  # attention output and input gradient against the reference's
    rope: RopeTolerance
    causal: Tolerance  # outputs at positions <= t when later tokens change; gradients on them


@dataclass(frozen=True)
class WorkerLimits:
    """The worker process's limits (autograder/sandbox/limits.py: Limits.sized applies them)."""
    import_timeout: float  # seconds: the import of backbone.py, once per worker start
    # seconds: the preflight of every fresh worker (start python, import torch, answer); missing
    # it is an internal error of the grader, not the student's
    start_timeout: float
    # RLIMIT_DATA, bytes: the largest the worker gets; never more than the container leaves once
    # the grader has grader_memory_bytes (autograder/sandbox/memory.py), so the worker's own
    # limit always fires before the container's OOM killer
    memory_bytes: int
    grader_memory_bytes: int  # bytes the grader itself needs in the container
    # bytes: a request that ends with the worker's data size this close to its limit used up the
    # memory; the check fails with a memory message and the worker is restarted for the next one
    memory_margin_bytes: int
    cpu_seconds: int  # RLIMIT_CPU, seconds of CPU
    # cores: the CPU all the worker's processes share per second of wall time, where it has a
    # cgroup with the cpu controller (sandbox/cgroup.py); a spinning process slows no other grading
    cpu_cores: float
    file_bytes: int  # RLIMIT_FSIZE, bytes
    # bytes: all the files the worker's processes keep (its work folder, and its files in /tmp,
    # /var/tmp, /dev/shm without bubblewrap); above it the worker is stopped (sandbox/process.py)
    disk_bytes: int
    processes: int  # RLIMIT_NPROC of the worker user (as root only)
    output_chars: int  # the worker's printed output kept, in characters
    reply_bytes: int  # bytes: the largest reply accepted from the worker
    total_seconds: float  # wall seconds for all the worker does in one grading, restarts included
    timeout_budget: float  # seconds lost to timeouts after which the remaining checks fail fast


@dataclass(frozen=True)
class TrainingSpec:
    """The training checks: train_epoch on the grader's stand-in model, every step recomputed
    by the grader (checks/test_training.py, checks/training_evidence.py)."""
    # seconds: the model-API request, once per grading, outside every check's time limit
    api_seconds: float
    # seconds: the train_epoch request, once per grading, outside every check's time limit
    epoch_seconds: float
    max_norm: float  # the total gradient norm train_epoch must clip to
    # allowed |parameters after a step - the grader's recomputation|, a fraction of the step's size
    update_rtol: float
    loss_rtol: float  # allowed |returned loss - mean batch loss|, a fraction of the mean


@dataclass(frozen=True)
class ModelConfig:
    """The keyword arguments of the template's DecoderOnlyTransformer."""
    vocab_size: int
    dim: int
    num_layers: int
    num_heads: int
    ff_hidden_dim: int
    max_seq_len: int
    dropout: float

    def kwargs(self) -> dict:
        """The arguments as a dict, the plain data the worker's ops take."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ConvergenceData:
    """The grader's dataset (student/generate_data.py, built by autograder/dataset.py from
    seeds drawn per grading)."""
    train_sequences: int
    val_sequences: int  # held out
    seq_length: int  # tokens per sequence


@dataclass(frozen=True)
class ConvergenceSpec:
    """The convergence check: the student's model and train_epoch on the grader's dataset."""
    target_loss: float  # held-out next-token cross-entropy (nats) for full marks
    tiers: tuple  # ((held-out loss below, fraction of the points), ...): the first reached counts
    data: ConvergenceData
    model: ModelConfig  # built after torch.manual_seed of a seed drawn per grading
    batch_size: int  # sequences per optimizer step (a DataLoader shuffled with that seed)
    epochs: int
    learning_rate: float  # AdamW's


@dataclass(frozen=True)
class MasterySpeed:
    """The informational KV-cache timing: one sequence, a prompt and new tokens."""
    model: ModelConfig
    prompt: int  # tokens
    new_tokens: int


@dataclass(frozen=True)
class MasterySpec:
    """The mastery checks (checks/test_mastery.py, worker/ops/generation.py)."""
    # The student's model with seeded order-one weights; vocab_size must differ from every other
    # Linear's output size, so the vocabulary head is the only Linear with that many outputs.
    model: ModelConfig
    seed: int
    batch: int  # sequences per case
    # ((prompt length, new tokens), ...): each decodes greedily until the sequence nearly fills
    # max_seq_len
    cases: tuple
    probe: tuple  # (prompt length, new tokens) of the run that finds the cached path
    tolerance: Tolerance  # logits of the cached path against full forward passes
    speed: MasterySpeed
