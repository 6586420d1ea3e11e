"""Per-step cost of a lenet60 path with a 32-image probe batch, split into metric, solve and bookkeeping,
for each route to the metric, measured side by side in one process.

Routes: `gram` (K = JJᵀ layer by layer + J-products; J never stored), `explicit` (J from per-layer
per-sample gradients), and the plain `torch.func` routes for reference (`vmap(jacrev)` per sample,
`jacrev` over the whole batch) followed by the same exact solve.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
from common import ROOT, save
from torch.func import jacrev

from geodesic.core import metric
from geodesic.core.objectives import BatchSampler, sparsify
from geodesic.core.params import flatten, group_mask
from geodesic.core.path import Evaluation, Path, PathConfig
from geodesic.core.tangent import solve_exact
from geodesic.experiments.baselines import smallest_groups
from geodesic.store import checkpoints, data, zoo


def path_timing(model, w0, target, train, ev, solver: str, steps: int) -> dict:
    p = Path(model, w0, sparsify(target), PathConfig(solver=solver, max_steps=steps, eval_every=10), BatchSampler.of(train, 0), ev,
             zoo.filter_groups(model), target=target)
    recs = [s for s in p if s.step > 0 and s.phase == "walk"]
    tot = [s.t_jacobian + s.t_solve + s.t_other for s in recs]
    return {"route": solver, "metric s": statistics.median(s.t_jacobian for s in recs),
            "solve s": statistics.median(s.t_solve for s in recs), "bookkeeping s": statistics.median(s.t_other for s in recs),
            "step s (median)": statistics.median(tot), "steps/s": 1 / statistics.median(tot)}


def reference_timing(model, w, x, v, route: str, repeats: int) -> dict:
    ts_j, ts_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if route == "vmap(jacrev) per sample":
            J = metric.jacobian(model, w, x)
        else:
            J = jacrev(lambda w_: metric.scaled_outputs(model, w_, x, "sqrt_probs"))(w)
        t1 = time.perf_counter()
        solve_exact(J, v, 0.01, 0.01)
        ts_j.append(t1 - t0)
        ts_s.append(time.perf_counter() - t1)
    j, s = statistics.median(ts_j), statistics.median(ts_s)
    return {"route": route, "metric s": j, "solve s": s, "bookkeeping s": float("nan"), "step s (median)": j + s, "steps/s": 1 / (j + s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a lenet60 step is faster at 1 than at 2 here)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / "lenet60-fashion-mnist.safetensors")
    w0, groups = flatten(model), zoo.filter_groups(model)
    train, test = data.load("fashion-mnist", "train", "bundled"), data.load("fashion-mnist", "test", "bundled")
    ev = Evaluation(test.x, test.y)
    target = group_mask(smallest_groups(w0, groups, 50), w0.numel())
    rows = [path_timing(model, w0, target, train, ev, s, args.steps) for s in ("gram", "explicit")]
    x, v = train.x[:32], sparsify(target)(w0)
    rows.append(reference_timing(model, w0, x, v, "vmap(jacrev) per sample", 3))
    rows.append(reference_timing(model, w0, x, v, "jacrev over the batch", 1))
    df = pd.DataFrame(rows)
    note = (f"lenet60 (85,670 weights), J 320×85,670, {args.threads} threads; path routes: median over {args.steps} steps "
            "of a real walk (bookkeeping = the direction field, the update, the functional distance on 256 images, "
            "per-filter norms, and accuracy on 2,000 images every 10th step); reference routes: Jacobian + the same exact solve.")
    print(save("step-cost", df, note, ".3g"))


if __name__ == "__main__":
    main()
