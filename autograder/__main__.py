import gc
import os
import sys

# torch and pytest load ~1M objects that live until the end: the collector would walk them in
# three full collections while they load, and again in every later one (0.2 CPU-s measured,
# bench/SPEED.md). So no collection during the imports, and what they made is frozen out of
# the collector's reach.
gc.disable()
from .cli import main  # noqa: E402  (imported with the collector off)

gc.freeze()
gc.enable()
status = main()
# Everything is written by now (results.json is closed; every worker process is gone), so end
# without the interpreter's teardown: with torch and matplotlib loaded it walks and frees every
# object they made: 1.2-1.8 CPU-s of a ~10 CPU-s grading (measured, bench/SPEED.md).
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
