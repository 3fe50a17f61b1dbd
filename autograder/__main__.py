import gc
import os
import sys

# torch and pytest load ~1M objects that live until the end: the collector would walk them in
# three full collections while they load, and again in every later one (0.2 CPU-s measured,
# bench/SPEED.md). So no collection during the imports, and what they made is frozen out of
# the collector's reach.
gc.disable()
from .environment import REQUIRED, advice, missing  # noqa: E402  (the standard library only)

if missing():
    print(advice(f"no module {', '.join(missing())}"), file=sys.stderr)
    sys.exit(2)
try:
    from .cli import main  # noqa: E402  (imported with the collector off)
except ImportError as error:  # an installed package that cannot load (a broken or wrong build)
    if (error.name or "").partition(".")[0] not in REQUIRED:
        raise
    print(advice(f"{error.name} cannot be imported ({error})"), file=sys.stderr)
    sys.exit(2)

gc.freeze()
gc.enable()
status = main()
# Everything is written by now (results.json is closed; every worker process is gone), so end
# without the interpreter's teardown: with torch and matplotlib loaded it walks and frees every
# object they made: 1.2-1.8 CPU-s of a ~10 CPU-s grading (measured, bench/SPEED.md).
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
