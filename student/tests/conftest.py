"""Make `import backbone` and `import generate_data` work however pytest is started
(`python -m pytest tests` or plain `pytest` from the bundle folder), and run torch on one
thread: the tests' models are tiny, and on a busy laptop extra threads only wait for each other
(the two training tests took 33 s each with torch's default threads beside other work, for a
fraction of a CPU-second)."""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(1)
