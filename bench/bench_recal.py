"""What label-free BatchNorm recalibration does for magnitude pruning of resnet8, and how many images it needs.

At a quarter and at half of the net's groups (the sweep's `--fractions 0.25,0.5`, the same smallest
layer-normalized groups as the sweep's `magnitude`), the masked net is scored on the full test set with the dense
net's BatchNorm statistics, then with statistics re-estimated (geodesic.experiments.recalibrate) on N unlabeled training
images, N from 64 to 4,096, three seeded draws each; the sweep's "+recal" variants use recalibrate.IMAGES.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch
from common import ROOT, save

from geodesic.core.metric import functional_distance, mapped_outputs
from geodesic.core.params import flatten
from geodesic.core.path import Evaluation
from geodesic.experiments import recalibrate
from geodesic.experiments.baselines import magnitude_prune
from geodesic.store import checkpoints, zoo
from geodesic.store.data import load

FRACTIONS = (0.25, 0.5)
COUNTS = (64, recalibrate.IMAGES, 4096)
DRAWS = (0, 1, 2)
DISTANCE_IMAGES = 1000  # the first test images, for D to dense (the accuracy takes all of them)


def score(model, w, test, dense: torch.Tensor) -> dict:
    """Accuracy and loss on the test set, and D(w, w0) on its first images against the dense net's outputs there
    (the dense net with its own statistics)."""
    loss, acc = Evaluation(test.x, test.y).scores(model, w)
    d = functional_distance(model, w, None, test.x[:DISTANCE_IMAGES], ref=dense)
    return {"accuracy": acc, "loss": loss, "D to dense": d}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="fashion-mnist")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    train, test = load(args.dataset, "train", "full"), load(args.dataset, "test", "full")
    path = ROOT / "assets" / "checkpoints" / f"resnet8-{args.dataset}.safetensors"
    model, _ = checkpoints.load(path)
    w0, groups = flatten(model), zoo.filter_groups(model)
    dense_stats = {k: v.clone() for k, v in model.state_dict().items()}
    dense = mapped_outputs(model, w0, test.x[:DISTANCE_IMAGES])
    rows = []
    for q in FRACTIONS:
        count = round(q * len(groups))
        w, _ = magnitude_prune(w0, groups, count)
        base = {"groups zeroed": f"{count} of {len(groups)}"}
        rows.append({**base, "recal images": 0, "draw": "-", **score(model, w, test, dense), "recal CPU s": 0.0})
        print(rows[-1], flush=True)
        for n in COUNTS:
            for seed in DRAWS:
                t0 = time.process_time()
                recalibrate.recalibrate(model, w, recalibrate.images(train, seed, n))
                seconds = time.process_time() - t0
                rows.append({**base, "recal images": n, "draw": seed, **score(model, w, test, dense),
                             "recal CPU s": seconds})
                print(rows[-1], flush=True)
                model.load_state_dict(dense_stats)  # the next draw starts from the dense net again
    df = pd.DataFrame(rows)
    summary = (df[df["recal images"] > 0].groupby(["groups zeroed", "recal images"], sort=False)["accuracy"]
               .agg(["mean", "std"]).reset_index())
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    note = (f"resnet8 on {args.dataset} ({path.name}, dense accuracy {score(model, w0, test, dense)['accuracy']:.4f}), "
            f"magnitude pruning without any training; full test set ({len(test):,} images), one thread. recal "
            "images 0: the dense net's BatchNorm statistics; otherwise re-estimated on that many unlabeled training "
            f"images (draw: the seed of the images' permutation), one train-mode forward pass. D to dense: mean "
            f"|√softmax f(x, w) − √softmax f(x, w0)|² over the first {DISTANCE_IMAGES:,} test images, the dense "
            "net with its own statistics. "
            "Mean ± sd over the three draws: "
            + "; ".join(f"{r['groups zeroed']} with {r['recal images']} images {r['mean']:.4f} ± {r['std']:.4f}"
                        for _, r in summary.iterrows())
            + f". {time.process_time():.0f} CPU s, {time.perf_counter() - t_start:.0f} s wall; load average at the "
              f"end: {load_avg}.")
    print(save(f"recal-resnet8-{args.dataset}", df, note))


if __name__ == "__main__":
    main()
