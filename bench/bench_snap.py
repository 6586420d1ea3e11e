"""What the walk's snap costs, along a kept sparsify run: at its walk's snapshots, |w_T|, the trust region ε, the distance
D(w, w0) to the dense function and the accuracy at w and at snap(w) (w_T := 0, what arrival does at the end), on
the first test images; and at the last snapshot before the snap, the groups whose zeroing alone costs the most.

    python bench/bench_snap.py bench/out/budget/runs/<run> --checkpoint assets/checkpoints/resnet8-fashion-mnist.safetensors

A walk that keeps the function should arrive where D(snap(w)) ≈ D(w); the table says how far from that its end is.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
import torch
from common import save

from geodesic.core.metric import functional_distance, mapped_outputs
from geodesic.core.params import flatten, group_mask, group_norms
from geodesic.core.path import Evaluation
from geodesic.infra import threads
from geodesic.store import checkpoints, zoo
from geodesic.store.data import load
from geodesic.store.runs import load_run

PHI = "sqrt_probs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a sparsify run folder that kept its snapshots")
    ap.add_argument("--checkpoint", required=True, help="the net the run started from")
    ap.add_argument("--images", type=int, default=2000, help="first test images to score on")
    ap.add_argument("--every", type=int, default=40, help="walk steps between two rows")
    ap.add_argument("--top", type=int, default=3, help="groups listed at the last snapshot before the snap")
    ap.add_argument("--dataset", default=None, help="the run's dataset (default: its meta.json's)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    threads.configure(1)

    run = load_run(args.run, readonly=True)
    model, _ = checkpoints.load(Path(args.checkpoint))
    w0, groups = flatten(model), zoo.filter_groups(model)
    chosen = [g for g in groups if g.name in set(run.meta["target_groups"])]
    target = group_mask(chosen, w0.numel())
    dataset = args.dataset or run.meta.get("dataset")
    if not dataset:
        ap.error(f"{args.run} does not name its dataset: give --dataset")
    test = load(dataset, "test", "full")
    x, ev = test.x[: args.images], Evaluation(test.x[: args.images], test.y[: args.images])
    ref = mapped_outputs(model, w0, x, PHI)

    def dist(w: torch.Tensor) -> float:
        return functional_distance(model, w, None, x, PHI, ref=ref)

    walk = run.metrics[(run.metrics.phase == "walk") & (run.metrics.step > 0)].set_index("step")  # one row a step
    steps, W = run.snapshots()
    keep = [(int(s), w) for s, w in zip(steps, W) if int(s) <= walk.index.max() and float(w[target].norm()) > 0]
    last = keep[-1][0]
    rows = []
    for s, w in keep:
        if s % args.every and s != last:
            continue
        snapped = torch.where(target, torch.zeros_like(w), w)
        eps = walk.eps.get(s, math.nan) if s else run.metrics.eps.iloc[0]  # step 0: the start's row
        rows.append({"step": s, "|w_T|": float(w[target].norm()), "ε": float(eps),
                     "D": dist(w), "D snapped": dist(snapped),
                     "accuracy": ev.scores(model, w)[1], "accuracy snapped": ev.scores(model, snapped)[1]})
    w = keep[-1][1]
    norms = group_norms(w, chosen)
    alone = []
    for i in norms.argsort(descending=True)[: args.top].tolist():
        m = group_mask([chosen[i]], w0.numel())
        alone.append(f"{chosen[i].name} (|w_g| {float(norms[i]):.3g}: zeroing it alone takes D to "
                     f"{dist(torch.where(m, torch.zeros_like(w), w)):.4g}; zeroing all others leaves "
                     f"{dist(torch.where(target & ~m, torch.zeros_like(w), w)):.4g})")
    seconds = walk[["t_jacobian", "t_solve", "t_other", "t_check"]].sum(axis=1).sum()
    walked = (f"The walk: {len(walk)} steps (their rows' own timings add up to {seconds:.0f} s), "
              f"{int((walk.target_norm < 2).sum())} of them ending with |w_T| below 2; median ε "
              f"{walk.eps.median():.2g}, median r {walk.linearity.median():.3g}; D on the run's evaluation images "
              f"at its last measured step {walk.distance.dropna().iloc[-1]:.3g}. ")
    note = walked + (f"Run {run.id} ({run.meta['config']['filters']} groups, seed {run.meta['config']['path']['seed']}), "
            f"its walk's snapshots every {args.every} steps and its last before the snap; D and accuracy on the "
            f"first {args.images} test images of {dataset}; snapped: w_T := 0. At step {last}, "
            f"D {rows[-1]['D']:.4g}; the largest target groups: " + "; ".join(alone) + ".")
    name = args.name or f"snap-{Path(args.run).name}"
    print(save(name, pd.DataFrame(rows), note))


if __name__ == "__main__":
    main()
