"""How well one tangent step's linear model holds, along the recommended walk to half of resnet8's groups and to
50 of lenet60's 60 filters: with the self-checking step (the default, geodesic.core.trust) and with a fixed ε.

At each step the tangent θ predicts the change of the outputs on its own probe batch as |Jθ|² (the metric);
the step then measures the real change on the same batch. The ratio real / predicted is 1 for a net that is
linear over the step. The walk (geodesic.core.path.Path, as `sparsify` runs it) goes to the hyperplane (or
`--max-steps`); at its end the table gives the real distance to the dense net and the accuracy, before any
relaxation, on the full test set, and what the checks cost.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import replace

import pandas as pd
import torch
from common import ROOT, save

from geodesic.core import trust
from geodesic.core.metric import functional_distance
from geodesic.core.params import flatten, group_mask
from geodesic.core.path import Evaluation
from geodesic.experiments.sparsify import recommended, sparsify_phases, target_groups
from geodesic.infra.lifecycle import Status
from geodesic.store import checkpoints, zoo
from geodesic.store.data import load

NETS = {"lenet60": 50, "resnet8": 0.5}  # groups to zero: a count, or a fraction of the net's groups


def rule(target: float) -> None:
    """The self-checking rule with its band moved to [target/2, target] and its rejection to 4·target (the default
    is target 16: [8, 16], rejection above 64), for this process."""
    trust.TARGET, trust.GROW_BELOW, trust.REJECT = target, target / 2, 4 * target


def walk(model, w0, groups, count: int, train, test, eps: float, adaptive: bool, max_steps: int,
         seed: int = 0) -> dict:
    """The recommended walk (its β, pull and probe) from trust region ε, self-checked or fixed."""
    cfg = recommended(count)
    cfg = replace(cfg, relax_steps=0, path=replace(cfg.path, eps=eps, adaptive=adaptive, max_steps=max_steps,
                                                   seed=seed, eval_every=10**6, snapshot_every=10**6))
    chosen = target_groups(model, w0, groups, cfg, train)
    t0 = time.perf_counter()
    (phase,) = list(sparsify_phases(model, w0, groups, chosen, cfg, train, Evaluation(test.x[:256], test.y[:256])))
    rows = [r for r in phase.rows if r["phase"] == "walk" and r["step"] > 0]
    seconds = time.perf_counter() - t0
    w = phase.weights()
    target = group_mask(chosen, w0.numel())
    w = torch.where(target, torch.zeros_like(w), w)
    loss, acc = Evaluation(test.x, test.y).scores(model, w)
    lin = [r["linearity"] for r in rows if math.isfinite(r["linearity"])]
    busy = sum(r["t_jacobian"] + r["t_solve"] + r["t_other"] + r["t_check"] for r in rows)
    return {"ε": eps, "rule": f"self-checked, r band [{trust.GROW_BELOW:g}, {trust.TARGET:g}]" if adaptive
            else "fixed ε", "seed": seed, "steps": len(rows),
            "rejected": sum(r["rejected"] for r in rows), "arrived": phase.end() is Status.ARRIVED,
            "median real/predicted": statistics.median(lin), "90th percentile": statistics.quantiles(lin, n=10)[-1],
            "median ε": statistics.median(r["eps"] for r in rows),
            "check share": sum(r["t_check"] for r in rows) / busy,
            "D to dense": functional_distance(model, w, w0, test.x, cfg.path.phi), "accuracy (masked)": acc,
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--eps", default="0.1", help="starting trust regions (self-checked) / fixed ones to compare")
    ap.add_argument("--fixed", default="0.1,0.01", help="fixed trust regions to compare (empty: none)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--seeds", default="0", help="walk seeds (probe and pull batches)")
    ap.add_argument("--targets", default=str(trust.TARGET),
                    help="self-checked walks: the rule's TARGET r to compare (band [TARGET/2, TARGET], rejection "
                         f"above 4·TARGET; the default is {trust.TARGET:g})")
    ap.add_argument("--name", default="linearity-{dataset}", help="the result files' name under bench/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = load(args.dataset, "train"), load(args.dataset, "test")
    rows = []
    for name in args.nets.split(","):
        amount = NETS[name]
        model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"{name}-{args.dataset}.safetensors")
        model.eval()
        w0, groups = flatten(model).detach(), zoo.filter_groups(model)
        count = amount if isinstance(amount, int) else round(amount * len(groups))
        runs = [(float(e), True, float(t)) for e in args.eps.split(",") if e for t in args.targets.split(",")] + \
            [(float(e), False, trust.TARGET) for e in args.fixed.split(",") if e]
        for seed in (int(s) for s in args.seeds.split(",")):
            for eps, adaptive, target in runs:
                rule(target)
                row = {"net": name, "groups zeroed": f"{count} of {len(groups)}",
                       **walk(model, w0, groups, count, train, test, eps, adaptive, args.max_steps, seed)}
                print(row, flush=True)
                rows.append(row)
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    note = (f"{args.dataset}, one thread, seeds {args.seeds}; the recommended walk (β, pull ρ, probe of 32 images) without its "
            "relaxation, self-checked from ε (the default: geodesic.core.trust) or at a fixed ε. real/predicted: the "
            "change of the outputs on a step's own probe batch, measured, over |Jθ|², the metric's prediction (1: the "
            "net is linear over the step), for the steps taken. rejected: tried steps the check sent back (ε/4). "
            "check share: the checks' forward passes over the walk's step time. D to dense and accuracy: on the "
            "full test set, after the target is set to exactly zero at the end of the walk. "
            f"Load average at the end: {load_avg}.")
    print(save(args.name.format(dataset=args.dataset), pd.DataFrame(rows), note))


if __name__ == "__main__":
    main()
