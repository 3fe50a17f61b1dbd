"""The requests the worker answers, one module per component of the student's file.

Each op builds the student's object the template's way (through worker/adapt/), runs it on the
inputs the grader sent, and returns raw tensors. Judging happens on the trusted side.
"""

from . import attention, convergence, figures, rmsnorm, rope, training  # noqa: F401  (registers the ops)
from . import causality  # noqa: F401  (the causal checks' ops)
from . import generation  # noqa: F401  (the mastery checks' ops)
