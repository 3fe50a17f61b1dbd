"""The autograder zip in a Gradescope-like container (scripts/gradescope_docker.sh): built as
Gradescope builds it (unpacked without file modes, setup.sh and its self-test as root), then the
reference and the template graded each in a fresh container under the default 0.5 CPU / 768 MB,
where Docker's seccomp profile refuses namespaces and the worker's own confinement must hold.

Slow (`pytest -m slow`): the image build alone took 4-5 min on a shared 2-core machine (load ~14),
the whole test 13 min at load ~40; it needs root and Docker and is skipped, with the reason,
where either is missing.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from grading import KIT, REFERENCE, TEMPLATE

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(KIT, "scripts", "gradescope_docker.sh")


def _unavailable() -> str:
    """Why this machine cannot run the rehearsal, or ""."""
    if os.geteuid() != 0:
        return "needs root (Docker and the image build)"
    if shutil.which("docker") is None:
        return "Docker is not installed (apt-get install -y docker.io debootstrap)"
    if shutil.which("dockerd") is None and subprocess.run(["docker", "info"], capture_output=True).returncode:
        return "no Docker daemon running or installed here"
    if shutil.which("debootstrap") is None and subprocess.run(
            ["docker", "image", "inspect", "gs-base"], capture_output=True).returncode:
        return "no gs-base image and no debootstrap to make one (apt-get install -y debootstrap)"
    return ""


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, os.path.join(KIT, "scripts", "package.py"), "--out", str(dist)],
                   check=True, capture_output=True, timeout=300)
    if subprocess.run(["docker", "image", "inspect", "gs-base"], capture_output=True).returncode:
        base = subprocess.run([SCRIPT, "base"], capture_output=True, text=True, timeout=1800)
        assert base.returncode == 0, base.stdout + base.stderr
    build = subprocess.run([SCRIPT, "build", str(dist / "autograder.zip")], capture_output=True,
                           text=True, timeout=3600)
    assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-3000:]
    assert "self-test: the reference scores 100 / 100" in build.stdout
    return build.stdout


def _grade(path: str, tmp_path) -> dict:
    out = tmp_path / "results.json"
    graded = subprocess.run([SCRIPT, "grade", path, str(out)], capture_output=True, text=True, timeout=900)
    assert out.exists(), graded.stdout + graded.stderr + (tmp_path / "results.json.stdout").read_text()[-3000:]
    return json.loads(out.read_text())


def test_reference_scores_100_and_template_5_in_the_container(image, tmp_path):
    (tmp_path / "reference").mkdir()
    (tmp_path / "template").mkdir()
    reference = _grade(REFERENCE, tmp_path / "reference")
    assert reference["score"] == 100, [t["output"][:300] for t in reference["tests"] if t["status"] != "passed"]
    isolation = "; ".join(reference["extra_data"]["isolation"])
    # what Docker's default profile leaves: no namespaces, so the worker's own seccomp filter
    assert "forked children killed with every process of" in isolation, isolation
    assert "network blocked by a seccomp filter" in isolation, isolation
    template = _grade(TEMPLATE, tmp_path / "template")
    assert template["score"] == 5, template["output"]
