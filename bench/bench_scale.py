"""A net of about 5 M weights, brought as a user brings one, sparsified to half its channel groups.

    python bench/bench_scale.py [--arch resnet5m] [--dataset fashion-mnist] [--epochs 2] [--threads 2]
                                [--sparsify-threads 1] [sparsify flags after --]

The net is bench/archs/ARCH.py:ARCH: resnet5m (4.8 M weights, BatchNorm, projection skips, written by hand) or
tvresnet (torchvision's own ResNet class, 4.9 M weights, with its 7×7 stem and max pooling). Both steps are the
command line a user runs, timed as wall seconds:
1. `geodesic train --arch … --epochs E --threads T` (skipped when bench/out/scale/ holds the checkpoint);
2. `geodesic sparsify --arch … --fraction 0.5 --threads S` with the defaults (one thread, the default budget of
   CPU seconds), recording accuracy every 25 steps; any `-- FLAGS` are added to it.
The checkpoint's card says where it was trained (its command and torch version).
Dense and sparse accuracy on the full test set, the groups zeroed, the batches the budget fitted
(sparsify.fit_batches), the steps and the wall time go to
bench/results/scale-DATASET.md (resnet5m) or scale-ARCH-DATASET.md.
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

OUT = ROOT / "bench" / "out" / "scale"
RECORD = ["--eval-every", "25", "--snapshot-every", "50"]  # what is recorded along the path, not how it walks


def geodesic(*args: str) -> float:
    """`python -m geodesic ARGS` (its progress bar on stderr); wall seconds. Stops the bench when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "geodesic", *args], cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"geodesic {args[0]} failed with exit code {r.returncode}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet5m", choices=("resnet5m", "tvresnet"), help="bench/archs/ARCH.py:ARCH")
    ap.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sparsify-threads", type=int, default=1, help="torch threads of sparsify (its default: 1)")
    ap.add_argument("--name", default=None, help="the result's name (default scale-DATASET or scale-ARCH-DATASET)")
    ap.add_argument("sparsify", nargs="*", help="sparsify flags added to the defaults (after --)")
    a = ap.parse_args()
    spec = f"{ROOT / 'bench' / 'archs' / a.arch}.py:{a.arch}"
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = OUT / f"{a.arch}-{a.dataset}.safetensors"
    if not ckpt.exists():
        geodesic("train", "--arch", spec, "--dataset", a.dataset, "--epochs", str(a.epochs), "--threads",
                 str(a.threads), "--out", str(ckpt))
    card = json.loads(ckpt.with_suffix(".json").read_text())
    setting = [*RECORD, *a.sparsify]
    run = OUT / f"sparsify-{a.arch}-{a.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    load0 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    wall = geodesic("sparsify", "--arch", spec, "--checkpoint", str(ckpt), "--fraction", "0.5", "--threads",
                    str(a.sparsify_threads), *setting, "--out", str(run))
    load1 = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    r = runs.load_run(run)
    sparse, _ = checkpoints.load(run / "final.safetensors", arch=spec)
    test = data.load(a.dataset, "test", "full")
    _, accuracy = evaluate(sparse, test)
    rows = r.metrics
    phases = rows.groupby("phase")["step"].count().to_dict()
    summary = r.meta["summary"]
    walk = rows[rows["phase"] == "walk"]
    df = pd.DataFrame([{
        "weights": sum(p.numel() for p in arch.build(spec).parameters()),
        "groups zeroed": f"{summary['groups_zero']} (target {len(r.meta['target_groups'])}, half of all)",
        "dense accuracy": card["test_accuracy"],
        "sparse accuracy": accuracy,
        "status": r.meta["status"],
        "batches (probe, pull)": f"{r.meta['config']['path']['probe']}, {r.meta['config']['pull_batch']}",
        "walk steps": int(walk["step"].max()),
        "after the walk": ", ".join(f"{p} {n}" for p, n in phases.items() if p not in ("walk", "snap")) or "-",
        "all steps": int(rows["step"].max()),
        "s per walk step": float((walk["t_jacobian"] + walk["t_solve"] + walk["t_other"] + walk["t_check"]).median()),
        "sparsify wall min": wall / 60,
        "train wall min": card["train_seconds"] / 60,
    }])
    note = (f"bench/archs/{a.arch}.py on {a.dataset}, brought with --arch: trained {card['epochs']} epochs "
            f"(`{card.get('command', 'geodesic train --arch')}`, torch {card.get('torch', '?')}), then `geodesic sparsify --fraction 0.5 --threads "
            f"{a.sparsify_threads} {' '.join(setting)}` (its accuracy along the path on {r.meta['eval_images']} test images); "
            f"dense and sparse accuracy afterwards on the full test set ({len(test)} images). "
            f"Load average {load0} at the start of sparsify, {load1} at its end, on {os.cpu_count()} cores.")
    name = a.name or (f"scale-{a.dataset}" if a.arch == "resnet5m" else f"scale-{a.arch}-{a.dataset}")
    print(save(name, df, note))


if __name__ == "__main__":
    main()
