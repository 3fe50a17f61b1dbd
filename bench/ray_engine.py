"""Benchmark: batch grading on Ray (--engine ray) against the local pool. Not a test.

    .venv/bin/python bench/ray_engine.py [--submissions 4] [--only interface --only rmsnorm] [--no-full]

Needs requirements-ray.txt. Grades the same folder (copies of the reference) with batch.run,
--regrade every time, in five set-ups: the local pool with 1 and 2 grader processes; a Ray
instance started by the run (no --ray-address) with 1 and 2 CPUs; a 2-node cluster made of two
`ray start` processes on this box (1 CPU each), joined with --ray-address. For each it prints the
wall time and the throughput (submissions per minute, Ray's start-up included for the instance
it starts, and without it). The overhead per submission is measured apart: round trips of Ray
tasks that carry a packed submission and bring back a results-sized reply, without grading
(what the engine adds to each grading), and the engine's start-up. Then one full grading of
the reference (every category, the local path) gives the cost of a real grading, and the paper
estimate for 10,000 submissions on N nodes like this one follows from it. The load average is
printed before and after: on a shared machine every figure depends on it.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, KIT)
os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for `ray start`; README
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from autograder.ta import batch, batch_ray  # noqa: E402

RAY = os.path.join(os.path.dirname(sys.executable), "ray")
ROUND_TRIPS = 40


def _load() -> str:
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_batch(folder: str, out: str, jobs: int, only, engine=None) -> float:
    start = time.monotonic()
    status = batch.run(folder, out, jobs, regrade=True, only=only, engine=engine)
    wall = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"the batch run in {out} failed (exit {status}); see {out}/summary.csv")
    return wall


def _echo(archive: bytes, reply: bytes) -> bytes:
    return reply  # what a task returns: about a results.json, a log and two figures


def overhead(ray, address=None) -> tuple:
    """(start-up seconds, seconds per task round trip) of Ray on this box, without grading."""
    start = time.monotonic()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=1)(_echo)
    ray.get(task.remote(b"", b""))  # the first task starts a worker process
    startup = time.monotonic() - start
    archive = batch_ray.pack(os.path.join(KIT, "reference", "backbone.py"))
    reply = bytes(200_000)
    start = time.monotonic()
    ray.get([task.remote(ray.put(archive), reply) for _ in range(ROUND_TRIPS)])
    per_task = (time.monotonic() - start) / ROUND_TRIPS
    ray.shutdown()
    return startup, per_task


def two_node_cluster(log_folder: str):
    """Two `ray start --block` processes on this box, 1 CPU each: (address, [Popen])."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats"]
    head_log = os.path.join(log_folder, "head.log")
    with open(head_log, "w") as log:
        head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                 *common], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    processes = [head]
    _wait_started(head, head_log)
    node_log = os.path.join(log_folder, "node.log")
    with open(node_log, "w") as log:
        node = subprocess.Popen([RAY, "start", f"--address={address}", *common], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    processes.append(node)
    _wait_started(node, node_log)
    return address, processes


def _wait_started(process, log: str) -> None:
    deadline = time.monotonic() + 180
    while "Ray runtime started" not in open(log).read():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"ray start failed: {open(log).read()[-2000:]}")
        time.sleep(0.5)


def stop(processes) -> None:
    for process in reversed(processes):
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=4)
    parser.add_argument("--only", action="append", default=None,
                        help="categories graded in the comparison runs (default interface, rmsnorm)")
    parser.add_argument("--no-full", action="store_true", help="skip the full grading of the reference")
    args = parser.parse_args()
    only = args.only or ["interface", "rmsnorm"]
    ray = batch_ray.import_ray()
    work = tempfile.mkdtemp(prefix="bench-ray-")
    folder = os.path.join(work, "in")
    os.makedirs(folder)
    for index in range(args.submissions):
        shutil.copy(os.path.join(KIT, "reference", "backbone.py"), os.path.join(folder, f"s{index:03d}.py"))
    n = args.submissions
    print(f"before: {_load()}; {n} submissions, --only {' '.join(only)}", flush=True)

    startup, per_task = overhead(ray)
    rows = []
    for jobs in (1, 2):
        wall = timed_batch(folder, os.path.join(work, f"local{jobs}"), jobs, only)
        rows.append((f"local pool, {jobs} process(es)", wall, wall))
    for jobs in (1, 2):
        wall = timed_batch(folder, os.path.join(work, f"ray{jobs}"), jobs, only, batch_ray.engine())
        rows.append((f"Ray instance, {jobs} CPU(s)", wall, wall - startup))
    processes = []
    try:
        address, processes = two_node_cluster(work)
        joined_startup, joined_per_task = overhead(ray, address)
        wall = timed_batch(folder, os.path.join(work, "ray2nodes"), 2, only, batch_ray.engine(address))
        rows.append(("Ray, 2 nodes x 1 CPU (ray start)", wall, wall - joined_startup))
    finally:
        stop(processes)

    print(f"\n{'set-up':<36}{'wall s':>9}{'subm/min':>10}{'w/o start-up':>14}")
    for name, wall, without in rows:
        print(f"{name:<36}{wall:>9.1f}{60 * n / wall:>10.2f}{60 * n / without:>14.2f}")
    print(f"\nRay start-up (instance + first worker): {startup:.1f} s; joining the 2-node cluster: "
          f"{joined_startup:.1f} s")
    print(f"Ray round trip per submission (pack, object store both ways, no grading): "
          f"{1000 * per_task:.0f} ms on 1 node, {1000 * joined_per_task:.0f} ms on 2")
    local2 = rows[1][1]
    print(f"overhead per submission, Ray instance (start-up excluded) vs local pool at 2: "
          f"{(rows[3][2] - local2) / n:+.1f} s (within the load's noise unless far above the round trip)")

    if not args.no_full:
        full = timed_batch(folder if n == 1 else _one(folder, work), os.path.join(work, "full"), 1, None)
        speedup = rows[0][1] / rows[1][1]  # local pool: 2 processes against 1, this box
        node_rate = speedup / (full + per_task)  # submissions per second on one 2-core node
        print(f"\none full grading of the reference, alone: {full:.1f} s wall; 2 processes grade "
              f"{speedup:.2f}x as fast as 1 here")
        print("paper estimate, 10,000 submissions, nodes like this one (2 cores, one grading per core):")
        for nodes in (1, 10, 50, 100):
            hours = 10_000 / (nodes * node_rate) / 3600
            print(f"  {nodes:>4} node(s): {hours:6.1f} h (+ {startup:.0f} s start-up)")
        print(f"  the driver handles one submission every {1000 * per_task:.0f} ms at most: "
              f"a ceiling of {60 / per_task:.0f} submissions/min, whatever the cluster")
    print(f"\nafter: {_load()}")
    shutil.rmtree(work, ignore_errors=True)


def _one(folder: str, work: str) -> str:
    single = os.path.join(work, "one")
    os.makedirs(single)
    shutil.copy(os.path.join(folder, sorted(os.listdir(folder))[0]), single)
    return single


if __name__ == "__main__":
    main()
