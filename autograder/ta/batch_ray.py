"""--engine ray: the batch run (batch.py) fanned out over a Ray cluster.

    ./run_autograder --batch DIR --out OUT --engine ray [--ray-address HOST:PORT] [--jobs N]

Each submission is one Ray task. The driver (this machine) packs the submission (file, zip or
folder) into a tar archive and hands it to the task as bytes through Ray's object store, so the
nodes need no shared filesystem. The task unpacks it into a temporary folder on its node and
grades it with batch.run_grader, the same grader process, sandbox and limits as the local pool;
the results.json, the log and the figures come back as bytes, and only the driver writes them
into OUT, where batch.judge classifies them exactly as for a local grading. A task whose worker
process or node dies is retried once by Ray (max_retries=1), then its row is a grader error.

Every node runs the same kit at the same path as the driver (clone it there, run setup.sh, start
Ray from the kit's .venv): a grading made by another kit (kit_version.fingerprint() recorded in
its results) is a grader error, not a score. Without --ray-address a local Ray instance with
--jobs CPUs is started for the run and stopped after it.

Ray is an optional extra (requirements-ray.txt), never installed in the Gradescope image.
"""

import io
import os
import shutil
import socket
import sys
import tarfile
import tempfile

from .. import kit_version
from . import batch, html_report

REQUIREMENTS = os.path.join(batch.KIT, "requirements-ray.txt")
# Archives in the object store at once, per CPU of the cluster: enough to keep every CPU busy
# while results come back, without holding a 10,000-submission class in memory.
IN_FLIGHT_PER_CPU = 2


def import_ray():
    """The ray module; SystemExit saying how to install it when it is not installed."""
    try:
        import ray
    except ImportError:
        raise SystemExit(f"--engine ray needs Ray, an optional extra that is not installed: "
                         f"{sys.executable} -m pip install -r {REQUIREMENTS}") from None
    return ray


