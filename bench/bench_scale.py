"""A net of about 5 M weights, brought as a user brings one, sparsified to half its channel groups.

    python bench/bench_scale.py [--dataset fashion-mnist] [--epochs 2] [--threads 2] [sparsify flags after --]

The net is bench/archs/resnet5m.py:resnet5m (4.8 M weights, BatchNorm, projection skips). Both steps are the
command line a user runs, timed as wall seconds:
1. `geodesic train --arch … --epochs E --threads T` (skipped when bench/out/scale/ holds the checkpoint);
2. `geodesic sparsify --arch … --fraction 0.5 --threads T` with the setting below for nets of this
   size (any `-- FLAGS` replace it): the probe, pull and relaxation batches smaller than the defaults benchmarked
   on 80 k-weight nets, because at 4.8 M weights one step's gradient of 256 images costs more than K itself.
Dense and sparse accuracy on the full test set, the groups zeroed, the steps and the wall time go to
bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pandas as pd
from common import ROOT, save

from geodesic.core.train import evaluate
from geodesic.store import arch, checkpoints, data, runs

ARCH = f"{ROOT / 'bench' / 'archs' / 'resnet5m.py'}:resnet5m"
OUT = ROOT / "bench" / "out" / "scale"
SETTING = ["--probe", "8", "--eps", "0.3", "--pull-batch", "64", "--relax-steps", "100", "--eval-every", "25",
           "--snapshot-every", "50"]


def geodesic(*args: str) -> float:
    """`python -m geodesic ARGS` (its progress bar on stderr); wall seconds. Stops the bench when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "geodesic", *args], cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"geodesic {args[0]} failed with exit code {r.returncode}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("sparsify", nargs="*", help="sparsify flags replacing the setting (after --)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = OUT / f"resnet5m-{a.dataset}.safetensors"
    if not ckpt.exists():
        geodesic("train", "--arch", ARCH, "--dataset", a.dataset, "--epochs", str(a.epochs), "--threads",
                 str(a.threads), "--out", str(ckpt))
    card = json.loads(ckpt.with_suffix(".json").read_text())
    setting = a.sparsify or SETTING
    run = OUT / f"sparsify-{a.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    wall = geodesic("sparsify", "--arch", ARCH, "--checkpoint", str(ckpt), "--fraction", "0.5", "--threads",
                    str(a.threads), *setting, "--out", str(run))
    load1 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    r = runs.load_run(run)
    sparse, _ = checkpoints.load(run / "final.safetensors", arch=ARCH)
    test = data.load(a.dataset, "test", "full")
    _, accuracy = evaluate(sparse, test)
    rows = r.metrics
    summary = r.meta["summary"]
    walk = rows[rows["phase"] == "walk"]
    df = pd.DataFrame([{
        "weights": sum(p.numel() for p in arch.build(ARCH).parameters()),
        "groups zeroed": f"{summary['groups_zero']} (target {len(r.meta['target_groups'])}, half of all)",
        "dense accuracy": card["test_accuracy"],
        "sparse accuracy": accuracy,
        "status": r.meta["status"],
        "walk steps": int(walk["step"].max()),
        "all steps": int(rows["step"].max()),
        "s per step": float((rows["t_jacobian"] + rows["t_solve"] + rows["t_other"]).median()),
        "sparsify wall min": wall / 60,
        "train wall min": card["train_seconds"] / 60,
    }])
    note = (f"bench/archs/resnet5m.py on {a.dataset}, brought with --arch: trained {card['epochs']} epochs "
            f"(`geodesic train --arch`, {a.threads} threads), then `geodesic sparsify --fraction 0.5 --threads "
            f"{a.threads} {' '.join(setting)}` (its accuracy along the path on {r.meta['eval_images']} test images); "
            f"dense and sparse accuracy afterwards on the full test set ({len(test)} images). "
            f"Load average {load0} at the start of sparsify, {load1} at its end, on {os.cpu_count()} cores.")
    print(save(f"scale-{a.dataset}", df, note))


if __name__ == "__main__":
    main()
