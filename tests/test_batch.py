"""Batch grading (autograder/ta/batch.py) and its HTML report, run the way a TA runs them."""

import csv
import html.parser
import json
import os
import re
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
    assert "5 up to date, nothing to grade (use --regrade)" in completed.stderr, completed.stderr
    assert "grading" not in completed.stderr and "ETA" not in completed.stderr, completed.stderr
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
    assert "1 up to date, nothing to grade" in unchanged and "changed" not in unchanged
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


CHROMIUM_OPTIONS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _screenshot(page, png, profile, height=1600):
    command = [CHROMIUM, *CHROMIUM_OPTIONS, f"--user-data-dir={profile}", "--enable-logging=stderr",
               f"--screenshot={png}", f"--window-size=1280,{height}", page.as_uri()]
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
    # the first screen of the index holds the submissions table: its links, in the browser's blue
    first = _screenshot(out / "report" / "index.html", tmp_path / "first.png", tmp_path / "profile", 900)
    assert _has_colour(first.crop((0, 0, 400, 900)), (0, 0, 238), tolerance=0)


def _sorted_names(index, profile, clicks: int) -> list:
    """The submissions table's names after `clicks` clicks on its "total" header, as Chromium
    runs the report's own script."""
    page = index.parent / f"clicked{clicks}.html"
    click = "document.querySelector('table.sortable').tHead.rows[0].cells[1].click();" * clicks
    page.write_text(index.read_text().replace("</body>", f"<script>{click}</script></body>"))
    try:
        dump = subprocess.run([CHROMIUM, *CHROMIUM_OPTIONS, f"--user-data-dir={profile}", "--dump-dom",
                               page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    finally:
        page.unlink()
    table = _between(dump, '<table class="sortable">', "</table>")
    return re.findall(r'href="submissions/([^/"]+)/index.html"', table)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_clicking_a_header_sorts_the_submissions_table(graded, tmp_path):
    _, out, _ = graded
    scores = {name: json.loads((out / "results" / f"{name}.json").read_text())["score"] for name in NAMES}
    index = out / "report" / "index.html"
    assert _sorted_names(index, tmp_path / "profile", 0) == sorted(NAMES)
    once = _sorted_names(index, tmp_path / "profile", 1)  # a number column: highest first
    assert sorted(once) == sorted(NAMES) and [scores[n] for n in once] == sorted(scores.values(), reverse=True)
    twice = _sorted_names(index, tmp_path / "profile", 2)
    assert [scores[n] for n in twice] == sorted(scores.values())


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


def test_a_finished_batch_prints_a_table_of_scores(graded):
    _, out, completed = graded
    lines = completed.stdout.splitlines()
    header = next(line for line in lines if line.startswith("submission"))
    assert header.split() == ["submission", "total", *ONLY], completed.stdout
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1:] if line.strip()}
    assert set(rows) == NAMES, completed.stdout
    for name in ("reference", "zipped", "in_a_folder"):
        assert rows[name] == [f"{FULL:g}", "5", "15"], completed.stdout
    template = json.loads((out / "results" / "template.json").read_text())
    assert rows["template"][0] == f"{template['score']:g}"


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


def test_report_reads_top_down_and_each_page_shows_the_code(graded):
    _, out, _ = graded
    report = out / "report"
    index = (report / "index.html").read_text()
    # the submissions table first, then the histogram, the failures, the environment once
    assert index.index("<h2>Submissions</h2>") < index.index("histogram.png") < index.index("Most common diagnoses")
    assert "<table class=sortable>" in index and "<script>" in index and "<script src" not in index
    table = _between(index, "<table class=sortable>", "</table>")
    assert all(f'<a class=name href="submissions/{n}/index.html">{n}</a>' in table for n in NAMES)
    document = json.loads((report.parent / "results" / "template.json").read_text())
    isolation = document["extra_data"]["isolation"]
    assert isolation and index.count(html.escape(isolation[0])) == 1
    for name in NAMES:
        page = (report / "submissions" / name / "index.html").read_text()
        assert html.escape(isolation[0]) not in page, name  # once per batch, not on every page
        assert 'id="L1"' in page and 'href="#code"' in page, name
    template = (report / "submissions" / "template" / "index.html").read_text()
    code = _between(template, "<pre class=code>", "</pre>")
    with open(TEMPLATE) as file:
        source = file.read()
    assert code.count('class="line') == len(source.splitlines())
    assert "-&gt; torch.Tensor" in code and "-> torch.Tensor" not in code  # escaped
    # the line a message names is linked and marked in the code
    broken = (report / "submissions" / "broken" / "index.html").read_text()
    assert 'line <a href="#L1">1</a>' in broken and '<span class="line named" id="L1">' in broken


