"""Where a walk would land: along lenet60's recommended walk toward {w_T = 0}, the functional distance from the dense
net of the walk's own point, D(w_t, w0), and of its projection onto the hyperplane, D(P w_t, w0) with P w := w with
w_T set to 0 (the point the snap lands on, and where the relaxation starts, were the walk to end at step t).

    python bench/bench_landing.py --cells mnist:58:1,fashion-mnist:50:0,mnist:55:0 --every 3

A walk is worth its steps while it lowers D(P w_t, w0): the relaxation starts from there. Each walk runs as
`sparsify` runs it, self-checked (or at a fixed ε with --fixed), without a budget, to the snap; D on the first 256
test images, as the runs' distance column. One torch thread.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import pandas as pd
import torch
from common import ROOT, save

from geodesic.core.metric import functional_distance, mapped_outputs
from geodesic.core.objectives import PROBE, PULL, BatchSampler
from geodesic.core.params import flatten, group_mask
from geodesic.core.path import Evaluation
from geodesic.experiments.sparsify import recommended, target_groups, target_walk
from geodesic.infra import threads
from geodesic.store import checkpoints, data, zoo

DISTANCE_BATCH = 256


def trace(dataset: str, count: int, seed: int, adaptive: bool, every: int) -> list[dict]:
    """One walk's rows every `every` steps and at its last step: |w_T|, ε, r, D(w_t, w0), D(P w_t, w0)."""
    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"lenet60-{dataset}.safetensors")
    w0, groups = flatten(model), zoo.filter_groups(model)
    train, test = data.load(dataset, "train", "full"), data.load(dataset, "test", "full")
    cfg = recommended(count)
    cfg = replace(cfg, path=replace(cfg.path, seed=seed, adaptive=adaptive))
    target = group_mask(target_groups(model, w0, groups, cfg, train), w0.numel())
    walk = target_walk(model, w0, groups, target, cfg, BatchSampler.of(train, seed + PULL),
                       BatchSampler.of(train, seed + PROBE), Evaluation(test.x[:2000], test.y[:2000]))
    x = test.x[:DISTANCE_BATCH]
    ref = mapped_outputs(model, w0, x, cfg.path.phi)
    rows, last = [], None
    for s in walk:
        if s.phase != "walk":
            continue
        projected = torch.where(target, torch.zeros_like(walk.w), walk.w)
        last = {"dataset": dataset, "filters": count, "seed": seed, "walk": "checked" if adaptive else "fixed ε",
                "step": s.step, "|w_T|": s.target_norm, "eps": s.eps, "r": s.linearity, "D": s.distance,
                "D projected": functional_distance(model, projected, None, x, cfg.path.phi, ref=ref)}
        if s.step % every == 0:
            rows.append(last)
    if last is not None and (not rows or rows[-1]["step"] != last["step"]):
        rows.append(last)
    return rows


def summary(t: pd.DataFrame) -> pd.DataFrame:
    """Per walk: its steps, D at its end, and D(P w_t, w0) at the start, at its least (and that step) and at the end."""
    out = []
    for (ds, f, seed, kind), w in t.groupby(["dataset", "filters", "seed", "walk"], sort=False):
        least = w.loc[w["D projected"].idxmin()]
        out.append({"dataset": ds, "filters zeroed": f, "seed": seed, "walk": kind, "steps": int(w["step"].max()),
                    "D at the end": w["D"].iloc[-1], "projected at the start": w["D projected"].iloc[0],
                    "projected, least": least["D projected"], "at step": int(least["step"]),
                    "projected at the end": w["D projected"].iloc[-1]})
    return pd.DataFrame(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="mnist:58:1,fashion-mnist:50:0,mnist:55:0", help="dataset:filters:seed, ...")
    p.add_argument("--every", type=int, default=3, help="a row every this many steps")
    p.add_argument("--fixed", action="store_true", help="also each walk at a fixed ε (the check off)")
    p.add_argument("--name", default="landing-lenet60")
    a = p.parse_args()
    threads.configure(1)
    rows = []
    for cell in a.cells.split(","):
        ds, count, seed = cell.split(":")
        for adaptive in (True, False) if a.fixed else (True,):
            rows += trace(ds, int(count), int(seed), adaptive, a.every)
    t = pd.DataFrame(rows)
    t.to_csv(ROOT / "bench" / "results" / f"{a.name}-trace.csv", index=False)
    note = (f"lenet60, the recommended walk (self-checked unless marked) toward the chosen filters, without a budget, "
            f"one torch thread; D on the first {DISTANCE_BATCH} test images. 'projected': D(P w_t, w0), the walk's "
            f"point with w_T set to 0, i.e. where the snap would land were the walk to end at step t; rows every "
            f"{a.every} steps and at the last in {a.name}-trace.csv. Load average {os.getloadavg()[0]:.1f}.")
    print(save(a.name, summary(t), note))


if __name__ == "__main__":
    main()
