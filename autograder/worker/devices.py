"""Run a submission that hard-codes CUDA on a grader without a GPU, with CUDA mapped to the CPU.

Students develop on the course's GPU machines, and correct code often names the device outright:
`torch.ones(T, T, device="cuda")`, `.cuda()`, `.to("cuda")`, `torch.device("cuda:0")`. On a
CPU-only grader such code raises ("Torch not compiled with CUDA enabled") although nothing is
wrong with it. The session (session.py) then retries the request once under CudaOnCpu, a
TorchFunctionMode that rewrites every CUDA device the code asks for into the CPU, and keeps it on
for the rest of the worker's life. Only after such an error: a submission that never asks for
CUDA pays nothing, and where torch.cuda.is_available() nothing is ever remapped.
"""

import torch
from torch.overrides import TorchFunctionMode

# What torch raises when code asks for CUDA where there is none: a CPU build of torch, a CUDA
# build without a driver, a driver without a GPU, or an accelerator call with none present.
CUDA_UNAVAILABLE = ("Torch not compiled with CUDA enabled", "Found no NVIDIA driver",
                    "No CUDA GPUs are available", "CUDA driver initialization failed",
                    "Cannot access accelerator device when none is available")

CPU = torch.device("cpu")


def wants_missing_cuda(error: BaseException) -> bool:
    """Whether `error` is code asking for CUDA on a machine that has none."""
    return (isinstance(error, (AssertionError, RuntimeError))
            and any(text in str(error) for text in CUDA_UNAVAILABLE)
            and not torch.cuda.is_available())


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0].strip() == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)  # device=0 is cuda:0


class CudaOnCpu(TorchFunctionMode):
    """Within the mode, `device=` arguments naming CUDA become the CPU, `tensor.to(cuda...)`
    moves to the CPU and `tensor.cuda()` returns the tensor (so nn.Module.to / .cuda, which
    call these on each parameter, work too). `remapped` collects the calls rewritten since it
    was last cleared, e.g. {"ones(device=cuda)", ".cuda()"}."""

    def __init__(self):
        super().__init__()
        self.remapped = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            self.remapped.add(".cuda()")
            return args[0]
        if _is_cuda(kwargs.get("device")):
            self.remapped.add(f"{getattr(func, '__name__', 'a call')}(device=cuda)")
            kwargs = dict(kwargs, device=CPU)
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            self.remapped.add(".to(cuda)")
            args = (args[0], CPU) + tuple(args[2:])
        return func(*args, **kwargs)

    def note(self) -> str:
        """What was remapped in this request, for the student; "" when nothing was."""
        if not self.remapped:
            return ""
        calls = ", ".join(f"`{call}`" for call in sorted(self.remapped))
        return (f"your code asks for a CUDA device ({calls}) and this grader has no GPU: CUDA "
                "was mapped to the CPU and your code was graded on the CPU (nothing to fix; "
                "`device = \"cuda\" if torch.cuda.is_available() else \"cpu\"` runs anywhere)")
