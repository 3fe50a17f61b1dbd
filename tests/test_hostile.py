"""Hostile and broken submissions (issue 4): each grading must end with a valid results.json
written by the grader, the fair score (nothing gained by the attack), a clear message where the
attack failed a check, and well within Gradescope's 10 minutes.

Attacks are small edits of the reference or the template, or code from tests/hostile/ appended
to them. Most are graded with --only on the categories they reach (the interface is always in
the results) to keep the suite short; an attack that could harm this machine without the
sandbox's limits runs only where those limits are active.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

from autograder import results, rubric
from autograder.checks.submission import CLAIMED_FAULT
from autograder.grading_plugin import REPORTED, REPORTED_PREFIX
from autograder.sandbox.wire import MALFORMED
from autograder.sandbox import isolation, protections
from autograder.sandbox.limits import Limits
from autograder.worker.confine import view
from grading import KIT, REFERENCE, TEMPLATE, by_category
from variants import VARIANTS

HOSTILE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile")
ISOLATED = isolation.worker_user() is not None  # root with the worker user: NPROC, files, user
CONTAINED = bool(isolation.namespaces()) or ISOLATED  # no process outlives the worker


def _landlock() -> bool:
    try:
        return view.abi() > 0
    except OSError:
        return False


# Under bubblewrap, or Landlock where namespaces are refused (worker/confine/view.py), the worker
# sees no folder of ours: attacks on `shared` fail at the first write.
PRIVATE_FILESYSTEM = isolation.namespaces() == "bwrap" or _landlock()
HIDDEN = bool(isolation.namespaces()) or PRIVATE_FILESYSTEM or (ISOLATED and not any(
    protections.readable_by_others(path) for path in protections.SECRETS))
# What any grading must stay under here; Gradescope's 0.5 vCPU is ~2x slower on CPU-bound work,
# and the worst case there is bounded by rubric.WORKER.total_seconds (see rubric.py).
QUICK = 90


@dataclass
class Graded:
    document: dict
    stdout: str
    seconds: float

    def category(self, name: str) -> tuple:
        return by_category(self.document)[name]

    def outputs(self, category: str) -> str:
        return "\n".join(t["output"] for t in self.document["tests"] if t["tags"] == [category])

    def text(self) -> str:
        return json.dumps(self.document)


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def source(base: str, attack: str = "", **hostile) -> str:
    """The submission `base` followed by `attack` (code, or a tests/hostile/ file name), after a
    line that defines HOSTILE (see tests/hostile/README.md)."""
    if attack.endswith(".py"):
        with open(os.path.join(HOSTILE_DIR, attack)) as file:
            attack = file.read()
    return f"{base}\n\nHOSTILE = {hostile!r}\n{attack}\n"


def grade(tmp_path, text: str, only=(), results_path=None, command=None) -> Graded:
    """Write `text` as the submission, run the grader, and check the results are valid."""
    submission = tmp_path / "backbone.py"
    submission.write_text(text)
    results_path = str(results_path or tmp_path / "results.json")
    command = command or [os.path.join(KIT, "run_autograder")]
    command = command + ["--submission", str(submission), "--results", results_path]
    for category in only:
        command += ["--only", category]
    environment = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    start = time.monotonic()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment,
                               cwd=KIT)
    seconds = time.monotonic() - start
    assert os.path.isfile(results_path), f"no results.json:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    with open(results_path) as file:
        document = json.load(file)
    problems = results.problems(document)
    if only:  # the results then hold only those categories, so they cannot sum to 100
        problems = [p for p in problems if not p.startswith("max scores sum to")]
    assert problems == [], problems
    assert "internal error" not in json.dumps(document), json.dumps(document)[:3000]
    return Graded(document, completed.stdout, seconds)


def full_marks(graded: Graded, *categories) -> None:
    for category in categories:
        score, maximum = graded.category(category)
        assert score == maximum, (category, graded.outputs(category))


def zero(graded: Graded, *categories) -> None:
    for category in categories:
        assert graded.category(category)[0] == 0, (category, graded.outputs(category))


def with_forward(base: str, cls: str, code: str) -> str:
    """`base` with `code` run at the start of every call of `cls`.forward."""
    return source(base, f"""
