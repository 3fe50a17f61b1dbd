# Hostile: make every comparison a grader could run in this process succeed.
import builtins as _builtins

import torch as _torch
import torch.testing as _torch_testing

_torch.allclose = lambda *args, **kwargs: True
_torch.Tensor.allclose = lambda *args, **kwargs: True
_torch.equal = lambda *args, **kwargs: True
_torch.isclose = lambda a, b, *args, **kwargs: _torch.ones_like(_torch.as_tensor(a), dtype=_torch.bool)
_torch_testing.assert_close = lambda *args, **kwargs: None
_builtins.all = lambda *args, **kwargs: True
_builtins.any = lambda *args, **kwargs: True
_builtins.AssertionError = type("NeverRaised", (Exception,), {})
