"""Benchmark: grading the reference inside a container of Gradescope's default size. Not a test.

    sudo .venv/bin/python bench/box.py [--runs 3] [--cpu 0.5] [--mem-mb 768] [--json FILE]

Each run grades reference/backbone.py with ./run_autograder inside a fresh cgroup (v1: cpu,
cpuacct and memory controllers; v2: cpu and memory) with a CFS quota of --cpu CPUs and --mem-mb
of memory, swap included: Gradescope's default machine is 0.5 vCPU and 768 MB. It reports, per
run and as the median over runs, the wall seconds, the CPU seconds of every process in the
cgroup (cpuacct.usage / cpu.stat), the cgroup's peak memory (max_usage_in_bytes / memory.peak)
and its OOM kills, next to the targets of issue 10 (<= 10 CPU-s, <= 20 s wall, <= 600 MB), and
the machine's load average before each run: CPU seconds and peak hold on a busy machine, wall
seconds do not (other processes take the CPU the quota would allow). Needs root.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"cpu_s": 10.0, "wall_s": 20.0, "peak_mb": 600.0}
V1, V2 = "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cgroup.controllers"


def _write(path: str, value) -> None:
    with open(path, "w") as file:
        file.write(str(value))


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


class Box:
    """A fresh cgroup with a CPU quota and a memory limit; `enter` is a shell prefix."""

    def __init__(self, cpu: float, mem_mb: int):
        self.name = f"scratch1-bench-box-{os.getpid()}-{time.monotonic_ns()}"
        quota, memory = int(cpu * 100_000), mem_mb * 2**20
        if os.path.isdir(V1):
            self.folders = {c: f"/sys/fs/cgroup/{c}/{self.name}" for c in ("cpu", "cpuacct", "memory")}
            for folder in self.folders.values():
                os.mkdir(folder)
            _write(f"{self.folders['cpu']}/cpu.cfs_period_us", 100_000)
            _write(f"{self.folders['cpu']}/cpu.cfs_quota_us", quota)
            _write(f"{self.folders['memory']}/memory.limit_in_bytes", memory)
            swap = f"{self.folders['memory']}/memory.memsw.limit_in_bytes"
            if os.path.exists(swap):
                _write(swap, memory)
        elif os.path.exists(V2):
            folder = f"/sys/fs/cgroup/{self.name}"
            os.mkdir(folder)
            self.folders = {"v2": folder}
            _write(f"{folder}/cpu.max", f"{quota} 100000")
            _write(f"{folder}/memory.max", memory)
            _write(f"{folder}/memory.swap.max", 0)
        else:
            raise SystemExit("no cgroup v1 memory controller or cgroup v2 hierarchy found")

    def enter(self) -> list:
        joins = " && ".join(f"echo $$ > {folder}/cgroup.procs" for folder in self.folders.values())
        return ["sh", "-c", joins + ' && exec "$@"', "sh"]

    def figures(self) -> dict:
        if "v2" in self.folders:
            folder = self.folders["v2"]
            usage = next(int(line.split()[1]) for line in _read(f"{folder}/cpu.stat").splitlines()
                         if line.startswith("usage_usec")) / 1e6
            peak = int(_read(f"{folder}/memory.peak")) if os.path.exists(f"{folder}/memory.peak") else 0
            events = _read(f"{folder}/memory.events")
        else:
            usage = int(_read(f"{self.folders['cpuacct']}/cpuacct.usage")) / 1e9
            peak = int(_read(f"{self.folders['memory']}/memory.max_usage_in_bytes"))
            events = _read(f"{self.folders['memory']}/memory.oom_control")
        kills = next((int(line.split()[1]) for line in events.splitlines() if line.startswith("oom_kill ")), 0)
        return {"cpu_s": round(usage, 2), "peak_mb": round(peak / 2**20), "oom_kills": kills}

    def remove(self) -> None:
        for folder in self.folders.values():
            os.rmdir(folder)


def grade_once(cpu: float, mem_mb: int) -> dict:
    results = os.path.join(tempfile.mkdtemp(prefix="bench-box-"), "results.json")
    box = Box(cpu, mem_mb)
    load = _read("/proc/loadavg").split()[0]
    try:
        start = time.monotonic()
        subprocess.run(box.enter() + [os.path.join(KIT, "run_autograder"), "--submission",
                                      os.path.join(KIT, "reference", "backbone.py"), "--results", results],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        wall = time.monotonic() - start
        figures = box.figures()
    finally:
        box.remove()
    with open(results) as file:
        score = json.load(file)["score"]
    return {"score": score, "wall_s": round(wall, 1), **figures, "load_before": float(load)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", type=float, default=0.5, help="CPUs of the CFS quota")
    parser.add_argument("--mem-mb", type=int, default=768)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/box.py makes cgroups: run it as root")
    runs = []
    for number in range(1, args.runs + 1):
        runs.append(grade_once(args.cpu, args.mem_mb))
        run = runs[-1]
        print(f"run {number}: score {run['score']:g}  wall {run['wall_s']} s  cpu {run['cpu_s']} s  "
              f"peak {run['peak_mb']} MB  oom kills {run['oom_kills']}  (load average before: "
              f"{run['load_before']})", flush=True)
    median = {key: statistics.median(run[key] for run in runs) for key in TARGETS}
    for key, target in TARGETS.items():
        verdict = "ok" if median[key] <= target else "OVER"
        print(f"median {key:<8} {median[key]:>7g}   target <= {target:g}   {verdict}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"box": {"cpu": args.cpu, "mem_mb": args.mem_mb}, "runs": runs, "median": median,
                       "targets": TARGETS, "cores": os.cpu_count(), "python": sys.version.split()[0]},
                      file, indent=2)


if __name__ == "__main__":
    main()
