"""Hostile submissions that game the evidence with prediction or with state kept between
requests (issue 18): each must lose the category it games, graded like tests/test_hostile.py's."""

import re

from autograder import rubric
from grading import REFERENCE
from test_hostile import QUICK, _read, grade, source, zero


def test_regenerating_the_heldout_data_earns_no_convergence_points(tmp_path):
    """An untrained model that searches generate_data.py's seeds for the held-out set from the
    first prefixes (a rubric seed was found in under a second, and every later prefix answered
    exactly: 15/15) finds nothing: each grading draws its data from a 128-bit secret."""
    graded = grade(tmp_path, source(_read(REFERENCE), "seed_search.py"), only=("convergence",))
    zero(graded, "convergence")
    output = graded.outputs("convergence")
    held_out = float(re.search(r"held-out next-token loss ([\d.]+)", output).group(1))
    assert held_out > 4.0, output[:500]  # untrained: about chance, ln(256) = 5.5
    assert re.fullmatch(r"[0-9a-f]{32}", graded.document["extra_data"]["grading_seed"])
    assert graded.seconds < QUICK