import functools as _functools
_honest_{cls} = {cls}.forward


@_functools.wraps(_honest_{cls})
def _hostile_forward(self, *args, **kwargs):
    {code}
    return _honest_{cls}(self, *args, **kwargs)


{cls}.forward = _hostile_forward
""")


@pytest.fixture
def shared():
    """A folder the worker user may write to, as /tmp is: the attacker's best case (pytest's
    tmp_path sits in a folder only its owner can enter)."""
    folder = tempfile.mkdtemp(prefix="scratch1-hostile-")
    os.chmod(folder, 0o1777)
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


# -- the submission breaks: nothing to grade, or nothing past the import ----------------------

BROKEN_AT_IMPORT = [
    # (name, code appended to the reference, interface checks that pass, message of the first failure)
    ("syntax_error", "def broken(:\n    pass", 1, r"SyntaxError at line \d+"),
    ("import_exception", "raise RuntimeError('configuration file missing')", 2,
     r"importing backbone.py raised RuntimeError: configuration file missing \(backbone.py line \d+"),
    ("sys_exit_at_import", "import sys\nsys.exit(0)", 2, r"importing backbone.py raised SystemExit: 0"),
    ("os_exit_at_import", "import os\nos._exit(0)", 2, r"the worker process ended with status 0"),
    ("infinite_loop_at_import", "while True:\n    pass", 2,
     r"no answer within the import time limit of 30 s"),
]


@pytest.mark.parametrize("name, code, passing, message", BROKEN_AT_IMPORT, ids=[c[0] for c in BROKEN_AT_IMPORT])
def test_broken_at_import_scores_only_the_interface_it_passes(tmp_path, name, code, passing, message):
    graded = grade(tmp_path, source(_read(REFERENCE), code))
    tests = graded.document["tests"]
    assert [t["status"] for t in tests[:passing]] == ["passed"] * passing
    assert graded.document["score"] == sum(t["max_score"] for t in tests[:passing])
    assert re.search(message, tests[passing]["output"]), tests[passing]["output"]
    for test in tests[4:]:
        assert test["output"].startswith("not graded"), (test["name"], test["output"])
    assert graded.seconds < QUICK + (rubric.WORKER.import_timeout if "loop" in name else 0)


# -- the submission attacks from inside forward ---------------------------------------------
# The attacks sit in RMSNorm.forward: the rmsnorm checks must fail with a message, and the
# attention checks after them, which build CausalSelfAttention alone, must keep full marks.

@pytest.mark.parametrize("name, code, message", [
    ("sys_exit_in_forward", "import sys; sys.exit(0)", r"raised SystemExit: 0 \(backbone.py line \d+"),
    ("os_exit_in_forward", "import os; os._exit(0)", r"the worker process ended with status 0"),
], ids=["sys_exit_in_forward", "os_exit_in_forward"])
def test_exit_in_forward_fails_only_the_checks_that_call_it(tmp_path, name, code, message):
    graded = grade(tmp_path, with_forward(_read(REFERENCE), "RMSNorm", code), only=("rmsnorm", "attention"))
    zero(graded, "rmsnorm")
    assert re.search(message, graded.outputs("rmsnorm")), graded.outputs("rmsnorm")
    full_marks(graded, "attention")
    assert graded.seconds < QUICK


def test_forward_that_sleeps_forever_times_out_once(tmp_path):
    # FeedForward runs only in the full model: the causal_mask checks of the attention module
    # alone must pass; the first that builds the model times out, the next fail at once.
    graded = grade(tmp_path, with_forward(_read(REFERENCE), "FeedForward", "import time; time.sleep(10**6)"),
                   only=("causal_mask",))
    tests = graded.document["tests"]
    failed = [t for t in tests if t["status"] == "failed"]
    assert [t["status"] for t in tests[:3]] == ["passed"] * 3 and failed == tests[3:]
    limit = rubric.rule_for("test_causal_mask.py::test_model_ignores_future_tokens").timeout
    # The model may first time out in a check or in the witness run before the checks (see
    # checks/causality.py): one timeout either way, every later model check failed at once.
    timed_out = [t for t in failed if t["output"].startswith("DecoderOnlyTransformer: no answer within")]
    assert len(timed_out) <= 1, [t["output"] for t in failed]
    for test in failed:
        assert test["output"].startswith("DecoderOnlyTransformer: "), test["output"]
        assert f"no answer within this check's time limit of {limit:g} s" in test["output"], test["output"]
        assert test in timed_out or test["output"].startswith(
            "DecoderOnlyTransformer: not run: it runs your CausalSelfAttention and "
            "DecoderOnlyTransformer and FeedForward"), test["output"]
    assert graded.seconds < QUICK


def test_worker_that_closes_its_pipes_and_lives_on(tmp_path, shared):
    """Once (a file in `shared` remembers it): close every inherited descriptor, the grader's
    pipes included, and keep the process alive with a thread. The check fails (at once when the
    pipe's end is seen, else at its timeout) and the next checks run in a fresh worker."""
    done = str(shared / "done")
    attack = (f"import os, threading, time\n    try:\n        first = not os.path.exists({done!r})\n"
              f"        open({done!r}, 'w').close()\n"
              "    except OSError:  # no folder of ours in sight: nothing remembers an attack\n"
              "        first = True\n"
              "    if first:\n"
              "        threading.Thread(target=time.sleep, args=(10**6,)).start()\n"
              "        os.closerange(3, 256)")
    graded = grade(tmp_path, with_forward(_read(REFERENCE), "RMSNorm", attack), only=("rmsnorm",))
    cut = r"closed its connection to the grader|no answer within this check's time limit"
    first, *others = graded.document["tests"]
    assert re.search(cut, first["output"]), first["output"]
    if PRIVATE_FILESYSTEM or ISOLATED:  # no file outlives a worker, so each fresh worker attacks again
        assert all(re.search(cut, t["output"]) for t in others), [t["output"] for t in others]
    else:
        assert [t["status"] for t in others] == ["passed"] * len(others)
    assert graded.seconds < QUICK


def test_an_endless_attention_costs_only_the_checks_that_run_it(tmp_path):
    graded = grade(tmp_path, source(_read(REFERENCE), "endless_attention.py"))
    zero(graded, "causal_mask", "rope", "attention", "convergence")
    full_marks(graded, "interface", "rmsnorm", "training")
    outputs = [t["output"] for t in graded.document["tests"] if t["score"] < t["max_score"]]
    timed_out = [o for o in outputs if o.split(": ", 1)[1].startswith("no answer within this check's time limit")]
    # at most one timeout per kind of request (the attention with the student's RoPE, and with
    # the template's in its place); a first one with the template's RoPE covers both
    assert 1 <= len(timed_out) <= 2, outputs
    assert all("not run: it runs your CausalSelfAttention" in o for o in outputs if o not in timed_out), outputs
    assert graded.seconds < QUICK


# The time budget's two cut-offs, with the rubric's limits scaled down so the grading is short.
SCALED_LIMITS = """
import dataclasses, sys
from autograder import cli, rubric
rubric.RULES = tuple(dataclasses.replace(rule, timeout=1.0) for rule in rubric.RULES)
rubric.WORKER = dataclasses.replace(rubric.WORKER, **{})
sys.exit(cli.main(sys.argv[1:]))
"""


# Each hang in code of its own (RMSNorm, attention with the student's RoPE, with the template's,
# train_epoch) costs a timeout: 4 timeouts of 1 s and 4 worker starts of >= 1 s.
SLEEPING_EVERYWHERE = """
import time as _time

def _sleeping(method):
    def sleep_forever(*args, **kwargs):
        _time.sleep(10**6)
    return sleep_forever

RMSNorm.forward = _sleeping(RMSNorm.forward)
CausalSelfAttention.forward = _sleeping(CausalSelfAttention.forward)
train_epoch = _sleeping(train_epoch)
"""


@pytest.mark.parametrize("limits, message", [
    (dict(timeout_budget=2.5), r"not run: your code exceeded the time limit in [23] earlier checks"),
    (dict(total_seconds=8.0), r"(not run: your code used up|no answer within) the 8 s (it|your code) gets for the whole grading"),
], ids=["timeout_budget", "total_seconds"])
def test_remaining_checks_fail_fast_once_the_time_budget_is_spent(tmp_path, limits, message):
    script = SCALED_LIMITS.replace("{}", repr(limits))
    command = [sys.executable, "-c", script]
    graded = grade(tmp_path, source(_read(REFERENCE), SLEEPING_EVERYWHERE),
                   only=("rmsnorm", "causal_mask", "attention", "training"), command=command)
    outputs = [t["output"] for t in graded.document["tests"]]
    # (under load, the first worker's start may use up the 8 s alone)
    assert re.search(r"no answer within (this check's time limit of 1 s|the 8 s)", "\n".join(outputs[:6])), outputs
    assert re.search(message, outputs[-1]), outputs
    assert graded.document["score"] == 0
    assert graded.seconds < 60


# -- resources ----------------------------------------------------------------------------

@pytest.mark.parametrize("allocation", [
    "torch.empty(50 * 2**30, dtype=torch.uint8)",  # 50 GB, never touched
    "torch.ones(2**30, dtype=torch.uint8)",  # 1 GB, touched: only the limit stops it
    "bytearray(2**30)",
], ids=["50GB_tensor", "1GB_tensor", "1GB_bytearray"])
def test_huge_allocation_fails_inside_the_worker(tmp_path, allocation):
    graded = grade(tmp_path, with_forward(_read(REFERENCE), "RMSNorm", allocation), only=("rmsnorm", "attention"))
    zero(graded, "rmsnorm")
    limit = f"at most {Limits.sized(rubric.WORKER).memory_bytes // 2**20} MB"
    assert re.search(r"raised (RuntimeError|MemoryError)", graded.outputs("rmsnorm"))
    assert limit in graded.outputs("rmsnorm"), graded.outputs("rmsnorm")
    full_marks(graded, "attention")
    assert graded.seconds < QUICK


def test_filling_the_disk_stops_the_worker(tmp_path):
    """RLIMIT_FSIZE bounds one file: twenty 16 MB files pass it, not the limit on all of them."""
    fill = "[open(f'filled{n}.bin', 'wb').write(b'x' * 2**24) for n in range(20)]"
    graded = grade(tmp_path, with_forward(_read(REFERENCE), "RMSNorm", fill), only=("rmsnorm", "attention"))
    zero(graded, "rmsnorm")
    limit = f"above the {rubric.WORKER.disk_bytes // 2**20} MB limit"
    assert re.search(r"your code wrote \d+ MB of files", graded.outputs("rmsnorm")), graded.outputs("rmsnorm")
    assert limit in graded.outputs("rmsnorm")
    full_marks(graded, "attention")
    assert graded.seconds < QUICK


def _sysv_keys() -> set:
    with open("/proc/sysvipc/shm") as file:
        return {int(line.split()[0]) for line in file.read().splitlines()[1:]}


@pytest.mark.skipif(not ISOLATED, reason="the worker's own uid needs root")
def test_sysv_shared_memory_never_outlives_the_grading(tmp_path, monkeypatch):
    """Without namespaces (Gradescope's Docker) a SysV segment would stay on the host after the
    grading, its memory counted by no limit: refused, and removed should it be made."""
    monkeypatch.setenv("SCRATCH1_NAMESPACES", "none")
    key = 0x5C5C0000 + os.getpid() % 0x10000
    try:
        graded = grade(tmp_path, source(_read(REFERENCE), "sysv_shm.py", key=key), only=("rmsnorm",))
        assert key not in _sysv_keys()
        full_marks(graded, "rmsnorm")  # the attack gains nothing, and costs nothing else
    finally:
        subprocess.run(["ipcrm", "-M", str(key)], capture_output=True)


def test_200MB_of_output_is_cut(tmp_path):
    flood = "import sys\nfor _ in range(200):\n    sys.stdout.write('flood ' * (2**20 // 6) + '\\n')"
    graded = grade(tmp_path, source(_read(REFERENCE), flood), only=("rmsnorm",))
    full_marks(graded, "rmsnorm")
    assert len(graded.stdout) < 100_000 and "more bytes of output cut" in graded.stdout
    assert "flood" not in graded.text()
    assert graded.seconds < QUICK


@pytest.mark.skipif(not ISOLATED, reason="the process limit needs root and the worker user")
def test_fork_bomb_is_stopped_by_the_process_limit(tmp_path):
    marker = f"scratch1-hostile-{os.getpid()}-bomb"
    try:
        graded = grade(tmp_path, source(_read(REFERENCE), "fork_bomb.py", marker=marker), only=("rmsnorm", "attention"))
        zero(graded, "rmsnorm")
        started = [int(n) for n in re.findall(r"FORK-BOMB started (\d+) processes", graded.outputs("rmsnorm"))]
        assert started and max(started) < rubric.WORKER.processes, graded.outputs("rmsnorm")
        full_marks(graded, "attention")
        assert graded.seconds < QUICK
        assert _processes_with(marker) == []
    finally:
        _kill_processes_with(marker)


# -- escaping the worker ----------------------------------------------------------------------

def _processes_with(marker: str) -> list:
    """Processes whose command line holds `marker` (from /proc: minimal images lack pgrep)."""
    found = []
    for pid in [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if pid != os.getpid() and marker.encode() in file.read():
                    found.append(pid)
        except OSError:  # gone meanwhile
            continue
    return found


def _kill_processes_with(marker: str) -> None:
    for pid in _processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not CONTAINED, reason="without root or namespaces, a detached child outlives the worker")
def test_forked_children_do_not_outlive_the_grading(tmp_path, shared):
    marker = f"scratch1-hostile-{os.getpid()}-children"
    try:
        graded = grade(tmp_path, source(_read(REFERENCE), "immortal_children.py", shared=str(shared),
                                        marker=marker), only=("rmsnorm",))
        full_marks(graded, "rmsnorm")
        beats = sorted(path.name for path in shared.iterdir())
        if PRIVATE_FILESYSTEM or ISOLATED:  # they ran, but could not reach `shared`, or what
            # their uid wrote there went with the grading (identity.remove_files)
            assert "IMMORTAL-STARTED import" in graded.stdout and beats == [], beats
            assert "IMMORTAL-STARTED forward" in graded.stdout
        else:
            assert "heartbeat-import" in beats and "heartbeat-worker" in beats, beats
            assert any(beat.startswith("heartbeat-forward") for beat in beats), beats
        assert _processes_with(marker) == []
        before = {path.name: path.read_text() for path in shared.iterdir()}
        time.sleep(0.5)
        assert {path.name: path.read_text() for path in shared.iterdir()} == before
    finally:
        _kill_processes_with(marker)


@pytest.mark.skipif(not CONTAINED, reason="without root or namespaces, a detached child outlives the worker")
def test_forged_results_are_overwritten_by_the_grader(tmp_path, shared):
    results_path = shared / "results.json"
    graded = grade(tmp_path, source(_read(TEMPLATE), "fake_results.py", results=str(results_path)),
                   results_path=results_path)
    # it did write there, at import (or, under bubblewrap, could not even see the folder)
    assert (f"FORGED {results_path}" in graded.stdout) != PRIVATE_FILESYSTEM
    time.sleep(1.0)  # and its child, had it survived, would rewrite it every 50 ms
    with open(results_path) as file:
        assert json.load(file) == graded.document
    assert "FORGED-RESULTS" not in graded.text()
    assert graded.document["score"] == 5  # the template's: interface only
    assert graded.seconds < QUICK


def _secret_lines() -> list:
    """Code lines of the reference's solution and of the hidden checks, 30+ characters long."""
    lines = set()
    with open(REFERENCE) as file:
        solution = re.findall(r"# BEGIN SOLUTION\n(.*?)# END SOLUTION", file.read(), re.S)
    checks = os.path.join(KIT, "autograder", "checks")
    for name in sorted(os.listdir(checks)):
        if name.endswith(".py"):
            with open(os.path.join(checks, name)) as file:
                solution.append(file.read())
    for block in solution:
        lines.update(line.strip() for line in block.splitlines()
                     if len(line.strip()) >= 30 and not line.strip().startswith(("#", '"', "'")))
    return sorted(lines)


@pytest.mark.skipif(not HIDDEN, reason="the kit is readable by the worker here (not root, no namespaces)")
def test_reference_and_hidden_checks_cannot_be_read(tmp_path):
    graded = grade(tmp_path, source(_read(REFERENCE), "read_secrets.py", kit=KIT), only=("rmsnorm",))
    full_marks(graded, "rmsnorm")  # nothing was read, so nothing was raised
    text = graded.text()
    leaked = [line for line in _secret_lines() if line in text or line in graded.stdout]
    assert leaked == []
    assert "STOLEN" not in graded.stdout
    assert graded.seconds < QUICK


@pytest.fixture
def planted():
    """World-readable files with a secret in /tmp and in /srv (root) or the home folder: where
    another course's files, another checkout of the kit or a TA's notes could sit."""
    secret = f"scratch1-planted-secret-{os.getpid()}"
    folders = [tempfile.mkdtemp(prefix="scratch1-planted-", dir="/tmp")]
    elsewhere = "/srv" if os.geteuid() == 0 else os.path.expanduser("~")
    folders.append(tempfile.mkdtemp(prefix="scratch1-planted-", dir=elsewhere))
    paths = []
    for folder in folders:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "notes.txt")
        with open(path, "w") as file:
            file.write(secret)
        os.chmod(path, 0o644)
        paths.append(path)
    yield secret, paths
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(not PRIVATE_FILESYSTEM, reason="neither bubblewrap nor Landlock limits the worker's "
                    "view of the filesystem here; files outside the kit are readable as their permissions allow")
