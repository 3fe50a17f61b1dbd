"""The student's training script (`python backbone.py`, the reference's main()) on a small
dataset: checkpoints every N steps, Ctrl-C saves and resumes mid-epoch with the same loss
history as an uninterrupted run, and a fresh run or a resume is explicit."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from grading import KIT, REFERENCE

STEPS = 9  # 80 trajectories, 90% for training, batches of 8
RUN = ["--data", "small.pkl", "--batch-size", "8", "--save-every", "4"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A student's folder: backbone.py (solved), generate_data.py and a small dataset."""
    path = tmp_path_factory.mktemp("student")
    shutil.copy(REFERENCE, path / "backbone.py")
    shutil.copy(os.path.join(KIT, "student", "generate_data.py"), path)
    subprocess.run([sys.executable, "generate_data.py", "--num_trajectories", "80", "--output",
                    "small.pkl"], cwd=path, check=True, capture_output=True)
    return path


def _train(folder, *args):
    return subprocess.run([sys.executable, "backbone.py", *RUN, *args], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def _interrupt(folder, signum, after_step: int, *args):
    """Start a run and send `signum` once the first epoch's progress line shows `after_step`."""
    process = subprocess.Popen([sys.executable, "backbone.py", *RUN, *args], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    while f" {after_step}/{STEPS} ".encode() not in seen:
        chunk = os.read(process.stdout.fileno(), 4096)
        assert chunk, f"the run ended before step {after_step}:\n{seen.decode()[-2000:]}"
        seen += chunk
    process.send_signal(signum)
    rest, _ = process.communicate(timeout=300)
    return process.returncode, (seen + rest).decode().replace("\r", "\n")


def _history(folder, checkpoints):
    with open(folder / checkpoints / "loss_history.json") as file:
        return json.load(file)


def test_ctrl_c_saves_and_resume_continues_with_the_same_loss_history(folder):
    """Also the way the README tells students to work: Ctrl-C, --resume, then visualize.py,
    which reads checkpoints/last.pt by default (test_visualize_* below: before an epoch ends)."""
    done = _train(folder, "--epochs", "2", "--checkpoints", "straight")
    assert done.returncode == 0, done.stderr
    code, output = _interrupt(folder, signal.SIGINT, 3, "--epochs", "2", "--checkpoints", "checkpoints")
    assert code == 130 and "Traceback" not in output, output
    saved = re.search(r"saved \S+ at epoch 1, step (\d+): continue with `python backbone.py --resume`", output)
    assert saved and int(saved[1]) in (3, 4), output  # the step under way when Ctrl-C came is finished
    resumed = _train(folder, "--epochs", "2", "--checkpoints", "checkpoints", "--resume")
    assert resumed.returncode == 0 and f"resuming checkpoints/last.pt: epoch 1, step {saved[1]}" in resumed.stdout
    _assert_visualize(folder, r"loss_curve\.png: validation loss \d\.\d+ after 2 epochs")
    straight, stopped = _history(folder, "straight"), _history(folder, "checkpoints")
    assert len(straight["steps"]) == 2 * STEPS
    assert stopped["steps"] == straight["steps"]
    assert stopped["epochs"][0]["train_loss"] == pytest.approx(straight["epochs"][0]["train_loss"], rel=1e-12)


def test_a_checkpoint_is_written_every_n_steps(folder):
    code, _ = _interrupt(folder, signal.SIGKILL, 6, "--epochs", "1", "--checkpoints", "killed")
    assert code == -signal.SIGKILL
    import torch
    state = torch.load(folder / "killed" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 4)
    assert not list((folder / "killed").glob("epoch_*.pt"))


def test_fresh_run_and_resume_are_explicit_and_epoch_files_are_small(folder):
    assert _train(folder, "--epochs", "1", "--checkpoints", "explicit").returncode == 0
    again = _train(folder, "--epochs", "1", "--checkpoints", "explicit")
    assert "starting a fresh run" in again.stdout and "--resume" in again.stdout
    finished = _train(folder, "--epochs", "1", "--checkpoints", "explicit", "--resume")
    assert finished.returncode == 0 and "already finished its 1 epochs" in finished.stdout
    (folder / "backbone.py").write_text((folder / "backbone.py").read_text() + "\n# edited\n")
    changed = _train(folder, "--epochs", "2", "--checkpoints", "explicit", "--resume")
    assert "backbone.py changed since this checkpoint" in changed.stdout
    last = os.path.getsize(folder / "explicit" / "last.pt")
    epoch = os.path.getsize(folder / "explicit" / "epoch_1.pt")
    assert epoch < last / 2, "epoch_N.pt should hold the weights only, not the optimizer state"



def _assert_visualize(folder, loss_curve: str):
    """visualize.py with its defaults (checkpoints/last.pt) on the small dataset writes the three
    figures, the loss curve as `loss_curve` (a pattern of its printed line) says."""
    shutil.copy(os.path.join(KIT, "student", "visualize.py"), folder)
    images = folder / "images"
    shutil.rmtree(images, ignore_errors=True)
    run = subprocess.run([sys.executable, "visualize.py", "--data", "small.pkl", "--audit", "--audit-batches", "1",
                          "--audit-sequences", "4"], cwd=folder, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert re.search(loss_curve, run.stdout) and "checkpoints/last.pt (epoch " in run.stdout, run.stdout
    assert re.search(r"causal audit: 1 training batches .* about \d+ s", run.stdout), run.stdout
    for name in ("loss_curve.png", "attention_maps.png", "causal_audit.png"):
        assert (images / name).stat().st_size > 10_000, name


@pytest.fixture
def visualize(folder, monkeypatch):
    """student/visualize.py imported as a student runs it (backbone.py beside it)."""
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.syspath_prepend(os.path.join(KIT, "student"))
    for name in ("visualize", "backbone", "generate_data"):
        sys.modules.pop(name, None)
    import visualize
    yield visualize
    for name in ("visualize", "backbone", "generate_data"):
        sys.modules.pop(name, None)


def test_visualize_finds_last_pt_and_draws_the_steps_before_an_epoch_ends(visualize, tmp_path, capsys):
    """After Ctrl-C in the first epoch there is checkpoints/last.pt and a step history, no
    epoch_N.pt and no finished epoch: the default checkpoint and the loss curve still exist."""
    (tmp_path / "last.pt").write_bytes(b"")
    assert visualize.default_checkpoint(str(tmp_path)) == str(tmp_path / "last.pt")
    history = tmp_path / "loss_history.json"
    history.write_text(json.dumps({"epochs": [], "steps": [[0, step, 5.0 - 0.03 * step] for step in range(114)]}))
    visualize.plot_loss_curve(str(history), str(tmp_path / "loss_curve.png"))
    assert "loss_curve.png: 114 steps, no finished epoch yet" in capsys.readouterr().out
    assert (tmp_path / "loss_curve.png").stat().st_size > 10_000
    with pytest.raises(SystemExit, match="train first"):
        visualize.default_checkpoint(str(tmp_path / "empty"))
