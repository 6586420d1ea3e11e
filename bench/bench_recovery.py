"""Recovery from damage: geodesic restore against SGD and Adam on the task loss, damaged weights frozen, the same
training data and the same wall-time budget; steps, gradient evaluations and seconds until the accuracy is back
within 1 point of the pre-damage accuracy, and the accuracy curves.

    python bench/bench_recovery.py                                  # lenet60, both datasets, both damages
    python bench/bench_recovery.py --datasets mnist --seeds 0,1 --budget 60
    python bench/bench_recovery.py --seeds 1 --append                 # one more seed, added to the results

Accuracy along the way on the first 2,000 test images (the threshold is measured there too, untimed); the final
accuracy on the full 10,000. Each method is warmed up (two untimed steps) before it is timed, so one-off library
loading is not charged to it. Writes bench/results/recovery.md/.csv (one row per dataset, damage, seed and
method), recovery-runs.csv (the same with every column) and recovery-curves.csv (every evaluated point).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd
import torch
from common import RESULTS, ROOT, save

from geodesic.core.params import flatten, spec_of
from geodesic.core.path import Evaluation, PathConfig
from geodesic.experiments import damage as dmg
from geodesic.experiments.recovery import METHODS, RecoveryConfig, first_within, run_recover
from geodesic.store import checkpoints, data, zoo

DAMAGES = {  # label -> (kind, level, layers)
    "zero 30% of conv2": ("zero", 0.3, ["conv2"]),
    "ablate 10 of 60 filters": ("ablate", 10, None),
}


def configs(budget: float, steps: int) -> dict[str, RecoveryConfig]:
    """The three methods under one wall-time budget. Geodesic: ε decays (cosine) from 0.04 to 0.004 over `steps`
    (its step cap); SGD: lr 0.01, momentum 0.9; Adam: lr 1e-3 (the checkpoints' own rate); batch 128."""
    geo = PathConfig(beta=0.01, eps=0.04, eps_final=0.004, probe=32, solver="gram")
    return {"geodesic": RecoveryConfig("geodesic", steps=steps, seconds=budget, eval_every=2, path=geo),
            "sgd": RecoveryConfig("sgd", steps=None, seconds=budget, eval_every=10, lr=0.01),
            "adam": RecoveryConfig("adam", steps=None, seconds=budget, eval_every=10, lr=1e-3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="fashion-mnist,mnist", help="comma-separated")
    ap.add_argument("--damages", default="all", help="'all' or labels separated by semicolons")
    ap.add_argument("--seeds", default="0", help="damage (and sampling) seeds, comma-separated")
    ap.add_argument("--append", action="store_true", help="add to the rows and curves already in bench/results/")
    ap.add_argument("--budget", type=float, default=60.0, help="timed seconds per method")
    ap.add_argument("--geodesic-steps", type=int, default=60, help="step cap (and ε schedule length) of the geodesic")
    ap.add_argument("--eval-size", type=int, default=2000, help="test images along the curve")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfgs = configs(args.budget, args.geodesic_steps)
    labels = list(DAMAGES) if args.damages == "all" else args.damages.split(";")
    rows, curves, warm = [], [], False
    if args.append:
        rows = pd.read_csv(RESULTS / "recovery-runs.csv").to_dict("records")
        curves = [pd.read_csv(RESULTS / "recovery-curves.csv")]
    for dataset in args.datasets.split(","):
        model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"lenet60-{dataset}.safetensors")
        w0, groups, spec = flatten(model), zoo.filter_groups(model), spec_of(model)
        train, test = data.load(dataset, "train", "full"), data.load(dataset, "test", "full")
        ev, full = Evaluation(test.x[: args.eval_size], test.y[: args.eval_size]), Evaluation(test.x, test.y)
        acc_full = full.scores(model, w0)[1]
        for label in labels:
            kind, level, layers = DAMAGES[label]
            for seed in map(int, args.seeds.split(",")):
                w_d, mask = dmg.damage(w0, spec, groups, kind, level, seed, layers, among="all")
                frozen = dmg.frozen(kind, mask)
                if not warm:
                    for c in cfgs.values():
                        run_recover(model, w0, w_d, frozen, RecoveryConfig(c.method, steps=2, path=c.path), train, ev, groups)
                    warm = True
                acc_d_full = full.scores(model, w_d)[1]
                for method in METHODS:
                    cfg = cfgs[method]
                    out = run_recover(model, w0, w_d, frozen, replace(cfg, seed=seed), train, ev, groups)
                    s, hit = out.summary(), first_within(out.curve, out.before, 0.01)
                    row = {"dataset": dataset, "damage": label, "seed": seed, "method": method,
                           "before (10k)": acc_full, "damaged (10k)": acc_d_full, "before (2k)": s["accuracy_before"],
                           "damaged (2k)": s["accuracy_damaged"], "steps to 1 pt": hit["step"],
                           "grad evals to 1 pt": hit["grad_evals"], "seconds to 1 pt": hit["seconds"],
                           "final (10k)": full.scores(model, out.w)[1], "best (2k)": s["best_accuracy"],
                           "steps": s["steps"], "seconds": s["seconds"], "grad evals": s["grad_evals"],
                           "frozen": int(frozen.sum())}
                    rows.append(row)
                    print(row, flush=True)
                    curves.append(out.curve.assign(dataset=dataset, damage=label, seed=seed))
                    pd.concat(curves, ignore_index=True).to_csv(RESULTS / "recovery-curves.csv", index=False)
                    write(rows, args)


def count(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.0f}"


def write(rows: list[dict], args: argparse.Namespace) -> None:
    """recovery-runs.csv: every column; recovery.md/.csv: the table to read, and which method got there first."""
    table = pd.DataFrame(rows).sort_values(["dataset", "damage", "seed"], kind="stable")
    table.to_csv(RESULTS / "recovery-runs.csv", index=False)
    shown = pd.DataFrame({
        "dataset": table["dataset"], "damage": table["damage"], "seed": table["seed"], "method": table["method"],
        "before": table["before (10k)"], "damaged": table["damaged (10k)"],
        "steps to 1 pt": table["steps to 1 pt"].map(count), "grad evals to 1 pt": table["grad evals to 1 pt"].map(count),
        "seconds to 1 pt": table["seconds to 1 pt"].map(lambda x: "" if pd.isna(x) else f"{x:.1f}"),
        "final": table["final (10k)"], "seconds used": table["seconds"].round(1), "steps": table["steps"]})
    key = ["dataset", "damage", "seed"]
    real = table[table["steps to 1 pt"] != 0]  # settings where the damaged net is already within 1 point: no race
    wins = {m: 0 for m in METHODS}
    for _, d in real.groupby(key):
        if d["seconds to 1 pt"].notna().any():
            wins[d.loc[d["seconds to 1 pt"].idxmin(), "method"]] += 1
    settings, trivial = real.groupby(key).ngroups, table.groupby(key).ngroups - real.groupby(key).ngroups
    medians = real.groupby("method")["seconds to 1 pt"].median()
    note = (f"lenet60; accuracy on the full 10,000-image test set (before damage, damaged, final). Damaged coordinates "
            f"frozen at their damaged values (zero: the zeroed weights; ablate: the ablated filters, drawn from all 60). "
            f"Every method gets {args.budget:g} s of timed steps (evaluation not timed), 1 torch thread; geodesic "
            f"capped at {args.geodesic_steps} steps. 'to 1 pt': the first evaluation (geodesic every 2 steps, SGD/Adam "
            f"every 10) with accuracy on the first {args.eval_size} test images at most 0.01 below the pre-damage "
            "accuracy there; empty: not within the budget. Gradient evaluations: per-image backward passes: the batch "
            "for SGD/Adam (128 a step); for a geodesic step the restore batch (256) + the 320 rows of J (probe 32 × 10 "
            "classes) + 4 × 32 for the J-products = 704. Geodesic: β 0.01, ε 0.04 → 0.004 (cosine), probe 32, solver "
            "gram; SGD: lr 0.01, momentum 0.9; Adam: lr 1e-3; batch 128. Settings where the damaged net is already within 1 point "
            f"(steps to 1 pt = 0): {trivial}, left out of what follows. First within 1 point (fewest seconds), of "
            f"{settings} settings: " + ", ".join(f"{m} {wins[m]}" for m in METHODS) + "; median seconds to 1 point: "
            + ", ".join(f"{m} {medians.get(m, float('nan')):.1f}" for m in METHODS) + ".")
    save("recovery", shown, note)

if __name__ == "__main__":
    main()
