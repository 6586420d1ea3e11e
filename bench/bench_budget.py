"""The minimal `sparsify --filters 50` on lenet60 under its default budget, beside variants of how the relaxation
uses that budget, and fine-tuning given the same budget: seeds × datasets × variants, two runs at a time (one torch
thread each). Finished runs are kept, so the same command resumes, and a variant added later runs after the others.

    python bench/bench_budget.py --datasets fashion-mnist,mnist --seeds 0,1,2 --variants "budget,600 steps,fine-tuning"

Another zoo net and group count, at a budget long enough for its walk to arrive (resnet8's walk to half its groups
arrived after 549 and 652 steps within its half of 2,400 CPU s under an earlier rule, and today's default's after 540
and 377 in two runs of three, the third cut after 885; at 240 it is cut after a few):

    python bench/bench_budget.py --net resnet8 --groups 112 --seconds 2400 --datasets fashion-mnist --seeds 0,1 \
        --variants "budget,fine-tuning" --name budget-resnet8

Each run is the CLI's default (experiments.recommended(50), eval on 2,000 test images along the path); its final
net is scored on the full test set, and its run folder (every row) is kept in bench/out/budget/runs. Variants change
how the run uses its budget:
  budget     the default: no cap, the relaxation ends when the budget does (its ε schedule follows the budget)
  600 steps  at most 600 relaxation steps (the default before), the schedule over them
  fixed ε    the default before the step checked itself: every walk step at ε = 0.1, unchecked (adaptive off, so no
             floor from the budget and no fitted batches either), then at most 600 relaxation steps; side by side
             with "budget" it tells whether the check cost a net ground on the same day (a CPU second buys different
             work on different days on this shared machine)
  norm       the default, but zeroing the groups of smallest layer-normalized norm across the net (as magnitude
             pruning and the baselines after it do) instead of the same fraction of every layer
and beside them magnitude pruning + fine-tuning on the labels, or + distillation toward the dense net's outputs (no
labels), for the same CPU budget ("distillation best": ending on its best point by the relaxation's score).
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

VARIANTS = {"budget": {}, "600 steps": {"relax_steps": 600}, "fixed ε": {"relax_steps": 600, "adaptive": False},
            "norm": {"strategy": "norm"}}
FINETUNE = "fine-tuning"  # magnitude pruning (as the sweep's), then Adam on the labels for the same CPU budget
DISTILL = "distillation"  # magnitude pruning, then Adam on D toward the dense net's outputs, the same CPU budget
# the same, ending on its best point by the score the relaxation keeps its best point with (sparsify.keep_score: D on
# fixed unlabeled training images), scored every DESCENT_EVAL steps inside the budget: whether a descent at a constant
# rate gains from ending on its best point rather than its last
DISTILL_BEST = "distillation best"


def one(net: str, count: int, dataset: str, seed: int, variant: str, seconds: float) -> dict:
    """One run in this process (one thread): its accuracy on the full test set and what it spent."""
    from geodesic.core.params import flatten
    from geodesic.core.path import Evaluation
    from geodesic.infra import threads
    from geodesic.store import checkpoints, data, zoo

    threads.configure(1)
    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"{net}-{dataset}.safetensors")
    w0, groups = flatten(model), zoo.filter_groups(model)
    train, test = data.load(dataset, "train", "full"), data.load(dataset, "test", "full")
    t0, cpu0 = time.perf_counter(), time.process_time()
    run = tuned if variant in (FINETUNE, DISTILL, DISTILL_BEST) else geodesic
    w, row = run(model, w0, groups, count, train, test, seed, variant, seconds)
    full = Evaluation(test.x, test.y)
    return {"net": net, "groups": count, "dataset": dataset, "variant": variant, "seed": seed, "seconds": seconds,
            "accuracy": full.scores(model, w)[1], "dense": full.scores(model, w0)[1], **row,
            "CPU s": time.process_time() - cpu0, "wall s": time.perf_counter() - t0}


def geodesic(model, w0, groups, count: int, train, test, seed: int, variant: str, seconds: float):
    """The CLI's sparsify run (eval on 2,000 test images along the path) with the variant's relaxation."""
    from geodesic.core.path import Evaluation
    from geodesic.experiments.continual import WALK_KEYS
    from geodesic.experiments.sparsify import recommended, run_sparsify
    from geodesic.store.runs import RunWriter

    base, change = recommended(count), VARIANTS[variant]  # a variant's PathConfig keys go to the walk
    path = {k: v for k, v in change.items() if k in WALK_KEYS}
    run = {k: v for k, v in change.items() if k not in WALK_KEYS}
    cfg = replace(base, seconds=seconds, path=replace(base.path, seed=seed, **path), **run)
    # its run folder (every row, why the walk ended) beside the .jsonl: bench/out/budget/runs/<net>-<dataset>-...
    net = model.__class__.__name__.lower()
    name = f"{net}-{test.name}-{count}-{variant.replace(' ', '_')}-{seconds:.0f}s-seed{seed}"
    writer = RunWriter({"kind": "sparsify", "dataset": test.name}, root=ROOT / "bench" / "out" / "budget" / "runs",
                       run_id=f"{name}-{time.strftime('%Y%m%d%H%M%S')}")
    out = run_sparsify(model, w0, groups, cfg, train, Evaluation(test.x[:2000], test.y[:2000]), writer=writer)
    phases = pd.Series([r["phase"] for r in out.rows]).value_counts().to_dict()
    return out.w, {"status": out.status.value, "walk steps": phases.get("walk", 0),
                   "relax steps": phases.get("relax", 0), "restore steps": phases.get("restore", 0),
                   "distance": out.summary()["distance"]}


def tuned(model, w0, groups, count: int, train, test, seed: int, variant: str, seconds: float):
    """Magnitude pruning of `count` groups, then Adam (lr 1e-3, batch 128) for `seconds` of CPU: on the labels, or
    for distillation on D toward the dense net's outputs (DISTILL_BEST: back to its best point by the relaxation's
    score at the end, the scoring inside the budget)."""
    from geodesic.experiments.baselines import finetune, magnitude_prune
    from geodesic.experiments.sparsify import DESCENT_EVAL, keep_score, recommended

    pruned, mask = magnitude_prune(w0, groups, count)
    teacher = w0 if variant in (DISTILL, DISTILL_BEST) else None
    on_step, best = None, None
    if variant == DISTILL_BEST:
        keep = keep_score(model, w0, train, seed, recommended(count))
        best = [keep(pruned), pruned]

        def on_step(done: int, p) -> None:
            if done % DESCENT_EVAL == 0 and (score := keep(p)) < best[0]:
                best[:] = [score, p]
    w, steps = finetune(model, pruned, mask, train, cpu_seconds=seconds, seed=seed, w_teacher=teacher,
                        on_step=on_step)
    if best is not None and keep(w) > best[0]:
        w = best[1]
    return w, {"status": "done", "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default="lenet60", help="a zoo net with a shipped checkpoint per dataset")
    ap.add_argument("--groups", type=int, default=50, help="how many of its groups to zero")
    ap.add_argument("--datasets", default="fashion-mnist,mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join([*VARIANTS, FINETUNE]))
    ap.add_argument("--seconds", type=float, default=None, help="CPU budget of a run (default: SparsifyConfig's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default="budget-lenet60")
    args = ap.parse_args()
    from geodesic.experiments.sparsify import SparsifyConfig
    from geodesic.store import checkpoints, zoo

    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"{args.net}-{args.datasets.split(',')[0]}.safetensors")
    groups = zoo.filter_groups(model)

    seconds = args.seconds or SparsifyConfig().seconds
    # every finished run is kept in bench/out/budget/<name>.jsonl: the same command again runs only what is missing
    done_path = ROOT / "bench" / "out" / "budget" / f"{args.name}.jsonl"
    done_path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in done_path.read_text().splitlines()] if done_path.is_file() else []
    have = {(r["dataset"], r["seed"], r["variant"]) for r in done if r["seconds"] == seconds}
    jobs = [(args.net, args.groups, d, int(s), v, seconds) for s in args.seeds.split(",") for d in args.datasets.split(",")
            for v in args.variants.split(",") if (d, int(s), v) not in have]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        for row in pool.map(one, *zip(*jobs)) if jobs else []:
            print(row, flush=True)
            with done_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
    cells = pd.DataFrame([r for r in done if r["seconds"] == seconds])
    save(f"{args.name}-runs", cells)
    cells = cells.reindex(columns=list(dict.fromkeys([*cells.columns, "walk steps", "relax steps", "restore steps",
                                                      "steps"])))
    table = (cells.groupby(["dataset", "variant"], sort=False)
             .agg(seeds=("seed", "count"), accuracy=("accuracy", "mean"), spread=("accuracy", "std"),
                  dense=("dense", "first"), status=("status", lambda s: ", ".join(sorted(set(s)))),
                  walk_steps=("walk steps", "mean"), relax_steps=("relax steps", "mean"),
                  restore_steps=("restore steps", "mean"), adam_steps=("steps", "mean"), cpu_s=("CPU s", "mean"),
                  wall_s=("wall s", "mean")).reset_index())
    table["loss (points)"] = 100 * (table["dense"] - table["accuracy"])
    for col in ("accuracy", "spread", "dense"):  # four decimals, as the README and docs quote them
        table[col] = table[col].map(lambda x: f"{x:.4f}")
    note = (f"{args.net}, {args.groups} of {len(groups)} groups, the default sparsify run within {seconds:.0f} CPU s, one torch thread a run, "
            f"{args.workers} runs at a time on this machine in the order the .jsonl file keeps them (a variant added "
            f"later ran after the others); accuracy on the full test set (mean and "
            f"standard deviation over seeds); variants: {VARIANTS}. cpu_s: a run's process time (its budget's clock) "
            f"before the final scoring; wall_s: its wall seconds, which other load on the machine stretches. Runs are "
            f"kept in bench/out/budget/{args.name}.jsonl and a run missing there is run again; load average at the "
            f"report: {', '.join(f'{x:.1f}' for x in os.getloadavg())}.")
    print(save(args.name, table, note))


if __name__ == "__main__":
    main()
