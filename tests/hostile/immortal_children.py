# Hostile: start detached processes (setsid, double fork) at import and from RMSNorm.forward, and
# detach the worker's own process, kept alive by a thread; each rewrites a heartbeat file in
# HOSTILE["shared"] every 50 ms, so any that outlives the grading shows.
import functools as _functools
import os as _os


def _immortal(tag):
    if _os.fork() == 0:
        _os.setsid()
        if _os.fork() == 0:
            beat = _os.path.join(HOSTILE["shared"], f"heartbeat-{tag}")
            _os.execvp("sh", ["sh", "-c", 'while :; do date +%s%N > "$0"; sleep 0.05; done',
                              beat, HOSTILE["marker"]])
        _os._exit(0)
    _os.wait()
    print(f"IMMORTAL-STARTED {tag}", flush=True)  # for a grading where HOSTILE["shared"] is out of reach


_immortal("import")
_honest_forward = RMSNorm.forward


@_functools.wraps(_honest_forward)
def _spawning_forward(self, x):
    if not getattr(_spawning_forward, "done", False):
        _spawning_forward.done = True
        _immortal(f"forward-{_os.getpid()}")
    return _honest_forward(self, x)


RMSNorm.forward = _spawning_forward

# The worker's own process, too: a session of its own and a thread that keeps it alive.
import threading as _threading
import time as _time


def _beat():
    while True:
        with open(_os.path.join(HOSTILE["shared"], "heartbeat-worker"), "w") as file:
            file.write(str(_time.time()))
        _time.sleep(0.05)


try:
    _os.setsid()
except OSError:  # already a session leader
    pass
_threading.Thread(target=_beat, daemon=False).start()
