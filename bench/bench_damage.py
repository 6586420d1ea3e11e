"""Damage resistance: the same damage, over several seeds, applied to the dense lenet60, the geodesic-sparsified
net (50 of 60 filters, `experiments.recommended(50)`) and the magnitude-pruned + fine-tuned net at equal sparsity
(fine-tuning gets the geodesic run's wall time). Accuracy drop on the full 10,000-image test set, mean ± sd.

    python bench/bench_damage.py --dataset fashion-mnist
    python bench/bench_damage.py --dataset mnist --seeds 3

The two sparse nets are cached in bench/out/ (--rebuild makes them anew). Writes bench/results/damage-<dataset>.md
and .csv (drop mean ± sd per kind and level), damage-<dataset>-curves.csv (the same, tidy) and
damage-<dataset>-seeds.csv (one row per net, kind, level and seed).
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import torch
from common import RESULTS, ROOT, save
from safetensors.torch import load_file, save_file

from geodesic.core.params import flatten
from geodesic.core.path import Evaluation
from geodesic.experiments.baselines import finetune, magnitude_prune
from geodesic.experiments.damage import DamageConfig, run_damage, summarize
from geodesic.experiments.sparsify import recommended, run_sparsify
from geodesic.infra.files import follow_umask
from geodesic.store import checkpoints, data, zoo

OUT = ROOT / "bench" / "out"
NETS = ("dense", "geodesic", "magnitude + fine-tune")
DAMAGES = {  # label -> (kind, among, levels)
    "zero": ("zero", "all", (0.1, 0.2, 0.3, 0.5)),
    "ablate (any filter)": ("ablate", "all", (2, 5, 10, 20)),
    "ablate (live filters)": ("ablate", "alive", (1, 2, 4, 6)),
    "noise": ("noise", "all", (0.25, 0.5, 1.0, 1.5)),
}


def sparse_nets(dataset: str, filters: int, rebuild: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """dense, geodesic-sparsified and magnitude-pruned + fine-tuned weights (cached in bench/out/ while
    `recommended(filters)` stays the same)."""
    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"lenet60-{dataset}.safetensors")
    w0, groups = flatten(model), zoo.filter_groups(model)
    path = OUT / f"damage-nets-{dataset}-{filters}.safetensors"
    config = json.loads(json.dumps(recommended(filters).as_dict()))
    cached = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
    if path.is_file() and not rebuild and cached.get("config") == config:
        t = load_file(str(path))
        return {"dense": w0, "geodesic": t["geodesic"], "magnitude + fine-tune": t["magnitude"]}, \
            json.loads(path.with_suffix(".json").read_text())
    train, test = data.load(dataset, "train", "full"), data.load(dataset, "test", "full")
    t0 = time.perf_counter()
    geo = run_sparsify(model, w0, groups, recommended(filters), train, Evaluation(test.x[:2000], test.y[:2000]))
    seconds = time.perf_counter() - t0
    w_mag, mask = magnitude_prune(w0, groups, filters)
    w_ft, ft_steps = finetune(model, w_mag, mask, train, seconds=seconds)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"geodesic": geo.w.contiguous(), "magnitude": w_ft.contiguous()}, str(path))
    follow_umask(path)  # save_file creates it 0600
    info = {"geodesic_status": geo.status, "geodesic_seconds": seconds, "finetune_steps": ft_steps, "filters": filters,
            "config": config}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return {"dense": w0, "geodesic": geo.w, "magnitude + fine-tune": w_ft}, info


def pm(mean: float, sd: float) -> str:
    return f"{mean:.4f} ± {sd:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(data.FOLDERS), default="fashion-mnist")
    ap.add_argument("--seeds", type=int, default=3, help="damage seeds 0 … SEEDS−1")
    ap.add_argument("--filters", type=int, default=50, help="zero filters of the two sparse nets")
    ap.add_argument("--damages", default="all", help="'all' or labels separated by semicolons")
    ap.add_argument("--eval-size", type=int, default=0, help="test images (0: all 10,000)")
    ap.add_argument("--rebuild", action="store_true", help="make the sparse nets anew instead of the cached ones")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    nets, info = sparse_nets(args.dataset, args.filters, args.rebuild)
    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / f"lenet60-{args.dataset}.safetensors")
    groups = zoo.filter_groups(model)
    test = data.load(args.dataset, "test", "full")
    n = args.eval_size or len(test)
    ev = Evaluation(test.x[:n], test.y[:n])
    labels = list(DAMAGES) if args.damages == "all" else args.damages.split(";")
    tables = []
    for label in labels:
        kind, among, levels = DAMAGES[label]
        cfg = DamageConfig(kind, levels, tuple(range(args.seeds)), among=among)
        t = run_damage(model, nets, groups, cfg, ev, on_row=lambda r: print(r, flush=True)).table
        tables.append(t.assign(damage=label))
    per_seed = pd.concat(tables, ignore_index=True)
    per_seed.to_csv(RESULTS / f"damage-{args.dataset}-seeds.csv", index=False)
    curves = pd.concat([summarize(t).assign(damage=label) for label, t in zip(labels, tables)], ignore_index=True)
    curves.to_csv(RESULTS / f"damage-{args.dataset}-curves.csv", index=False)

    write(curves, args.dataset, args.seeds, args.filters, n, info)


def write(curves: pd.DataFrame, dataset: str, seeds: int, filters: int, n: int, info: dict) -> None:
    """damage-<dataset>.md/.csv: drop mean ± sd, one column per net, and which net dropped least how often."""
    rows, least = [], {}
    for (label, level), d in curves.groupby(["damage", "level"], sort=False):
        row = {"damage": label, "level": f"{level:g}"}
        for r in d.itertuples():
            row[f"{r.net}: drop"] = pm(r.drop_mean, r.drop_sd)
        rows.append(row)
        best = d.loc[d["drop_mean"].idxmin(), "net"]
        least[best] = least.get(best, 0) + 1
    before = curves.groupby("net", sort=False)["accuracy_before"].first()
    note = (f"lenet60 on {dataset}; accuracy drop (before − after damage) on {n:,} test images, mean ± sd over "
            f"{seeds} seeds; the same seed damages every net in the same place. Before damage: "
            + ", ".join(f"{k} {v:.4f}" for k, v in before.items())
            + f". Sparse nets: {filters} of 60 filters at zero; geodesic: `recommended({filters})` "
            f"({info['geodesic_seconds']:.0f} s, {info['geodesic_status']}); magnitude pruning + Adam fine-tuning for "
            f"the same wall time ({info['finetune_steps']} steps). zero: a random fraction of all weights; ablate (any "
            "filter): whole filters drawn from all 60, so on a sparse net most draws hit filters already at zero; "
            "ablate (live filters): drawn from the nonzero ones only (10 on the sparse nets); noise: scale × the dense "
            "net's std of each parameter tensor, the same vector added to every net. Smallest mean drop, of "
            f"{len(rows)} damage settings: " + ", ".join(f"{k} {least.get(k, 0)}" for k in before.index) + ".")
    print(save(f"damage-{dataset}", pd.DataFrame(rows), note))

if __name__ == "__main__":
    main()
