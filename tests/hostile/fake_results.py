# Hostile: forge a perfect results.json wherever the grader may write it, at import and from a
# detached child that keeps forging after the worker is gone (as an inotify watcher would).
import glob as _glob
import json as _json
import os as _os
import time as _time

_FAKE = _json.dumps({"score": 100.0, "output": "FORGED-RESULTS", "tests": [
    {"name": "FORGED-RESULTS", "score": 100.0, "max_score": 100.0, "status": "passed"}]})


def _guesses():
    paths = {HOSTILE["results"], "/autograder/results/results.json", "/tmp/results.json",
             _os.path.join(_os.getcwd(), "results.json"),
             _os.path.join(_os.path.expanduser("~"), "results.json")}
    for cmdline in _glob.glob("/proc/[0-9]*/cmdline"):  # the grader's --results argument
        try:
            argv = open(cmdline, "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        paths.update(argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--results")
    return paths


def _forge(say=print):
    for path in _guesses():
        try:
            with open(path, "w") as file:
                file.write(_FAKE)
            say(f"FORGED {path}")
        except OSError as error:
            say(f"could not forge {path}: {error}")


_forge()
if _os.fork() == 0:
    _os.setsid()
    if _os.fork() == 0:
        for _ in range(600):  # 30 s
            _forge(say=lambda text: None)
            _time.sleep(0.05)
    _os._exit(0)
_os.wait()
