"""Per-test class analytics (autograder/ta/analytics.py) on hand-made results: pass rates, causes,
suspect tests with their evidence, not-attempted tests, tests.csv, the page and its histograms."""

import csv
import io
import re

from PIL import Image

from autograder import results
from autograder.ta import analytics, batch
from grading import REFERENCE, TEMPLATE
from ta_documents import NUMBER, NUMBERS, document

TEMPLATE_HASH, REFERENCE_HASH = results.file_sha256(TEMPLATE), results.file_sha256(REFERENCE)
ZERO_INPUT = NUMBER["RMSNorm of an all-zero input is finite"]
FORWARD = NUMBER["RMSNorm output matches the definition (several shapes, eps and scale values)"]
CLIPPING = NUMBER["train_epoch clips the gradient norm to 1.0"]
KV_CACHE = [n for n in NUMBERS.values() if n.startswith("8.")][0]
INTERFACE = [n for n in NUMBERS.values() if n.startswith("1.")]
INFORMATIONAL = NUMBER["RotaryPositionalEmbedding: scores depend only on m - n, angles t * base^(-2i/dim) "
                       "(provided code, informational)"]


def submission(name, **made) -> batch.Submission:
    return batch.Submission(name, f"{name}.py", document=document(**made))


def by_number(found) -> dict:
    return {s.number: s for s in found}


def test_a_graded_test_the_untouched_template_passes_is_suspect(tmp_path):
    # the template passes interface (by design), a 0-point test and, here, the zero-input test
    fails = [n for n in NUMBERS.values() if n not in INTERFACE + [ZERO_INPUT, INFORMATIONAL]]
    found = by_number(analytics.analyze([submission("template", failed=fails, sha=TEMPLATE_HASH),
                                         submission("alice", sha="a"), submission("bob", sha="b")]))
    assert found[ZERO_INPUT].suspect
    assert found[ZERO_INPUT].evidence == ["passed by the untouched template (template)"]
    assert not any(found[n].suspect for n in INTERFACE + [INFORMATIONAL, FORWARD])


def test_failed_by_the_reference_a_known_correct_submission_or_by_chance_is_suspect():
    found = by_number(analytics.analyze(
        [submission("reference", failed=[FORWARD], sha=REFERENCE_HASH),
         submission("alternative", failed=[CLIPPING], sha="x"), submission("carol", sha="c")],
        correct={"alternative"}, unstable={ZERO_INPUT: {"carol"}}))
    assert found[FORWARD].evidence[0] == "failed by the reference solution (reference)"
    assert found[CLIPPING].evidence[0] == "failed by a submission known to be correct (alternative)"
    assert "differed between runs" in found[ZERO_INPUT].evidence[0] and "carol" in found[ZERO_INPUT].evidence[0]
    assert [n for n, s in found.items() if s.suspect] == sorted([FORWARD, ZERO_INPUT, CLIPPING])


def test_pass_rates_mean_points_and_the_most_common_cause():
    bug = "eps added outside the square root"
    found = by_number(analytics.analyze(
        [submission("a", failed=[FORWARD], causes={FORWARD: bug}), submission("b", failed=[FORWARD],
                                                                               causes={FORWARD: bug}),
         submission("c", failed=[FORWARD, ZERO_INPUT]), submission("d")]))
    forward = found[FORWARD]
    assert (forward.graded, forward.passed, forward.pass_rate) == (4, 1, 0.25)
    assert forward.mean_points == forward.points / 4
    assert (forward.cause, forward.cause_count) == (bug, 2)
    # c fails the zero-input test too, so only a and b fail FORWARD alone: weak evidence, no flag
    assert not forward.suspect and forward.evidence[0].startswith("2 of its 3 failures pass every other test")


def test_a_test_that_found_nothing_to_test_is_not_attempted_and_left_out_of_the_pass_rate():
    skipped = {KV_CACHE: {"attempted": False}}
    found = by_number(analytics.analyze([submission("a", failed=[KV_CACHE], extra=skipped),
                                         submission("b", extra=skipped), submission("c"),
                                         submission("d", failed=[KV_CACHE])]))
    kv = found[KV_CACHE]
    assert (kv.graded, kv.not_attempted, kv.passed, kv.pass_rate) == (2, 2, 1, 0.5)


def test_tests_csv_the_page_and_the_histograms(tmp_path):
    submissions = [submission("template", failed=[n for n in NUMBERS.values() if n not in INTERFACE + [ZERO_INPUT]],
                              sha=TEMPLATE_HASH), submission("alice", failed=[CLIPPING]), submission("bob")]
    found = analytics.write(submissions, str(tmp_path / "tests.csv"))
    rows = list(csv.DictReader(open(tmp_path / "tests.csv", newline="")))
    assert list(rows[0]) == analytics.HEADER and len(rows) == len(NUMBERS)
    row = next(r for r in rows if r["number"] == ZERO_INPUT)
    assert (row["suspect"], row["pass rate"], row["graded"]) == ("yes", "1.000", "3")
    assert "untouched template" in row["evidence"]
    analytics.write_pages(found, submissions, str(tmp_path))
    page = (tmp_path / "tests.html").read_text()
    assert "<b>1 suspect test</b>" in page and 'src="histograms.png"' in page
    image = Image.open(io.BytesIO((tmp_path / "histograms.png").read_bytes()))
    assert image.format == "PNG" and image.size[0] > 800


def test_a_test_not_attempted_is_no_failure_in_the_report(tmp_path):
    """A submission without a KV-cache did not fail the mastery tests: the report's failed count,
    its diagnoses and its clusters leave them out (results.attempted)."""
    from autograder.ta import html_report
    skipped = {KV_CACHE: {"attempted": False}}
    made = [submission("nocache", failed=[KV_CACHE], extra=skipped),
            submission("broken", failed=[KV_CACHE, CLIPPING])]
    index = open(html_report.build(made, str(tmp_path / "out"))).read()
    row = index[index.index(">nocache<"):].split("</tr>", 1)[0]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[-1] == "0", row  # the failed count
    diagnoses = index[index.index("Most common diagnoses"):index.index("Most common diagnoses") + 4000]
    assert "nocache" not in diagnoses and "broken" in diagnoses
