"""Benchmark: what grading costs, and how fast the convergence check converges. Not a test.

    .venv/bin/python bench/grade.py [--runs 2] [--seeds 5] [--json bench/grade.json]

Part 1 grades the reference with ./run_autograder, as Gradescope would, and reports wall
seconds, CPU seconds (user+sys of the grader and every process under it, workers included,
sampled from /proc every 20 ms),
the peak memory of grader + workers (summed PSS, sampled every 20 ms from /proc),
and the wall time of each category (from each test's extra_data). Part 2 replays the
convergence check in-process with the reference: per seed, the optimizer steps and CPU seconds
until the honest held-out loss first drops below 1.0, and the final loss. Both parts run twice:
on all cores and pinned to one core (`taskset -c 0`), the closest local stand-in for
Gradescope's 0.5 vCPU. Prints a table and writes JSON for comparing commits.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

KIT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, KIT)


def _children(pid: int) -> set:
    """pid and all its descendants, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    parents[int(entry)] = int(file.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def _memory_mb(pids) -> tuple:
    """(PSS, RSS) summed over pids, in MB. PSS splits shared pages (torch's libraries, mapped
    by grader and worker alike) between the processes, as a memory cgroup counts them once;
    summed RSS counts them once per process and overstates the total."""
    totals = {"Pss:": 0, "Rss:": 0}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as file:
                for line in file:
                    key = line.split()[0]
                    if key in totals:
                        totals[key] += int(line.split()[1])
        except OSError:
            continue
    return totals["Pss:"] / 1024, totals["Rss:"] / 1024


def grade_once(pin: bool) -> dict:
    """Grade the reference once; wall, CPU, peak summed RSS and per-category wall seconds."""
    results = os.path.join(tempfile.mkdtemp(prefix="bench-"), "results.json")
    command = [os.path.join(KIT, "run_autograder"), "--submission",
               os.path.join(KIT, "reference", "backbone.py"), "--results", results]
    if pin:
        command = ["taskset", "-c", "0"] + command
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, ticks = [0.0, 0.0], {}

    def sample():
        # The worker is killed, never waited for, so its CPU time never reaches
        # RUSAGE_CHILDREN: read every process's utime + stime from /proc while it runs.
        while process.poll() is None:
            tree = _children(process.pid)
            pss, rss = _memory_mb(tree)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
            for pid in tree:
                try:
                    with open(f"/proc/{pid}/stat") as file:
                        fields = file.read().rsplit(")", 1)[1].split()
                    ticks[pid] = max(ticks.get(pid, 0), int(fields[11]) + int(fields[12]))
                except (OSError, IndexError, ValueError):
                    continue
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    process.wait()
    sampler.join()
    wall = time.perf_counter() - start
    with open(results) as file:
        document = json.load(file)
    categories = {}
    for test in document["tests"]:
        (category,) = test["tags"]
        categories[category] = categories.get(category, 0.0) + test["extra_data"]["seconds"]
    return {
        "score": document["score"],
        "wall_s": round(wall, 2),
        "cpu_s": round(sum(ticks.values()) / os.sysconf("SC_CLK_TCK"), 2),
        "peak_pss_mb": round(peak[0], 1),
        "peak_rss_sum_mb": round(peak[1], 1),
        "category_wall_s": {k: round(v, 2) for k, v in categories.items()},
    }


def convergence_seed(seed: int) -> dict:
    """The convergence check's training with the reference, evaluated after every step, on the
    data of a fresh grading seed (as every grading draws its own); `seed` seeds the model and
    the shuffling."""
    import torch
    import torch.nn.functional as F

    from autograder import dataset, grading_seed, rubric
    from autograder.checks import oracle

    torch.set_num_threads(1)
    spec, data = rubric.CONVERGENCE, dataset.load(grading_seed.draw())
    reference = oracle.reference()
    torch.manual_seed(seed)
    model = reference.DecoderOnlyTransformer(**spec.model.kwargs())
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
    batches = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data["train_states"], data["train_actions"]),
        batch_size=spec.batch_size, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed))
    held_out = data["val_actions"]
    cpu, steps, first_below, loss = 0.0, 0, None, float("nan")
    for _ in range(spec.epochs):
        for batch in batches:
            start = time.process_time()
            reference.train_epoch(model, [batch], optimizer, torch.device("cpu"), 0)
            cpu += time.process_time() - start
            steps += 1
            model.eval()
            with torch.no_grad():  # the reference is causal: one full forward is the honest loss
                logits, _ = model(held_out[:, :-1])
                loss = float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), held_out[:, 1:].reshape(-1)))
            if first_below is None and loss < spec.target_loss:
                first_below = (steps, round(cpu, 2))
    return {"seed": seed, "steps_to_below_1": first_below and first_below[0],
            "cpu_s_to_below_1": first_below and first_below[1], "final_loss": round(loss, 4),
            "train_cpu_s": round(cpu, 2), "steps": steps}


def run(pin: bool, runs: int, seeds: int) -> dict:
    if pin and "--pinned-child" not in sys.argv:
        completed = subprocess.run(["taskset", "-c", "0", sys.executable, __file__, "--pinned-child",
                                    "--runs", str(runs), "--seeds", str(seeds)],
                                   capture_output=True, text=True, check=True)
        return json.loads(completed.stdout)
    return {"grading": [grade_once(pin=False) for _ in range(runs)],
            "convergence": [convergence_seed(seed) for seed in range(seeds)]}


def table(label: str, figures: dict) -> str:
    lines = [f"== {label}"]
    for i, g in enumerate(figures["grading"], 1):
        categories = "  ".join(f"{k} {v:g}" for k, v in g["category_wall_s"].items())
        lines.append(f"grading run {i}: score {g['score']:g}  wall {g['wall_s']} s  cpu {g['cpu_s']} s  "
                     f"peak memory {g['peak_pss_mb']} MB PSS ({g['peak_rss_sum_mb']} MB summed RSS)\n    per category (wall s): {categories}")
    lines.append("convergence: seed  steps<1.0  cpu_s<1.0  final_loss  train_cpu_s")
    for c in figures["convergence"]:
        lines.append(f"             {c['seed']:>4}  {str(c['steps_to_below_1']):>9}  "
                     f"{str(c['cpu_s_to_below_1']):>9}  {c['final_loss']:>10}  {c['train_cpu_s']:>11}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="gradings of the reference per setting")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the convergence study")
    parser.add_argument("--json", default=os.path.join(KIT, "bench", "grade.json"))
    parser.add_argument("--pinned-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pinned_child:
        print(json.dumps(run(pin=True, runs=args.runs, seeds=args.seeds)))
        return
    report = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
              "all_cores": run(pin=False, runs=args.runs, seeds=args.seeds),
              "one_core": run(pin=True, runs=args.runs, seeds=args.seeds)}
    print(table("all cores", report["all_cores"]))
    print(table("pinned to one core (taskset -c 0)", report["one_core"]))
    with open(args.json, "w") as file:
        json.dump(report, file, indent=2)
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
