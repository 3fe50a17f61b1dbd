"""The grading's secret: one random number drawn per grading on the grader's side, from which
every input the submission sees is derived (each check's generator, the convergence data, the
seeds its models are built with).

A rubric constant or a seed taken from a test's name can be found by the submission (from the
first inputs it gets, in well under a second) and every later input regenerated. Here nothing
sent to the worker reveals the secret or another input: each use gets its own stream, derived
from (secret, purpose) by SHAKE-256, so one stream's values say nothing about another's; a check's
torch.Generator gets its whole Mersenne-Twister state (19,968 bits) from it, not torch's 32-bit
seed, which a submission could search.

The secret is recorded in results.json (extra_data.grading_seed) so that a TA can reproduce a
grading: `run_autograder --seed HEX ...`, or SCRATCH1_GRADING_SEED=HEX in the grader's own
environment (the worker's is built from scratch, sandbox/process.py, and never holds it).
"""

import hashlib
import os
import secrets

import torch

ENVIRONMENT = "SCRATCH1_GRADING_SEED"
BITS = 128
_MT_WORDS = 624  # 32-bit words of torch's CPU generator state (mt19937)
_MT_OFFSET = 24  # bytes before them in Generator.get_state(): initial seed, left, seeded, next


def draw(override: str = "") -> int:
    """The grading's secret: `override` or $SCRATCH1_GRADING_SEED (hex) when given, else
    BITS fresh bits from the operating system's randomness (secrets)."""
    text = override or os.environ.get(ENVIRONMENT, "")
    return parse(text) if text else secrets.randbits(BITS)


def parse(text: str) -> int:
    """A seed written as hex (results.json's extra_data.grading_seed); ValueError otherwise."""
    try:
        return int(text.strip(), 16)  # also takes a 0x prefix
    except ValueError:
        raise ValueError(f"a grading seed is a hexadecimal number (as results.json records it), "
                         f"not {text!r}") from None


def text(seed: int) -> str:
    """How results.json records the seed: 32 hex digits."""
    return f"{seed:0{BITS // 4}x}"


def _stream(seed: int, purpose: str, size: int) -> bytes:
    return hashlib.shake_256(f"{text(seed)}/{purpose}".encode()).digest(size)


def integer(seed: int, purpose: str, bits: int = 63) -> int:
    """A non-negative integer below 2**bits, derived from (seed, purpose)."""
    return int.from_bytes(_stream(seed, purpose, (bits + 7) // 8), "big") >> (-bits % 8)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator whose whole state is derived from (seed, purpose)."""
    generator = torch.Generator()
    state = generator.get_state()  # a freshly constructed state: twist at the next draw
    words = _stream(seed, purpose, 4 * _MT_WORDS)
    # each 32-bit word of mt19937's state is stored as a little-endian uint64
    widened = b"".join(words[i:i + 4] + bytes(4) for i in range(0, len(words), 4))
    state[_MT_OFFSET:_MT_OFFSET + 8 * _MT_WORDS] = torch.frombuffer(bytearray(widened), dtype=torch.uint8)
    generator.set_state(state)
    return generator
