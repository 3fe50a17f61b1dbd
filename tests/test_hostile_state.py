"""Hostile submissions that game the evidence with prediction or with state kept between
requests (issue 18): each must lose the category it games, graded like tests/test_hostile.py's."""

import re

from autograder import rubric
from grading import REFERENCE
from test_hostile import _read, grade, source, zero


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


def _causal_scores(graded) -> dict:
    return {t["name"]: t["score"] for t in graded.document["tests"] if t["tags"] == ["causal_mask"]}


def test_attention_that_remembers_rows_loses_causal_mask(tmp_path):
    """No mask, but every row computed for a prefix is answered again for the same prefix: copies
    of a sequence never differ within a process (it kept 20/20). The witness, run in another
    process, gets its own rows."""
    graded = grade(tmp_path, source(_read(REFERENCE), "memo_attention.py"), only=("causal_mask",))
    lost = [name for name, score in _causal_scores(graded).items()
            if score == 0 and "attends to itself" not in name]
    assert len(lost) == 4, graded.outputs("causal_mask")  # every test of the future, values and gradients
    assert "fresh worker process" in graded.outputs("causal_mask")


def test_mask_applied_only_while_autograd_records_loses_causal_mask(tmp_path):
    """Causal while autograd records, not under torch.no_grad() (it kept every module-level test,
    13/20): the probes also run under torch.no_grad() and torch.inference_mode()."""
    graded = grade(tmp_path, source(_read(REFERENCE), "grad_only_mask.py"), only=("causal_mask",))
    scores = _causal_scores(graded)
    assert scores[rubric.rule_for("test_causal_mask.py::test_attention_ignores_future_tokens").name] == 0
    assert "the mask is applied only while autograd records" in graded.outputs("causal_mask")
