"""Each continual-learning method's strength per benchmark, measured: ACC and BWT of one sequence run per setting
(seed 0, mlp100, 10 CPU s a task, no step cap), the grid that chose the values in continual.STRENGTHS.

    python bench/bench_sequence_strengths.py            # runs the grid points not yet in bench/out, then the table
    python bench/bench_sequence_strengths.py --report   # only the table
    python bench/bench_sequence_strengths.py --only permuted-mnist:10   # one benchmark's points (e.g. at a new β)

Each point calls the library as `geodesic sequence` does (sequence_cells.build_model, splits, run_sequence) with
continual.config_for's settings for the benchmark and one strength changed; its result is one line of
bench/out/sequence-strengths.jsonl (kept, so that an interrupted grid resumes); a geodesic point records its walk
(β, the final cap on ε) and the memory, and a point at another of those is another point. The table marks each method's best
value per benchmark; the values of STRENGTHS should be those.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pandas as pd
from common import ROOT, save

OUT = ROOT / "bench" / "out" / "sequence-strengths.jsonl"
SEQUENCES = {"permuted-mnist:10": ("domain",), "split-mnist": ("task", "domain", "class")}
GRID = {"ewc": ("ewc_lambda", (1e1, 1e2, 1e3, 1e4, 1e6)), "si": ("si_c", (0.1, 1.0, 10.0)),
        "geodesic": ("pull", (0.5, 1.0, 2.0, 4.0, 8.0))}
PLAN = [("permuted-mnist:10", "domain", m, v) for m in GRID for v in GRID[m][1]] + [
    ("split-mnist", s, "geodesic", v) for s in SEQUENCES["split-mnist"] for v in GRID["geodesic"][1]]


def point(tasks: str, scenario: str, method: str, value: float, seconds: float) -> dict:
    """One sequence run with one strength set (in this process, one torch thread)."""
    from geodesic.experiments.continual import config_for
    from geodesic.experiments.sequence import run_sequence
    from geodesic.experiments.sequence_cells import SequenceSpec, build_model, splits
    from geodesic.infra import threads

    threads.configure(1)
    learn = replace(config_for(tasks), seconds=seconds, steps=10**6, **{GRID[method][0]: value})
    spec = SequenceSpec(tasks, scenario, (method,), (0,), learn=learn)
    model, _ = build_model(spec, 0)
    train, test = splits(spec)
    t0 = time.time()
    s = run_sequence(model, train, test, spec.config(method, 0)).summary
    return {"tasks": tasks, "scenario": scenario, "method": method, "strength": GRID[method][0], "value": value,
            "ACC": s["ACC"], "BWT": s["BWT"], "steps": s["steps"], "wall": time.time() - t0, **walk(learn)}


# What a geodesic point ran at, before its points recorded it: β 0.01, a constant cap on ε, memory 100
OLD_WALK = {"beta": 0.01, "eps_final": 0.0, "memory": 100}


def walk(learn) -> dict:
    """The geodesic's settings besides its pull that a point depends on."""
    return {"beta": learn.path.beta, "eps_final": learn.path.eps_final, "memory": learn.memory}


def done() -> list[dict]:
    rows = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()] if OUT.exists() else []
    nan = {k: float("nan") for k in OLD_WALK}
    return [{**r, **({**OLD_WALK, **{k: r[k] for k in OLD_WALK if k in r}} if r["method"] == "geodesic" else nan)}
            for r in rows]


def setting(r: dict) -> tuple:
    return tuple(r[k] for k in OLD_WALK) if r["method"] == "geodesic" else None


def key(tasks: str, scenario: str, method: str, value: float, at: tuple | None) -> tuple:
    """A grid point: the geodesic's also by its walk and memory (at another, it is another point)."""
    return tasks, scenario, method, float(value), at if method == "geodesic" else None


def run_grid(seconds: float, workers: int, only: str | None) -> None:
    from geodesic.experiments.continual import config_for

    have = {key(r["tasks"], r["scenario"], r["method"], r["value"], setting(r)) for r in done()}
    todo = [p for p in PLAN if key(*p, tuple(walk(config_for(p[0])).values())) not in have
            and (only is None or p[0] == only)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def one(p):
        cmd = [sys.executable, __file__, "--point", json.dumps([*p, seconds])]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode:
            print(f"{p}: failed\n{r.stderr[-2000:]}", flush=True)
            return
        with OUT.open("a") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        print(r.stdout.strip().splitlines()[-1], flush=True)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, todo))


def walk_label(r) -> str:
    """The geodesic's walk and memory, for the table (blank for the other methods)."""
    if r["beta"] != r["beta"]:
        return ""
    cap = f", ε → {r['eps_final']:g}" if r["eps_final"] else ", ε constant"
    return f"β {r['beta']:g}{cap}, M {int(r['memory'])}"


def report(seconds: float) -> str:
    df = pd.DataFrame(done())
    df["walk"] = df.apply(walk_label, axis=1)
    df = df.sort_values(["tasks", "scenario", "method", "walk", "value"])
    best = df.groupby(["tasks", "scenario", "method", "walk"])["ACC"].transform("max") == df["ACC"]
    df["best"] = best.map({True: "◀", False: ""})
    df = df[["tasks", "scenario", "method", "walk", "strength", "value", "ACC", "BWT", "steps", "best"]]
    mean = df.groupby(["tasks", "method", "walk", "value"])["ACC"].mean().reset_index()
    top = mean.loc[mean.groupby(["tasks", "method", "walk"])["ACC"].idxmax()]
    chosen = "; ".join(f"{r.tasks} {r.method}{f' ({r.walk})' if r.walk else ''} {r.value:g} (mean ACC over its "
                       f"scenarios {r.ACC:.4f})" for r in top.itertuples())
    load = os.getloadavg()
    note = (f"One seed (0), mlp100, {seconds:g} CPU s a task, no step cap, full test sets; each row one sequence run "
            f"with the benchmark's other settings at continual.config_for's (EWC and SI keep no memory). ◀: the best "
            f"ACC of the method on that benchmark and scenario. A benchmark takes one value for all its scenarios, "
            f"the best mean ACC over them: {chosen}. walk: the geodesic's tangent β, the final cap on ε and the "
            f"memory M the point ran at (each has its own best). Load average at the report: {load[0]:.1f}, "
            f"{load[1]:.1f}, {load[2]:.1f}.")
    return save("sequence-strengths", df, note)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--report", action="store_true")
    p.add_argument("--only", help="run only this benchmark's points (e.g. permuted-mnist:10)")
    p.add_argument("--point", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.point:
        print(json.dumps(point(*json.loads(args.point))))
        return
    if not args.report:
        run_grid(args.seconds, args.workers, args.only)
    print(report(args.seconds))


if __name__ == "__main__":
    main()