def pack(path: str) -> bytes:
    """The file or folder at `path` as an uncompressed tar archive holding one entry, its name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(path, arcname=os.path.basename(os.path.normpath(path)))
    return buffer.getvalue()


def unpack(data: bytes, folder: str) -> str:
    """Unpack an archive made by pack() into `folder`; the path of its one entry."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        entry = archive.getnames()[0].split("/")[0]
        # the archive comes from the driver (trusted); keep symlinks as the TA's folder has them
        archive.extractall(folder, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    return os.path.join(folder, entry)


def grade_remote(archive: bytes, name: str, only) -> dict:
    """The Ray task, on a node: grade the packed submission with batch.run_grader in a
    temporary folder. Returns the exit status ("code"), results.json ("results", bytes or
    None), the log ("log"), the figures ({file name: bytes}), the node's kit fingerprint and
    host name."""
    # named after the submission: a task killed with its worker leaves this folder behind
    with tempfile.TemporaryDirectory(prefix=f"scratch1-ray-{name}-") as work:
        path = unpack(archive, os.path.join(work, "submission"))
        out = os.path.join(work, "out")
        for sub in ("results", "logs"):
            os.makedirs(os.path.join(out, sub))
        submission = batch.Submission(name, path)
        code = batch.run_grader(submission, out, only)
        figures_dir = html_report.figures_dir(out, name)
        figures = {}
        if os.path.isdir(figures_dir):
            for entry in os.listdir(figures_dir):
                if os.path.isfile(os.path.join(figures_dir, entry)):
                    figures[entry] = _read(os.path.join(figures_dir, entry))
        results_path = submission.results_path(out)
        return {"code": code, "results": _read(results_path) if os.path.exists(results_path) else None,
                "log": _read(submission.log_path(out)), "figures": figures,
                "kit": kit_version.fingerprint(), "node": socket.gethostname()}


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def _clear(submission, out: str) -> None:
    """Remove an earlier grading's results and figures, as batch.run_grader does locally."""
    shutil.rmtree(html_report.figures_dir(out, submission.name), ignore_errors=True)
    if os.path.exists(submission.results_path(out)):
        os.remove(submission.results_path(out))


def store(submission, out: str, outcome: dict) -> None:
    """Write a task's outcome into `out` (results, log, figures) and judge it like a local one."""
    _clear(submission, out)
    _write(submission.log_path(out), outcome["log"])
    if outcome["kit"] != kit_version.fingerprint():
        submission.error = (f"grader error (not the student's): node {outcome['node']} grades with kit "
                            f"{outcome['kit']}, this machine with {kit_version.fingerprint()}: run the "
                            f"same kit and setup.sh on every node")
        return
    if outcome["results"] is not None:
        _write(submission.results_path(out), outcome["results"])
    if outcome["figures"]:
        figures_dir = html_report.figures_dir(out, submission.name)
        os.makedirs(figures_dir)
        for entry, data in outcome["figures"].items():
            _write(os.path.join(figures_dir, os.path.basename(entry)), data)
    batch.judge(submission, out, outcome["code"])


def failed(submission, out: str, reason: str) -> None:
    """No grading came back (the task died twice, raised, or never ran): a grader error row,
    the reason in its log."""
    _clear(submission, out)
    _write(submission.log_path(out), f"{reason}\n".encode())
    submission.error = (f"grader error (not the student's): {reason[:300]}; "
                        f"see {os.path.relpath(submission.log_path(out), out)}")


def _reason(ray, error: Exception) -> str:
    cause = f"{type(error).__name__}: {error}"
    if isinstance(error, ray.exceptions.RayTaskError):  # our code raised on the node: not retried
        return f"the Ray task grading it raised {cause}"
    return f"the Ray task failed after a retry ({cause})"  # its worker or node died, twice


def engine(address: str = None):
    """A batch.run engine grading on the Ray cluster at `address` (None: a local instance
    with --jobs CPUs, for this run only)."""
    ray = import_ray()

    def grade_all(pending: list, out: str, only, jobs: int):
        if not pending:
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # the worker processes import this module from the kit at the driver's path
        options = dict(runtime_env={"env_vars": {"PYTHONPATH": batch.KIT}}, log_to_driver=False,
                       include_dashboard=False)
        if address:
            try:
                ray.init(address=address, **options)
            except ConnectionError as error:
                raise SystemExit(f"--ray-address {address}: no Ray cluster could be joined ({error}). Start "
                                 f"one with `ray start --head`; with token authentication (RAY_AUTH_MODE=token "
                                 f"on the cluster) export RAY_AUTH_MODE=token here too, and the cluster's "
                                 f"token (README: Grading a whole class)")
        else:
            ray.init(address="local", num_cpus=jobs, **options)  # never a cluster that `ray start` left
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            nodes = sum(node["Alive"] for node in ray.nodes())
            print(f"Ray cluster: {nodes} node(s), {cpus} CPU(s)", file=sys.stderr)
            task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(grade_remote)
            waiting, running = list(pending), {}
            while waiting or running:
                while waiting and len(running) < IN_FLIGHT_PER_CPU * cpus:
                    submission = waiting.pop(0)
                    try:
                        archive = ray.put(pack(submission.path))
                    except OSError as error:  # unreadable on the driver: this one only
                        failed(submission, out, f"could not be read to send it to Ray: {error}")
                        yield submission
                        continue
                    reference = task.options(name=f"grade {submission.name}").remote(
                        archive, submission.name, list(only) if only else None)
                    running[reference] = submission
                if not running:
                    continue
                done, _ = ray.wait(list(running), num_returns=1)
                submission = running.pop(done[0])
                try:
                    store(submission, out, ray.get(done[0]))
                except ray.exceptions.RayError as error:
                    failed(submission, out, _reason(ray, error))
                yield submission
        finally:
            ray.shutdown()

    return grade_all
