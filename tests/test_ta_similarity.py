"""Similarity across a class (autograder/ta/similarity.py), measured on the kit's own correct
versions: no correct pair is flagged for being correct, two copies of one file are the top pair."""

import html
import os
import re
import shutil
import sys

import pytest

from autograder.ta import batch, similarity
from grading import REFERENCE, TEMPLATE
import variants

pytest.importorskip("copydetect", reason="a TA-only extra: pip install -r requirements-ta.txt")

CORRECT = [v for v in variants.ALTERNATIVES + variants.API_VARIANTS if not v.loses]
ONE_STUDENT = ("attention_einsum_float64_neg1e9", "rmsnorm_float64_norm", "training_token_weighted_mean")


def own_version() -> str:
    """A student's own mix of three alternatives: code of their own, handed in twice below."""
    by_name = {v.name: v for v in CORRECT}
    with open(REFERENCE) as file:
        text = file.read()
    for name in ONE_STUDENT:
        for old, new in by_name[name].edits:
            text = text.replace(old, new)
    return text


def write_class(folder, versions) -> list:
    """The versions {name: source} as submissions, each with a (dummy) graded document."""
    os.makedirs(folder, exist_ok=True)
    for name, source in versions.items():
        (folder / f"{name}.py").write_text(source)
    return [batch.Submission(name, str(folder / f"{name}.py"), document={"tests": []}) for name in sorted(versions)]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    versions = {v.name: v.source() for v in CORRECT}
    versions["reference"] = open(REFERENCE).read()
    versions["template"] = open(TEMPLATE).read()
    versions["copy_a"] = versions["copy_b"] = own_version()
    return similarity.measure(write_class(tmp_path_factory.mktemp("class"), versions))


def test_two_copies_are_the_top_pair_and_no_correct_pair_is_flagged_for_being_correct(measured):
    top = measured.pairs[0]
    assert {top.first.name, top.second.name} == {"copy_a", "copy_b"} and top.similarity == 1.0
    flagged = [(p.first.name, p.second.name, round(p.similarity, 2)) for p in measured.pairs if p.flagged]
    assert flagged == [("copy_a", "copy_b", 1.0)]
    # every other pair, however correct, stays clearly below the flag
    assert max(p.similarity for p in measured.pairs[1:]) < similarity.FLAGGED - 0.05


def test_the_template_shares_nothing_and_the_reference_share_is_reported(measured):
    assert not any("template" in (p.first.name, p.second.name) for p in measured.pairs)
    assert measured.reference_share["reference"] == pytest.approx(1.0)
    assert measured.reference_share["template"] == 0.0
    assert measured.reference_share["copy_a"] < 0.9  # a third of it is the student's own


def test_without_the_reference_as_boilerplate_most_correct_pairs_would_be_flagged(tmp_path, monkeypatch):
    """Why the reference is excluded: correct versions share its structure."""
    versions = {v.name: v.source() for v in CORRECT if v.core}
    versions["reference"] = open(REFERENCE).read()
    submissions = write_class(tmp_path / "class", versions)
    assert not any(p.flagged for p in similarity.measure(submissions).pairs)
    monkeypatch.setattr(similarity, "REFERENCE", TEMPLATE)  # the template alone excluded
    pairs = similarity.measure(submissions).pairs
    assert len(pairs) == len(versions) * (len(versions) - 1) // 2  # every pair shares code
    assert sum(p.flagged for p in pairs) >= len(pairs) / 2


def test_the_pages_show_the_pairs_and_the_shared_regions_side_by_side(measured, tmp_path):
    similarity.write_pages(measured, str(tmp_path), shown=3)
    similarity.write(measured, str(tmp_path / "similarity.csv"))
    index = (tmp_path / "similarity.html").read_text()
    assert "1 flagged pair" in index and "pairs/copy_a--copy_b.html" in index
    pair = (tmp_path / "pairs" / "copy_a--copy_b.html").read_text()
    assert pair.count("class=sidebyside") == 1 and "<mark>" in pair and "einsum" in pair
    # the marked code is the file's own, line for line
    code = measured.codes["copy_a"]
    first = pair.split("class=sidebyside")[1].split("</pre>")[0]
    numbered = re.findall(r"<span class=line><span class=ln>(\d+)</span>(.*?)</span>", first)
    assert len(numbered) > 20 and all(code.splitlines()[int(number) - 1] == html.unescape(re.sub("</?mark>", "", text))
                                      for number, text in numbered)
    lines = (tmp_path / "similarity.csv").read_text().splitlines()
    assert lines[0].split(",") == similarity.HEADER and lines[1].startswith("copy_a,copy_b,1.000,")


def test_without_copydetect_the_batch_still_reports_and_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "copydetect", None)  # import copydetect raises ImportError
    shutil.copy(REFERENCE, tmp_path / "one.py")
    found = similarity.measure([batch.Submission("one", str(tmp_path / "one.py"), document={"tests": []})])
    assert found.pairs == [] and "pip install -r requirements-ta.txt" in found.missing
    similarity.write_pages(found, str(tmp_path))
    assert "requirements-ta.txt" in (tmp_path / "similarity.html").read_text()
