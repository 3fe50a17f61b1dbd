"""setup.sh (issue 10): torch is pinned to its CPU build, and where that build cannot be had the
install stops with a message that says what to do, instead of taking PyPI's CUDA build. (The
successful path, self-test included, is what CI's own `./setup.sh` run proves.)"""

import os
import re
import shutil
import subprocess
import sys

from grading import KIT


def test_requirements_pin_the_cpu_build_of_torch():
    with open(os.path.join(KIT, "requirements.txt")) as file:
        pins = [line.strip() for line in file if re.match(r"torch\b", line)]
    assert len(pins) == 1 and re.fullmatch(r"torch==\d+\.\d+\.\d+\+cpu", pins[0]), pins


def test_without_a_cpu_wheel_setup_stops_and_says_what_to_do(tmp_path):
    """An empty index stands in for an unreachable PyTorch CPU index, and no pip configuration
    adds a local wheel: nothing can satisfy the +cpu pin, so nothing is installed. An
    /autograder-like folder exists (as after a stray run on a TA's machine), but the kit is not
    its source/, so setup.sh stays in local mode."""
    for name in ("setup.sh", "requirements.txt"):
        shutil.copy2(os.path.join(KIT, name), tmp_path / name)
    (tmp_path / "autograder" / "source").mkdir(parents=True)
    (tmp_path / "empty-index").mkdir()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    # PIP_INDEX_URL too: a regression that asked PyPI for torch would download its CUDA build
    environment.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=(tmp_path / "empty-index").as_uri(),
                       SCRATCH1_AUTOGRADER_ROOT=str(tmp_path / "autograder"),
                       SCRATCH1_PYTHON=os.path.join(sys.base_prefix, "bin", "python3"),
                       SCRATCH1_TORCH_INDEX=(tmp_path / "empty-index").as_uri())
    completed = subprocess.run(["bash", str(tmp_path / "setup.sh")], cwd=tmp_path, env=environment,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "mode: local" in completed.stdout, completed.stdout
    message = completed.stderr
    assert "could not install torch==" in message and "+cpu" in message, message
    assert "CUDA build" in message and "PIP_FIND_LINKS" in message, message
    venv_python = tmp_path / ".venv" / "bin" / "python"
    probe = subprocess.run([str(venv_python), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0, "a torch was installed anyway"
    assert not (tmp_path / ".venv" / ".requirements.sha256").exists()
