"""A lazy stand-in for `torch._dynamo`, the compiler front end, which the worker never needs.

torch.optim imports torch._dynamo on an optimizer's first step() or zero_grad(), only to call
`graph_break()` and `disable(fn)`, which do nothing outside torch.compile. That import loads
~800 modules (sympy, torch.fx): ~1.4 CPU-s and ~70 MB in every worker, as much as all the
module-level checks together. The worker runs eagerly, so those two are given here as what they
are in eager mode; anything else (a submission calling torch.compile, say) imports the real
module first, so a submission sees the same torch, at most later.
"""

import importlib
import sys
import types

import torch

NAME = "torch._dynamo"


class _EagerDynamo(types.ModuleType):
    @staticmethod
    def graph_break(*_args, **_kwargs) -> None:
        """Marks a tracing boundary for torch.compile: nothing to do when running eagerly."""

    @staticmethod
    def disable(fn=None, recursive=True, **_kwargs):
        """Excludes fn from compilation: eagerly, fn itself (or a decorator returning it)."""
        return fn if fn is not None else (lambda function: function)

    def __getattr__(self, name: str):
        # Also reached for __path__, when a submodule such as torch._dynamo.config is imported.
        return getattr(_real(), name)


def _real() -> types.ModuleType:
    if isinstance(sys.modules.get(NAME), _EagerDynamo):
        del sys.modules[NAME]
    module = importlib.import_module(NAME)
    torch._dynamo = module
    return module


def install() -> None:
    """Put the stand-in in place, unless the real module is loaded already."""
    if NAME not in sys.modules:
        stand_in = _EagerDynamo(NAME, __doc__)
        sys.modules[NAME] = stand_in
        torch._dynamo = stand_in
