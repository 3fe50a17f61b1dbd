import os
import sys

from .cli import main

status = main()
# Everything is written by now (results.json is closed; every worker process is gone), so end
# without the interpreter's teardown: with torch and matplotlib loaded it walks and frees every
# object they made, ~0.7 CPU-s of a ~10 CPU-s grading on Gradescope's 0.5 vCPU (bench/SPEED.md).
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
