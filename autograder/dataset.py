"""The grader's dataset for the convergence check.

Generated at grading time from the kit's student/generate_data.py with the rubric's sizes and
seeds (about 0.1 s, so nothing is cached). Training and held-out sequences come from different
seeds, and the worker receives them only through requests (worker/ops/convergence.py).
"""

import importlib.util
import os

from . import rubric

GENERATOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "student", "generate_data.py")


def load() -> dict:
    spec = importlib.util.spec_from_file_location("scratch1_generate_data", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    sizes = rubric.CONVERGENCE.data
    train = generator.generate_dataset(sizes.train_sequences, sizes.seq_length, seed=sizes.train_seed)
    held_out = generator.generate_dataset(sizes.val_sequences, sizes.seq_length, seed=sizes.val_seed)
    return {"train_states": train["states"], "train_actions": train["actions"],
            "val_actions": held_out["actions"]}
