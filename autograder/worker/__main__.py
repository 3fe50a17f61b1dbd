"""Entry point of the worker process: `python -I -B <sandbox>/worker/__main__.py`.

The sandbox holds `worker/` (this package), `submission/` (the student's backbone.py beside the
kit's generate_data.py) and `work/` (the empty working directory). The grader talks to us over
our stdin/stdout with the frames of protocol.py; everything the student's code prints goes to
stderr, which the grader captures and truncates.
"""

import gc
import os
import sys


def _redirect_student_output():
    """Keep private copies of stdin/stdout for frames; point fd 0 at /dev/null and fd 1 at fd 2."""
    frames_in = os.fdopen(os.dup(0), "rb")
    frames_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return frames_in, frames_out


if __name__ == "__main__":
    gc.disable()  # while torch loads; serve() freezes what it loaded and turns the collector on
    sandbox = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [os.path.join(sandbox, "submission"), sandbox]
    # Issue 22, network and view without namespaces: the worker confines itself while it is
    # still one thread running only the kit's code (worker/confine/).
    from worker import confine
    confine.install(sandbox)
    frames_in, frames_out = _redirect_student_output()
    from worker.session import serve

    serve(frames_in, frames_out)