def test_students_read_a_plain_summary_and_the_ta_gets_the_environment(graded):
    _, out, _ = graded
    document = json.loads((out / "results" / "reference.json").read_text())
    assert "Isolation:" not in document["output"] and "preflight" not in document["output"]
    assert "Your code ran with Python " in document["output"], document["output"]
    extra = document["extra_data"]
    assert any("memory limit" in p for p in extra["isolation"]), extra
    assert extra["worker"]["python"] and extra["worker"]["torch"], extra
    imports = next(t for t in document["tests"] if t["name"] == "backbone.py imports")
    seconds = float(imports["output"].split("imported in ")[1].split(" s")[0])
    assert seconds > 0, imports["output"]  # as measured: "0.034 s", never "0.0 s"


def _fixture_document(tests: dict, numbering: dict) -> dict:
    """results.json for the rubric's tests, the ones in `tests` ({test: verdicts}) failed."""
    entries = []
    for rule in rubric.RULES:
        failures = tests.get(rule.test, [])
        entries.append(results.test_entry(rule, numbering[rule.test], 0.0 if failures else 1.0,
                                          "\n".join(v.text() for v in failures), 0.1,
                                          {"verdicts": [v.as_dict() for v in failures]}))
    document = results.document(entries, "Score of the tests shown now: ...", 1.0)
    document["extra_data"] = {"isolation": ["a protection of the fixture", "another one"],
                              "worker": {"python": "3.10.12", "torch": "2.13.0+cpu", "grader_python": "3.10.12"}}
    return document


def test_report_groups_failures_by_their_verdicts_without_masking(tmp_path):
    """Hand-made results: a cause shared by two submissions in two tests is one row, code in it
    is shown as written (no number masking), a failure without a cause is grouped by its kind
    and its submissions, and its measurement is shown whole."""
    from autograder.ta import html_report
    from autograder.verdict import KINDS, Verdict

    numbering = results.numbers()
    shift, mean_loss = "test_training.py::test_next_token_targets", "test_training.py::test_returns_mean_batch_loss"
    rmsnorm = "test_rmsnorm.py::test_forward_matches_reference"
    assert {shift, mean_loss, rmsnorm} <= {rule.test for rule in rubric.RULES}
    cause = "the targets are actions[:, :-1], the inputs shifted the wrong way"

    def training(loss):
        return {test: [Verdict(measured="train_epoch's loss on batch 1", found=f"{loss}",
                               expected="0.25", cause=cause)] for test in (shift, mean_loss)}
    measured = ("RMSNorm(dim=8, eps=0.01) on input (3, 2, 7, 8): max abs error 2.93 at index (0, 1, 5, 6) "
                "(value 4.9103, expected 1.9844); expected within atol 1e-05 + rtol 1e-05 * |expected|")
    raised = Verdict(measured="RMSNorm raised ValueError: bad (backbone.py line 3, in forward)", kind="raised")
    documents = {"alice": training(0.51), "bob": training(0.73),
                 "carol_with_a_long_name": {rmsnorm: [Verdict(measured=measured)],
                                            "test_rmsnorm.py::test_zero_input_is_finite": [raised]}}
    submissions = []
    for name, failures in documents.items():
        (tmp_path / f"{name}.py").write_text("import torch\n\nraise ValueError('bad')\n")
        submissions.append(batch.Submission(name, str(tmp_path / f"{name}.py"),
                                            student="Maximiliane Oberhauser-Winterbottom" if name == "bob" else "",
                                            document=_fixture_document(failures, numbering)))
    index = open(html_report.build(submissions, str(tmp_path / "out"))).read()
    failures = _between(index, "Most common diagnoses", "</table>")
    assert failures.count(f"<b>{cause}</b>") == 1 and ":#]" not in index and "#." not in failures
    row = _between(failures, f"<b>{cause}</b>", "</tr>")
    assert f"{numbering[shift]}, {numbering[mean_loss]}" in row and "alice" in row and "bob" in row
    assert failures.count(html.escape(KINDS["mismatch"])) == 1 and html.escape(measured) in failures  # whole
    assert "\u2026" not in index and "..." not in failures
    assert index.count("a protection of the fixture") == 1
    assert "Maximiliane Oberhauser-Winterbottom" in index and "a.name { white-space: nowrap; }" in index
    carol = (tmp_path / "out" / "report" / "submissions" / "carol_with_a_long_name" / "index.html").read_text()
    assert 'line <a href="#L3">3</a>' in carol and '<span class="line named" id="L3">' in carol
    assert "a protection of the fixture" not in carol
