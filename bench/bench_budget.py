"""The minimal `sparsify --filters 50` on lenet60 under its default budget, beside variants of how the relaxation
uses that budget: seeds × datasets × variants, two runs at a time (one torch thread each), all in one sweep.

    python bench/bench_budget.py --datasets fashion-mnist,mnist --seeds 0,1,2 --variants "budget,600 steps"

Each run is the CLI's default (experiments.recommended(50), eval on 2,000 test images along the path); its final
net is scored on the full test set. Variants change only the relaxation's step cap:
  budget     the default: no cap, the relaxation ends when the budget does (its ε schedule follows the budget)
  600 steps  at most 600 relaxation steps (the default before), the schedule over them
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context

import pandas as pd
from common import ROOT, save

VARIANTS = {"budget": {}, "600 steps": {"relax_steps": 600}}


def one(dataset: str, seed: int, variant: str, seconds: float) -> dict:
    """A minimal sparsify run in this process (one thread): its accuracy on the full test set and what it spent."""
    from geodesic.core.params import flatten
    from geodesic.core.path import Evaluation
    from geodesic.experiments.sparsify import recommended, run_sparsify
    from geodesic.infra import threads
    from geodesic.store import checkpoints, data, zoo

    threads.configure(1)
    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"lenet60-{dataset}.safetensors")
    w0, groups = flatten(model), zoo.filter_groups(model)
    train, test = data.load(dataset, "train", "full"), data.load(dataset, "test", "full")
    base = recommended(50)
    cfg = replace(base, seconds=seconds, path=replace(base.path, seed=seed), **VARIANTS[variant])
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = run_sparsify(model, w0, groups, cfg, train, Evaluation(test.x[:2000], test.y[:2000]))
    full = Evaluation(test.x, test.y)
    phases = pd.Series([r["phase"] for r in out.rows]).value_counts().to_dict()
    return {"dataset": dataset, "variant": variant, "seed": seed, "seconds": seconds, "accuracy": full.scores(model, out.w)[1],
            "dense": full.scores(model, w0)[1], "status": out.status.value, "walk steps": phases.get("walk", 0),
            "relax steps": phases.get("relax", 0), "restore steps": phases.get("restore", 0),
            "distance": out.summary()["distance"], "CPU s": time.process_time() - cpu0,
            "wall s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="fashion-mnist,mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seconds", type=float, default=None, help="CPU budget of a run (default: SparsifyConfig's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="budget-lenet60")
    args = ap.parse_args()
    from geodesic.experiments.sparsify import SparsifyConfig

    seconds = args.seconds or SparsifyConfig().seconds
    # every finished run is kept in bench/out/budget/<name>.jsonl: the same command again runs only what is missing
    done_path = ROOT / "bench" / "out" / "budget" / f"{args.name}.jsonl"
    done_path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in done_path.read_text().splitlines()] if done_path.is_file() else []
    have = {(r["dataset"], r["seed"], r["variant"]) for r in done if r["seconds"] == seconds}
    jobs = [(d, int(s), v, seconds) for s in args.seeds.split(",") for d in args.datasets.split(",")
            for v in args.variants.split(",") if (d, int(s), v) not in have]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        for row in pool.map(one, *zip(*jobs)) if jobs else []:
            print(row, flush=True)
            with done_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
    cells = pd.DataFrame([r for r in done if r["seconds"] == seconds])
    save(f"{args.name}-runs", cells)
    table = (cells.groupby(["dataset", "variant"], sort=False)
             .agg(seeds=("seed", "count"), accuracy=("accuracy", "mean"), spread=("accuracy", "std"),
                  dense=("dense", "first"), relax_steps=("relax steps", "mean"), cpu_s=("CPU s", "mean"),
                  wall_s=("wall s", "mean")).reset_index())
    table["loss (points)"] = 100 * (table["dense"] - table["accuracy"])
    note = (f"lenet60, 50 of 60 filters, the default sparsify run within {seconds:.0f} CPU s, one torch thread a run, "
            f"{args.workers} runs at a time on this machine, all in one sweep; accuracy on the full test set (mean and "
            f"standard deviation over seeds); variants: {VARIANTS}. cpu_s: a run's process time (its budget's clock) "
            f"before the final scoring; wall_s: its wall seconds, which other load on the machine stretches. Runs are "
            f"kept in bench/out/budget/{args.name}.jsonl and a run missing there is run again; load average at the "
            f"report: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    print(save(args.name, table, note))


if __name__ == "__main__":
    main()
