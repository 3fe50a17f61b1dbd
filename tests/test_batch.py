"""Batch grading (autograder/ta/batch.py) and its HTML report, run the way a TA runs them."""

import csv
import html.parser
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest
from PIL import Image

from autograder import kit_version, results, rubric
from autograder.ta import batch
from grading import KIT, REFERENCE, TEMPLATE

# interface (always graded on Gradescope) and convergence (which draws the figures); the other
# categories would only add time here.
ONLY = ("interface", "convergence")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run_batch(folder, out, *extra, only=ONLY):
    command = [os.path.join(KIT, "run_autograder"), "--batch", str(folder), "--out", str(out), *extra]
    for category in only:
        command += ["--only", category]
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A class of five: the reference as a file, a zip and a folder, the template, a broken file."""
    folder = tmp_path_factory.mktemp("submissions")
    shutil.copy(REFERENCE, folder / "reference.py")
    shutil.copy(TEMPLATE, folder / "template.py")
    (folder / "broken.py").write_text("def oops(:\n")
    with zipfile.ZipFile(folder / "zipped.zip", "w") as archive:
        archive.write(REFERENCE, "repo/backbone.py")
    (folder / "in_a_folder" / "src").mkdir(parents=True)
    shutil.copy(REFERENCE, folder / "in_a_folder" / "src" / "backbone.py")
    out = tmp_path_factory.mktemp("out")
    completed = run_batch(folder, out)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder, out, completed


NAMES = {"reference", "template", "broken", "zipped", "in_a_folder"}
FULL = sum(r.weight for r in rubric.RULES if r.category in ONLY)


def test_every_submission_gets_valid_results(graded):
    _, out, completed = graded
    assert {p[:-5] for p in os.listdir(out / "results")} == NAMES
    scores = {}
    for name in NAMES:
        document = json.loads((out / "results" / f"{name}.json").read_text())
        scores[name] = document["score"]
        assert not [p for p in results.problems(document) if "sum to" not in p]  # only ONLY graded
        convergence = [t for t in document["tests"] if t["tags"] == ["convergence"]]
        if name in ("reference", "zipped", "in_a_folder"):
            # the Gradescope feedback embeds the figures, within Gradescope's output limit
            assert convergence[0]["output_format"] == "html"
            assert convergence[0]["output"].count('src="data:image/png;base64,') == 2
            assert len(convergence[0]["output"]) < 100_000
    assert scores["reference"] == scores["zipped"] == scores["in_a_folder"] == FULL
    assert scores["template"] < FULL and scores["broken"] < FULL
    assert "5/5 done" in completed.stderr and "ETA" in completed.stderr


def test_summary_has_a_row_per_submission_and_a_column_per_category_and_test(graded):
    _, out, _ = graded
    with open(out / "summary.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    numbering = results.numbers()
    header = list(rows[0])
    assert header[:3] == ["submission", "student", "total"]
    assert all(category in header for category in rubric.CATEGORIES)
    assert all(f"{numbering[r.test]} {r.name}" in header for r in rubric.RULES)
    by_name = {row["submission"]: row for row in rows}
    assert set(by_name) == NAMES
    assert float(by_name["reference"]["total"]) == FULL
    assert float(by_name["reference"]["convergence"]) == 15
    assert by_name["reference"]["2.1 " + rubric.RULES[4].name] == ""  # not graded in this run


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        self.targets += [value for key, value in attrs if key in ("href", "src")]


def test_report_pages_exist_and_every_link_resolves_inside_the_report(graded):
    _, out, _ = graded
    report = out / "report"
    pages = [report / "index.html"] + [report / "submissions" / n / "index.html" for n in NAMES - {"broken"}]
    for name in ("reference", "zipped", "in_a_folder"):
        assert (report / "submissions" / name / "loss_curve.png").stat().st_size > 1000
        assert (report / "submissions" / name / "attention_maps.png").stat().st_size > 1000
    for page in pages + [report / "submissions" / "broken" / "index.html"]:
        parser = Links()
        parser.feed(page.read_text())
        for target in parser.targets:
            assert "://" not in target and not target.startswith("/"), f"{page}: {target}"
            if target.startswith("#"):
                assert f'id="{target[1:]}"' in page.read_text(), f"{page}: no anchor {target}"
                continue
            path = (page.parent / target).resolve()
            assert path.is_file() and report.resolve() in path.parents, f"{page}: broken link {target}"
    index = (report / "index.html").read_text()
    assert all(f"submissions/{n}/index.html" in index for n in NAMES)
    assert "Most common diagnoses" in index and "fail the same tests" in index


def test_second_run_skips_graded_submissions_until_one_changes(graded):
    folder, out, _ = graded
    before = {p: p.stat().st_mtime for p in (out / "results").iterdir()}
    completed = run_batch(folder, out)
    assert "grading 0" in completed.stderr, completed.stderr
    assert {p: p.stat().st_mtime for p in (out / "results").iterdir()} == before
    os.utime(folder / "broken.py")  # a resubmission
    completed = run_batch(folder, out)
    assert "grading 1" in completed.stderr, completed.stderr


def test_regrade_grades_again(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.py").write_text("def oops(:\n")
    run_batch(tmp_path / "in", tmp_path / "out", only=("interface",))
    completed = run_batch(tmp_path / "in", tmp_path / "out", "--regrade", only=("interface",))
    assert "grading 1" in completed.stderr, completed.stderr  # up to date, and yet graded


def test_results_are_up_to_date_only_if_newer_complete_and_made_by_this_kit(tmp_path):
    submission = batch.Submission("one", str(tmp_path / "one.py"))
    (tmp_path / "one.py").write_text("")
    (tmp_path / "results").mkdir()
    assert not batch.up_to_date(submission, str(tmp_path), None)
    graded = {"tests": [{"tags": ["interface"]}, {"tags": ["rmsnorm"]}],
              "extra_data": {"kit": kit_version.fingerprint()}}
    (tmp_path / "results" / "one.json").write_text(json.dumps(graded))
    assert batch.up_to_date(submission, str(tmp_path), ["interface", "rmsnorm"])
    assert not batch.up_to_date(submission, str(tmp_path), ["interface", "rope"])
    assert not batch.up_to_date(submission, str(tmp_path), None)  # all categories
    for extra in ({"kit": "0123456789abcdef"}, {"kit": None},  # other grading code; before fingerprints
                  {"kit": kit_version.fingerprint(), "internal_error": "a check raised"}):
        (tmp_path / "results" / "one.json").write_text(json.dumps(dict(graded, extra_data=extra)))
        assert not batch.up_to_date(submission, str(tmp_path), ["interface"]), extra
    os.utime(tmp_path / "one.py", (time.time() + 5, time.time() + 5))  # resubmitted
    assert not batch.up_to_date(submission, str(tmp_path), ["interface"])


def _copy_of_the_kit(target):
    """What grading needs, copied, so a test can edit the kit without touching this checkout."""
    for name in ("autograder", "reference", "student"):
        shutil.copytree(os.path.join(KIT, name), target / name,
                        ignore=shutil.ignore_patterns("__pycache__", "data", "checkpoints", "images"))
    for name in ("run_autograder", "requirements.txt"):
        shutil.copy2(os.path.join(KIT, name), target / name)
    return target


def test_a_rubric_edit_regrades_the_batch_and_says_so(tmp_path):
    kit = _copy_of_the_kit(tmp_path / "kit")
    (tmp_path / "in").mkdir()
    shutil.copy(TEMPLATE, tmp_path / "in" / "template.py")
    out = tmp_path / "out"

    def run_copy(*extra):
        command = [str(kit / "run_autograder"), "--batch", str(tmp_path / "in"), "--out", str(out),
                   "--only", "interface", *extra]
        environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
        assert completed.returncode == 0, completed.stderr[-3000:]
        return completed.stderr

    assert "grading 1" in run_copy()
    unchanged = run_copy()
    assert "grading 0" in unchanged and "changed" not in unchanged
    rubric_file = kit / "autograder" / "rubric.py"
    title = '"backbone.py was submitted"'
    rubric_file.write_text(rubric_file.read_text().replace(title, '"backbone.py was handed in"'))
    stderr = run_copy()
    assert "grading 1" in stderr
    assert "1 of them were graded before the grading code or the rubric changed" in stderr, stderr
    document = json.loads((out / "results" / "template.json").read_text())
    assert "backbone.py was handed in" in [test["name"] for test in document["tests"]]


def test_a_grader_failure_stops_only_its_own_submission(tmp_path, monkeypatch):
    for name in ("crashes", "cannot_start", "fine"):
        shutil.copy(TEMPLATE, tmp_path / f"{name}.py")
    real = batch.grade_one

    def grade_one(submission, out, only):
        if submission.name == "cannot_start":
            raise OSError("simulated")
        # an unknown category makes the grader process exit with an error and no results
        real(submission, out, ["no_such_category"] if submission.name == "crashes" else ["interface"])

    monkeypatch.setattr(batch, "grade_one", grade_one)
    out = tmp_path / "out"
    assert batch.run(str(tmp_path), str(out), jobs=2) == 1
    with open(out / "summary.csv", newline="") as file:
        rows = {row["submission"]: row for row in csv.DictReader(file)}
    assert float(rows["fine"]["total"]) == 5 and not rows["fine"]["error"]
    assert "exit 2" in rows["crashes"]["error"] and rows["crashes"]["total"] == ""
    assert "simulated" in rows["cannot_start"]["error"]
    assert "Not graded" in (out / "report" / "index.html").read_text()


METADATA = """\
---
:submission_101:
  :submitters:
  - :name: Ada Lovelace
    :sid: '1'
    :email: ada@example.edu
  :created_at: 2025-01-01 12:00:00.000000000 -08:00
  :score: 0.0
  :history: []
