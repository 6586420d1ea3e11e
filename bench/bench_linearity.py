"""How well one tangent step's linear model holds, along the recommended walk to half of resnet8's groups and to
50 of lenet60's 60 filters, at the walk's ε and at smaller ones.

At each step the tangent θ predicts the change of the outputs on its own probe batch as |Jθ|² (the metric);
the step then measures the real change D(w + θ, w) on the same batch. The ratio real / predicted is 1 for a
net that is linear over the step. The walk runs to the hyperplane (or `--max-steps`); at its end the table
gives the real distance to the dense net and the accuracy, before any relaxation, on the full test set.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import pandas as pd
import torch

from common import ROOT, save

from geodesic import models
from geodesic.data import load
from geodesic.experiments import recommended
from geodesic.metric import Metric, functional_distance
from geodesic.objectives import PROBE, PULL, BatchSampler, sparsify, with_pull
from geodesic.params import flatten, group_mask
from geodesic.path import Evaluation
from geodesic.targets import choose_groups
from geodesic.tangent import solve_exact_gram

NETS = {"lenet60": 50, "resnet8": 0.5}  # groups to zero: a count, or a fraction of the net's groups


def walk(model, w0, groups, count: int, train, test, eps: float, max_steps: int, seed: int = 0) -> dict:
    """The recommended walk (its β, pull and probe) at trust region ε, measuring each step's linearity."""
    cfg = recommended(count)
    phi, beta, probe_n = cfg.path.phi, cfg.path.beta, cfg.path.probe
    probe0 = train.batch(probe_n, torch.Generator().manual_seed(seed + 3))[0]
    target = group_mask(choose_groups(cfg.strategy, model, w0, groups, count, probe0, phi, seed), w0.numel())
    field = with_pull(sparsify(target), model, w0, BatchSampler.of(train, seed + PULL), cfg.pull, cfg.pull_batch,
                      phi, only=~target)
    probes, ratios, w, t0 = BatchSampler.of(train, seed + PROBE), [], w0.clone(), time.perf_counter()
    tol, steps = math.sqrt(eps), 0
    while steps < max_steps and float(w[target].norm()) > tol:
        x, _ = probes(probe_n)
        v = field(w)
        m = Metric(model, w, x, phi)
        K, Jv = m.gram_jvp(v)
        res = solve_exact_gram(K, Jv, m.vjp, v, beta, eps)
        real = functional_distance(model, w + res.theta, w, x, phi)
        ratios.append(real / max(res.quad, 1e-30))
        w, steps = w + res.theta, steps + 1
    arrived = float(w[target].norm()) <= tol
    w = torch.where(target, torch.zeros_like(w), w)
    loss, acc = Evaluation(test.x, test.y).scores(model, w)
    return {"ε": eps, "steps": steps, "arrived": arrived, "median real/predicted": statistics.median(ratios),
            "90th percentile": statistics.quantiles(ratios, n=10)[-1], "first step": ratios[0],
            "D to dense": functional_distance(model, w, w0, test.x, phi), "accuracy (masked)": acc,
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--eps", default="0.1,0.01", help="trust regions to compare")
    ap.add_argument("--max-steps", type=int, default=600)
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = load(args.dataset, "train"), load(args.dataset, "test")
    rows = []
    for name, amount in NETS.items():
        model, _ = models.load(ROOT / "assets" / "checkpoints" / f"{name}-{args.dataset}.safetensors")
        model.eval()
        w0, groups = flatten(model).detach(), models.filter_groups(model)
        count = amount if isinstance(amount, int) else round(amount * len(groups))
        for eps in map(float, args.eps.split(",")):
            row = {"net": name, "groups zeroed": f"{count} of {len(groups)}",
                   **walk(model, w0, groups, count, train, test, eps, args.max_steps)}
            print(row, flush=True)
            rows.append(row)
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    note = (f"{args.dataset}, one thread, seed 0; the recommended walk (β, pull ρ, probe of 32 images) at each ε, "
            "without its relaxation. real/predicted: the change of the outputs on a step's own probe batch, "
            "measured, over |Jθ|², the metric's prediction (1: the net is linear over the step). D to dense and "
            "accuracy: on the full test set, after the target is set to exactly zero at the end of the walk. "
            f"Load average at the end: {load_avg}.")
    print(save(f"linearity-{args.dataset}", pd.DataFrame(rows), note))


if __name__ == "__main__":
    main()
