"""--engine ray (autograder/ta/batch_ray.py) against the local pool, on a local Ray cluster started
with `ray start --head`, the way a TA starts one (needs requirements-ray.txt; .ci/run installs it)."""

import csv
import glob
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from autograder import kit_version
from autograder.ta import batch, batch_ray
from grading import KIT, REFERENCE, TEMPLATE
from variants import MUTANTS

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is an optional extra: pip install -r requirements-ray.txt")

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
# Ray's token authentication, as README tells TAs to set it: with RAY_AUTH_MODE=token, `ray start`
# needs a token that already exists (Ray 2.60 creates none), here a fresh one in the environment
# rather than a file in ~/.ray. One grading seed for every grading of both runs (each grading
# otherwise draws its own inputs, autograder/grading_seed.py), so that the local and the Ray
# results can be compared whole.
ENVIRONMENT = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                   SCRATCH1_GRADING_SEED="5eed",
                   PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
MUTANT = next(m for m in MUTANTS if m.name == "rmsnorm_layernorm")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The address of a one-node Ray cluster with 2 CPUs, this test module's own: `ray start
    --block` keeps every process it starts in its process group, which teardown ends."""
    address = f"127.0.0.1:{_free_port()}"
    log = open(tmp_path_factory.mktemp("ray") / "ray-start.log", "w+")
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={address.split(':')[1]}",
                             "--num-cpus=2", "--object-store-memory=200000000", "--include-dashboard=false",
                             "--disable-usage-stats"],
                            env=ENVIRONMENT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in open(log.name).read():
            assert head.poll() is None and time.monotonic() < deadline, open(log.name).read()[-3000:]
            time.sleep(0.5)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


def batch_command(folder, out, only, *extra):
    command = [os.path.join(KIT, "run_autograder"), "--batch", str(folder), "--out", str(out), "--jobs", "2",
               *extra]
    for category in only:
        command += ["--only", category]
    return command


def run_batch(folder, out, only, *extra):
    return subprocess.run(batch_command(folder, out, only, *extra), capture_output=True, text=True,
                          timeout=1200, env=ENVIRONMENT)


def four_submissions(folder):
    """The reference, the template, one mutant and a broken upload (a truncated zip)."""
    folder.mkdir()
    shutil.copy(REFERENCE, folder / "reference.py")
    shutil.copy(TEMPLATE, folder / "template.py")
    (folder / "mutant.py").write_text(MUTANT.source())
    (folder / "upload.zip").write_bytes(b"PK\x03\x04" + bytes(40))
    return folder


def summary(out, ignore=()):
    with open(out / "summary.csv", newline="") as file:
        return [{k: v for k, v in row.items() if k not in ignore} for row in csv.DictReader(file)]


def without_timings(path):
    """A results.json without what is measured in seconds (the only thing that differs run to
    run): the run's and each test's time, and the import time the interface test reports."""
    document = json.loads(path.read_text())
    document.pop("execution_time")
    for test in document["tests"]:
        (test.get("extra_data") or {}).pop("seconds", None)
        test["output"] = re.sub(r"imported in [0-9.e-]+ s", "imported in (time) s", test["output"])
    return document


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
    with pytest.raises(SystemExit, match=r"pip install -r .*requirements-ray.txt"):
        batch_ray.engine()


def test_a_folder_travels_as_bytes_intact(tmp_path):
    folder = tmp_path / "alice"
    (folder / "src").mkdir(parents=True)
    shutil.copy(REFERENCE, folder / "src" / "backbone.py")
    (folder / "notes.txt").write_text("hello")
    (folder / "link.py").symlink_to("src/backbone.py")
    path = batch_ray.unpack(batch_ray.pack(str(folder)), str(tmp_path / "node"))
    assert path == str(tmp_path / "node" / "alice")
    assert (tmp_path / "node" / "alice" / "src" / "backbone.py").read_bytes() == open(REFERENCE, "rb").read()
    assert os.readlink(tmp_path / "node" / "alice" / "link.py") == "src/backbone.py"
    assert (tmp_path / "node" / "alice" / "notes.txt").read_text() == "hello"


def _outcome(kit, document):
    return {"code": 0, "results": json.dumps(document).encode(), "log": b"graded\n",
            "figures": {"loss_curve.png": b"png"}, "kit": kit, "node": "node-7"}


def test_the_driver_writes_what_a_task_returns_and_rejects_another_kit(tmp_path):
    for sub in ("results", "logs"):
        (tmp_path / sub).mkdir()
    document = {"score": 5.0, "tests": [], "extra_data": {"kit": kit_version.fingerprint()}}
    good = batch.Submission("good", "good.py")
    batch_ray.store(good, str(tmp_path), _outcome(kit_version.fingerprint(), document))
    assert not good.error and json.loads((tmp_path / "results" / "good.json").read_text()) == document
    assert (tmp_path / "report" / "submissions" / "good" / "loss_curve.png").read_bytes() == b"png"
    other = batch.Submission("other", "other.py")
    (tmp_path / "results" / "other.json").write_text("{}")  # from an earlier run: not kept
    batch_ray.store(other, str(tmp_path), _outcome("0123456789abcdef", document))
    assert "grader error" in other.error and "node-7" in other.error and "0123456789abcdef" in other.error
    assert not (tmp_path / "results" / "other.json").exists()


@needs_ray
@pytest.mark.parametrize("only", [
    ("interface", "rmsnorm"),
    pytest.param((), marks=pytest.mark.slow),  # every category: 110 s measured on 2 cores
], ids=["interface+rmsnorm", "all"])
def test_ray_engine_grades_like_the_local_pool(cluster, tmp_path, only):
    folder = four_submissions(tmp_path / "in")
    local = run_batch(folder, tmp_path / "local", only)
    on_ray = run_batch(folder, tmp_path / "ray", only, "--engine", "ray", "--ray-address", cluster)
    assert local.returncode == on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert "4/4 done" in on_ray.stderr and "Ray cluster: 1 node(s), 2 CPU(s)" in on_ray.stderr
    # kv_cache_speedup is a measured time ratio, different on every run, local or not
    rows = summary(tmp_path / "ray", ignore={"kv_cache_speedup"})
    assert rows == summary(tmp_path / "local", ignore={"kv_cache_speedup"})
    totals = {row["submission"]: float(row["total"]) for row in rows}
    assert totals["reference"] > totals["mutant"] > totals["template"] >= totals["upload"]
    for name in ("reference", "template", "mutant", "upload"):
        assert (without_timings(tmp_path / "ray" / "results" / f"{name}.json")
                == without_timings(tmp_path / "local" / "results" / f"{name}.json")), name
    generated = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d")
    ray_index, local_index = (generated.sub("", (tmp_path / out / "report" / "index.html").read_text())
                              for out in ("ray", "local"))
    assert ray_index == local_index
    # the submissions were graded from the bytes a task got, not from the driver's folder
    assert str(folder) not in (tmp_path / "ray" / "logs" / "reference.log").read_text()


def _grader_of(name):
    """(pid of the Ray worker, pid of the grader process) grading submission `name`, or None."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as file:
                parent = int(file.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{parent}/cmdline", "rb") as file:
                worker = file.read()
        except (OSError, ValueError, IndexError):
            continue
        if (b"--submission" in command and command[command.index(b"--submission") + 1].endswith(name.encode())
                and worker.startswith(b"ray::")):
            return parent, int(entry)
    return None


@needs_ray
def test_a_task_killed_twice_is_a_grader_error_and_the_rest_are_intact(cluster, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("reference", "victim", "template"):
        shutil.copy(TEMPLATE if name != "reference" else REFERENCE, folder / f"{name}.py")
    # without --ray-address: the run starts its own Ray instance, even with the `ray start`
    # cluster of `cluster` up on this machine (where a bare ray.init() would join that one)
    run = subprocess.Popen(batch_command(folder, tmp_path / "out", ("interface",), "--engine", "ray"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENVIRONMENT)
    kills = 0
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        found = _grader_of("victim.py")
        if found:  # the node "dies" under the task: its Ray worker and the grader it started
            worker, grader = found
            os.kill(worker, signal.SIGKILL)
            os.killpg(grader, signal.SIGKILL)
            kills += 1
            while _grader_of("victim.py") == found:
                time.sleep(0.05)
        time.sleep(0.05)
    output = run.communicate(timeout=60)[0]
    for left in glob.glob(os.path.join(tempfile.gettempdir(), "scratch1-ray-victim-*")):
        shutil.rmtree(left)  # the killed attempts' folders
    assert run.returncode == 1, output[-3000:]
    assert kills == 2, output[-3000:]  # the first attempt and its one retry
    rows = {row["submission"]: row for row in summary(tmp_path / "out")}
    assert rows["victim"]["total"] == "" and "grader error (not the student's)" in rows["victim"]["error"]
    assert "Ray task failed after a retry" in rows["victim"]["error"]
    assert not (tmp_path / "out" / "results" / "victim.json").exists()
    assert rows["reference"]["total"] == rows["template"]["total"] == "5"
    assert not rows["reference"]["error"] and not rows["template"]["error"]
    assert "Not graded" in (tmp_path / "out" / "report" / "index.html").read_text()