submission_202:
  :submitters:
  - :name: "Alan Turing"
  - :name: Grace Hopper
  :status: processed
"""


def test_gradescope_export_layout_names_students(tmp_path):
    (tmp_path / "submission_metadata.yml").write_text(METADATA)
    for ident in ("101", "202", "303"):
        (tmp_path / f"submission_{ident}").mkdir()
    found = {s.name: s.student for s in batch.find(str(tmp_path), str(tmp_path / "out"))}
    assert found == {"submission_101": "Ada Lovelace", "submission_202": "Alan Turing, Grace Hopper",
                     "submission_303": ""}


def _screenshot(page, png, profile):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
               f"--screenshot={png}", "--window-size=1280,1600", page.as_uri()]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert png.exists(), completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if "CONSOLE" in line or "ERR_FILE" in line]
    assert not errors, errors
    return Image.open(png).convert("RGB")


def _has_colour(image, colour, tolerance=6) -> bool:
    return any(all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))
               for _, pixel in image.getcolors(maxcolors=1 << 20))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(graded, tmp_path):
    _, out, _ = graded
    index = _screenshot(out / "report" / "index.html", tmp_path / "index.png", tmp_path / "profile")
    page = _screenshot(out / "report" / "submissions" / "reference" / "index.html",
                       tmp_path / "reference.png", tmp_path / "profile")
    assert index.size == page.size == (1280, 1600)
    # the images really loaded: the histogram, the loss curve (matplotlib's C0 in both) and the
    # attention maps
    assert _has_colour(index, (31, 119, 180))
    assert _has_colour(page, (31, 119, 180))
    assert _has_colour(page, (68, 1, 84))  # viridis at 0, the attention maps


def test_figures_embed_in_gradescope_output_or_degrade_to_text():
    entry = results.test_entry(rubric.rule_for(results.FIGURES_TEST), "7.1", 1.0, "loss <0.5> & fine")
    small = results.with_figures(entry, {"loss_curve.png": b"\x89PNG" + bytes(1000)}, "loss curve: 5.5 -> 0.4")
    assert small["output_format"] == "html" and small["output"].count("<img") == 1
    assert "&lt;0.5&gt; &amp;" in small["output"] and results.plain_output(small) == entry["output"]
    assert not [p for p in results.problems(results.document([small], "", 0.0)) if "output_format" in p]
    huge = results.with_figures(entry, {"loss_curve.png": bytes(results.FIGURE_CHARS)}, "loss curve: 5.5 -> 0.4")
    assert huge.get("output_format", "text") == "text"
    assert huge["output"] == "loss <0.5> & fine\nloss curve: 5.5 -> 0.4"


def test_figures_survive_garbage_from_the_worker():
    import torch

    from autograder import figures
    garbage = {"loss": {"step_losses": ["x", None, float("nan"), 3.0, True], "epoch_losses": "no"},
               "attention": {"weights": torch.ones(1000, 1000, 2, 2), "source": ["?"]}}
    images, problems = figures.draw(garbage, small=True)
    assert list(images) == ["loss_curve.png"] and problems[0].startswith("attention_maps.png")
    assert figures.draw({"loss": None, "attention": {"weights": "no"}})[0] == {}
    assert figures.describe(garbage) == "loss curve: 3.00 -> 3.00 over 5 steps"


def test_diagnosis_masks_numbers_only_when_grouping():
    from autograder.ta import html_report

    message = "the model's logits at position 3 changed (max |delta| 0.21) when token 7 was perturbed"
    assert html_report.diagnosis(message) == message
    assert html_report.diagnosis(message, grouping=True) == (
        "the model's logits at position # changed (max |delta| #) when token # was perturbed")
