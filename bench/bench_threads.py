"""Thread policy on a shared machine: the exact tangent solve and a lenet60 path step at 1 and 2 torch threads,
on a quiet machine and with busy-loop processes competing for the cores, side by side in one run.

    python bench/bench_threads.py                  # ~3 min; writes bench/results/threads.{md,csv}
    python bench/bench_threads.py --busy 4 --repeats 5

Workloads: `exact solve`, solve_exact at J 320×20,000 in float64 (the bench_tangent problem: K = JJᵀ by
syrk, eigh, two J-products); `path step`, one step of a real lenet60 walk (gram route, 32-image probe
batch), timed by bench_step.path_timing: a sample is the median step of a fresh 3-step walk.
Thread counts: 1 (the engine's default, geodesic.infra.threads) and 2 (torch's default here: one per core). The
load-aware candidate min(cores, max(1, cores − round(load1))) is evaluated before every sample (the freshest
1-minute load average such a policy could read) and the counts it would have picked are reported.
Conditions: `quiet` (nothing started by the bench) and `loaded` (--busy processes running
`while True: pass`, started before and killed by pid after the loaded measurements). Thread counts are
interleaved sample by sample, so each comparison within a condition shares the same background.
`run queue` is the mean of /proc/loadavg's runnable count over the samples (this process included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

import pandas as pd
import torch
from bench_step import path_timing
from bench_tangent import make_problem
from common import ROOT, save

from geodesic.core.params import flatten, group_mask
from geodesic.core.path import Evaluation
from geodesic.core.tangent import solve_exact
from geodesic.experiments.baselines import smallest_groups
from geodesic.infra import threads
from geodesic.store import checkpoints, data, zoo

CORES = os.cpu_count() or 1
SETTINGS = [1, 2]


def load_aware() -> int:
    return min(CORES, max(1, CORES - round(os.getloadavg()[0])))


def run_queue() -> int:
    """Runnable tasks right now (the 4th field of /proc/loadavg is 'runnable/total'), this process included."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


@contextlib.contextmanager
def busy(n: int):
    """n processes spinning on a core each; killed by pid on the way out, whatever happens inside."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(3)  # let them start and reach the run queue
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[8] if len(xs) > 1 else xs[0]


class Workloads:
    def __init__(self, steps: int):
        self.J, self.v = make_problem(320, 20000)
        self.model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / "lenet60-fashion-mnist.safetensors")
        self.w0 = flatten(self.model)
        groups = zoo.filter_groups(self.model)
        self.train = data.load("fashion-mnist", "train", "bundled")
        test = data.load("fashion-mnist", "test", "bundled")
        self.ev = Evaluation(test.x, test.y)
        self.target = group_mask(smallest_groups(self.w0, groups, 50), self.w0.numel())
        self.steps = steps

    def exact_solve(self) -> float:
        t = time.perf_counter()
        solve_exact(self.J, self.v, 0.01, 0.01)
        return time.perf_counter() - t

    def path_step(self) -> float:
        return path_timing(self.model, self.w0, self.target, self.train, self.ev, "gram", self.steps)["step s (median)"]


def measure(work: Workloads, repeats: int, budget: float) -> dict:
    """{(workload, threads): [seconds]} plus load readings; thread counts interleaved round by round.
    Stops a workload early (after 3 rounds) once it has used `budget` seconds."""
    out: dict = {"load_start": os.getloadavg()[0], "queue": [], "load-aware": []}
    for name, fn in (("exact solve", work.exact_solve), ("path step", work.path_step)):
        t0 = time.perf_counter()
        for rep in range(repeats):
            if rep >= 3 and time.perf_counter() - t0 > budget:
                break
            for n in SETTINGS:
                torch.set_num_threads(n)
                out["queue"].append(run_queue())
                out["load-aware"].append(load_aware())
                out.setdefault((name, n), []).append(fn())
            print(f"  {name} round {rep + 1}: " + ", ".join(
                f"{n} thread(s): {out[(name, n)][-1]:.3f} s" for n in SETTINGS), file=sys.stderr, flush=True)
    out["load_end"] = os.getloadavg()[0]
    return out


def picks(ns: list[int]) -> str:
    return ", ".join(f"{n} thread(s) at {ns.count(n)}/{len(ns)}" for n in sorted(set(ns)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes in the loaded condition")
    ap.add_argument("--repeats", type=int, default=7, help="rounds per workload and condition (at least 3)")
    ap.add_argument("--steps", type=int, default=3, help="path steps per sample (median)")
    ap.add_argument("--budget", type=float, default=20, help="seconds per workload and condition before stopping early")
    args = ap.parse_args()
    t_start = time.perf_counter()
    work = Workloads(args.steps)
    for n in (1, 2):  # warm-up: one-time set-up (forward-mode decompositions, MKL/OpenMP pools) at each count
        torch.set_num_threads(n)
        work.exact_solve()
        work.path_step()
    print("quiet", file=sys.stderr, flush=True)
    quiet = measure(work, args.repeats, args.budget)
    print(f"loaded ({args.busy} busy processes)", file=sys.stderr, flush=True)
    with busy(args.busy):
        loaded = measure(work, args.repeats, args.budget)
    rows = []
    for name in ("exact solve", "path step"):
        base = {c: statistics.median(m[(name, 1)]) for c, m in (("quiet", quiet), ("loaded", loaded))}
        for n in SETTINGS:
            q, ld = quiet[(name, n)], loaded[(name, n)]
            rows.append({
                "workload": name, "threads": f"{n} (default)" if n == threads.DEFAULT else str(n),
                "quiet median s": statistics.median(q), "quiet p90 s": p90(q),
                "loaded median s": statistics.median(ld), "loaded p90 s": p90(ld),
                "loaded / quiet": statistics.median(ld) / statistics.median(q),
                "vs 1 thread, quiet": statistics.median(q) / base["quiet"],
                "vs 1 thread, loaded": statistics.median(ld) / base["loaded"],
                "samples quiet / loaded": f"{len(q)} / {len(ld)}",
            })
    df = pd.DataFrame(rows)
    note = (
        f"torch {torch.__version__}, {CORES} cores, float64 exact solve at J 320×20,000 (β = ε = 0.01); path step: "
        f"lenet60 gram route, median of a {args.steps}-step walk per sample. Load average (1 min): quiet "
        f"{quiet['load_start']:.2f} → {quiet['load_end']:.2f}, loaded ({args.busy} busy processes) "
        f"{loaded['load_start']:.2f} → {loaded['load_end']:.2f}; run queue (runnable tasks, this one included) "
        f"quiet {statistics.mean(quiet['queue']):.1f}, loaded {statistics.mean(loaded['queue']):.1f}. "
        f"Ratios are of medians; `vs 1 thread` > 1 means slower than one thread in the same condition; p90 of "
        f"few samples is close to their maximum. The load-aware candidate would have picked "
        f"{picks(quiet['load-aware'])} quiet samples and {picks(loaded['load-aware'])} loaded samples. "
        f"Engine default (geodesic.infra.threads.DEFAULT): {threads.DEFAULT} thread(s). "
        f"Whole bench {time.perf_counter() - t_start:.0f} s.")
    print(save("threads", df, note, ".3g"))


if __name__ == "__main__":
    main()
