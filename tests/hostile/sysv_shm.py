# System V shared memory, made in RMSNorm.forward and left behind on purpose: a segment outlives
# every process and counts against no limit of the worker's (issue 22's tester filled the host's
# memory this way). HOSTILE["key"] names it, so the test can look for it afterwards.
import ctypes as _ctypes
import functools as _functools

_honest_rmsnorm = RMSNorm.forward


@_functools.wraps(_honest_rmsnorm)
def _forward_leaving_shared_memory(self, x):
    libc = _ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = _ctypes.c_void_p
    segment = libc.shmget(HOSTILE["key"], 16 * 2**20, 0o1600)  # IPC_CREAT | 0600
    if segment >= 0:
        address = libc.shmat(segment, None, 0)
        if address not in (None, _ctypes.c_void_p(-1).value):
            _ctypes.memset(address, 1, 16 * 2**20)
            libc.shmdt(_ctypes.c_void_p(address))
    return _honest_rmsnorm(self, x)


RMSNorm.forward = _forward_leaving_shared_memory