def test_files_planted_outside_the_kit_cannot_be_read(tmp_path, planted):
    secret, paths = planted
    graded = grade(tmp_path, source(_read(REFERENCE), "read_planted.py", planted=paths), only=("rmsnorm",))
    full_marks(graded, "rmsnorm")  # nothing was read, so nothing was raised
    assert secret not in graded.stdout and secret not in graded.text()
    assert all(f"could not read {path}" in graded.stdout for path in paths), graded.stdout[-2000:]
    assert graded.seconds < QUICK


def test_network_is_out_of_reach(tmp_path):
    """Sockets of every network family and a connection to a port open on this machine, at
    import and in forward: all refused (namespaces, or the worker's seccomp filter where they
    are refused), so RMSNorm keeps its points."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        graded = grade(tmp_path, source(_read(REFERENCE), "network.py", port=listener.getsockname()[1]),
                       only=("rmsnorm",))
    assert "NETWORK-OPEN" not in graded.stdout, graded.stdout[-2000:]
    assert "NETWORK-REFUSED import AF_INET" in graded.stdout and "NETWORK-REFUSED forward" in graded.stdout
    full_marks(graded, "rmsnorm")
    assert graded.seconds < QUICK


def test_printed_secrets_never_reach_results(tmp_path):
    printing = source(_read(REFERENCE), "read_secrets.py", kit=KIT).replace("raise ValueError(_LEAK)", "pass")
    graded = grade(tmp_path, printing, only=("rmsnorm",))
    text = graded.text()
    assert [line for line in _secret_lines() if line in text] == []
    assert graded.seconds < QUICK


def test_monkeypatching_comparisons_gains_nothing(tmp_path):
    mutant = next(v for v in VARIANTS if v.name == "causal_no_mask").source()
    for name in ("honest", "patched"):
        (tmp_path / name).mkdir()
    honest = grade(tmp_path / "honest", mutant, only=("causal_mask",))
    patched = grade(tmp_path / "patched", source(mutant, "monkeypatch.py"), only=("causal_mask",))
    assert [t["score"] for t in patched.document["tests"]] == [t["score"] for t in honest.document["tests"]]
    assert patched.category("causal_mask")[0] < patched.category("causal_mask")[1]
    assert patched.seconds < QUICK


def test_forging_the_training_records_gains_nothing(tmp_path):
    # Training that never clips, and rewrites what the grader's model recorded in the worker to
    # look clipped: the clipping check must still fail, and the category score no higher than
    # the honest bug's.
    mutant = next(v for v in VARIANTS if v.name == "training_no_clipping").source()
    graded = grade(tmp_path, source(mutant, "forged_training_records.py"), only=("training",))
    assert re.search(r"FORGED [1-9]\d* records", graded.stdout), graded.stdout[-2000:]
    clip = next(t for t in graded.document["tests"] if t["name"] == rubric.rule_for(
        "test_training.py::test_gradient_norm_clipped").name)
    assert clip["score"] == 0, clip["output"]
    score, maximum = graded.category("training")
    assert score <= maximum - clip["max_score"], graded.outputs("training")
    assert graded.seconds < QUICK


def test_memorising_the_training_batches_earns_no_convergence_points(tmp_path):
    graded = grade(tmp_path, source(_read(REFERENCE), "memorise.py"), only=("convergence",))
    zero(graded, "convergence")
    output = graded.outputs("convergence")
    held_out, first_epoch = re.search(r"held-out next-token loss ([\d.]+).*?returned ([\d.]+)", output).groups()
    # Its own training loss would pass from the first epoch on (the reference's is 2.3 there);
    # on unseen sequences it is worse than chance, ln(256) = 5.5.
    assert float(first_epoch) < rubric.CONVERGENCE.target_loss and float(held_out) > 4.0, output[:500]
    assert graded.seconds < QUICK


@pytest.mark.skipif(not HIDDEN, reason="the kit is readable by the worker here (not root, no namespaces)")
def test_detecting_the_grader_gains_nothing(tmp_path):
    graded = grade(tmp_path, source(_read(TEMPLATE), "grading_aware.py", kit=KIT))
    assert "GRADING DETECTED" in graded.stdout  # it can tell (the stack shows the worker) ...
    assert "USING THE REFERENCE" not in graded.stdout  # ... but the reference is out of reach
    assert "FOUND" not in graded.stdout  # ... and so is any expected answer
    assert graded.document["score"] == 5  # the template's: interface only
    assert graded.seconds < QUICK


# -- forged replies: the submission's process rewrites what the worker sends back ------------
# (tests/hostile/forged_replies.py). The grader reads only what fits the op's schema
# (sandbox/validation.py), charges the rest to the submission, and decides whose fault a failure
# is itself: a fault of the kit's worker code that the worker claims is not taken on trust.

def forged(base: str, **forges) -> str:
    return source(base, "forged_replies.py", forges=forges)


def test_forged_replies_are_the_submissions_failures(tmp_path):
    # Before: the template's failing rmsnorm checks all said "the grader hit an internal error ...
    # not your fault" (exit 1), and notes sharing one nested list kept the grader busy for
    # minutes per reply (no results.json after 300 s).
    graded = grade(tmp_path, forged(_read(TEMPLATE), rmsnorm="internal", rope="shared_notes"),
                   only=("rmsnorm", "rope"))
    zero(graded, "rmsnorm", "rope")
    rmsnorm = [t["output"] for t in graded.document["tests"] if t["tags"] == ["rmsnorm"]]
    assert all(CLAIMED_FAULT in output for output in rmsnorm), rmsnorm
    assert f"{MALFORMED}: notes[0]: list, expected a str" in graded.outputs("rope")
    extra = graded.document["extra_data"]
    assert "internal_error" not in extra and extra["claimed_kit_faults"]["count"] >= 1, extra
    assert graded.seconds < QUICK


def test_a_non_string_note_in_the_import_reply_fails_the_import(tmp_path):
    # Before: the grader crashed on it ("NOT GRADED", exit 1) once a check reported the note.
    graded = grade(tmp_path, forged(_read(REFERENCE), load="note_objects"), only=("interface",))
    found, compiles, imports, names = graded.document["tests"]
    assert found["status"] == compiles["status"] == "passed"
    assert f"{MALFORMED}: notes[0]: int, expected a str" in imports["output"], imports["output"]
    assert MALFORMED in names["output"], names["output"]
    assert graded.seconds < QUICK


def test_a_note_in_the_graders_words_reads_as_the_submissions_claim(tmp_path):
    # Before: the note was printed verbatim as a line of each test's output, the same as the
    # grader's own "the grader hit an internal error in this check ... not your fault".
    graded = grade(tmp_path, forged(_read(REFERENCE), rmsnorm="grader_note"), only=("rmsnorm",))
    full_marks(graded, "rmsnorm")
    for test in graded.document["tests"]:
        lines = test["output"].splitlines()
        forged_at = [i for i, line in enumerate(lines) if "the grader hit" in line or "not your fault" in line]
        assert forged_at and all(lines[i].startswith(REPORTED_PREFIX) for i in forged_at), lines
        assert lines.index(REPORTED) < min(forged_at), lines
    assert graded.seconds < QUICK


FORGED_RMSNORM = [
    # (what the rmsnorm replies get, what the rmsnorm tests say: None when they must pass)
    ("extra_frame", r"sent more than one reply to one request|sent a frame before the grader's request"),
    ("wrong_keys", r"result: missing \['grad_x'\]; unknown keys 'bogus'"),
    ("meta", r"result.out: a tensor on device meta"),
    ("sparse", r"result.out: a torch.sparse_coo tensor"),
    ("complex", r"result.out: a tensor of dtype torch.complex64"),
    ("quantized", r"result.out: a quantized tensor"),
    ("expanded", r"result.out: a tensor whose elements overlap"),
    ("shared_storage", r"result.grad_x: the same object as another field"),
    ("huge", r"shape \(3, 1048576\); expected shape"),  # accepted: the check reads its shape
    ("noncontiguous", None),  # the same values, transposed in memory: copied, graded as they are
    ("shared_notes", r"notes\[0\]: list, expected a str"),
    ("huge_error_frame", r"a structure of \d+ kB \(all but the tensors' data\), above the"),
]


@pytest.mark.slow
@pytest.mark.parametrize("forge, message", FORGED_RMSNORM, ids=[f for f, _ in FORGED_RMSNORM])
def test_each_kind_of_forged_reply_fails_only_with_a_message(tmp_path, forge, message):
    graded = grade(tmp_path, forged(_read(REFERENCE), rmsnorm=forge), only=("rmsnorm",))
    if message is None:
        full_marks(graded, "rmsnorm")
    else:  # a check that reads none of the forged fields may pass
        score, maximum = graded.category("rmsnorm")
        assert score < maximum and re.search(message, graded.outputs("rmsnorm")), graded.outputs("rmsnorm")
    assert graded.seconds < QUICK


@pytest.mark.slow
def test_a_huge_error_text_leaves_results_small(tmp_path):
    # Before: 100 kB of error text (control characters) per reply gave a 2 MB results.json, and
    # 10 MB (huge_error_frame, now refused as a frame) gave 180 MB, from the rmsnorm checks alone.
    graded = grade(tmp_path, forged(_read(REFERENCE), rmsnorm="huge_error"), only=("rmsnorm",))
    zero(graded, "rmsnorm")
    assert len(json.dumps(graded.document, indent=2)) < 100_000  # measured: 51 kB
    assert graded.seconds < QUICK
