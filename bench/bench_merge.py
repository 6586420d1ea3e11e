"""Mean network between MNIST and Fashion-MNIST (lenet60, full data): the geodesic walk from the MNIST net that
learns Fashion-MNIST while pulled toward its MNIST function, the relaxed path between the two nets, against the
straight line (weight averaging), fine-tuning the MNIST net on Fashion-MNIST, and joint training.

    python bench/bench_merge.py                  # everything (about half an hour on 1 thread)
    python bench/bench_merge.py --extra ""       # no extra walks (default: teacher ρ=0.5, labels without pull)

Writes bench/results/merge.md/.csv (the table) and bench/results/merge-curves.csv (accuracy on both full test
sets along every path: the walks every --eval-every steps, the relaxed path and the line at each point, fine-tuning
every --eval-every steps).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import pandas as pd
import torch
from common import RESULTS, ROOT, save

from geodesic.core.params import flatten
from geodesic.experiments.merge import MergeConfig, default_path, run_merge
from geodesic.store import checkpoints, data

TASKS = ("mnist", "fashion-mnist")


def row(method: str, acc_a: float, acc_b: float, seconds: float = 0.0, steps: float = float("nan")) -> dict:
    return {"method": method, "MNIST accuracy": acc_a, "Fashion-MNIST accuracy": acc_b,
            "min of the two": min(acc_a, acc_b), "seconds": seconds, "steps": steps}


def walk_name(direction: str, pull: float) -> str:
    what = "−∇CE on B's labels" if direction == "labels" else "−∇D toward B's function"
    return f"geodesic walk from A: {what}, " + (f"pull ρ={pull:g}" if pull else "no pull")


def table(s: dict, walks: dict[str, dict], curves: pd.DataFrame, cfg: MergeConfig) -> pd.DataFrame:
    line = curves[curves.method == "straight line"]
    ends = line.iloc[0], line.iloc[-1]
    rows = [row("net A (MNIST checkpoint)", ends[0].accuracy_mnist, ends[0].accuracy_fashion_mnist),
            row("net B (Fashion-MNIST checkpoint)", ends[1].accuracy_mnist, ends[1].accuracy_fashion_mnist)]
    rows += [row(f"{name} (end)", w["walk_accuracy_a"], w["walk_accuracy_b"], w["walk_seconds"], w["walk_steps"])
             for name, w in walks.items()]
    rows += [row(f"relaxed path A→B, best point (t={s['relax_best_t']:.3g})", s["relax_best_accuracy_a"],
                 s["relax_best_accuracy_b"], s["relax_seconds"], s["relax_iters"]),
             row("weight average ½(w_A + w_B) (line midpoint)", s["line_mid_accuracy_a"], s["line_mid_accuracy_b"]),
             row(f"straight line A→B, best point (t={s['line_best_t']:.3g})", s["line_best_accuracy_a"],
                 s["line_best_accuracy_b"]),
             row("fine-tune A on B (Adam, nothing frozen)", s["finetune_accuracy_a"], s["finetune_accuracy_b"],
                 s["finetune_seconds"], s["finetune_steps"]),
             row(f"joint training on A ∪ B ({cfg.joint_epochs} epoch(s) from the seed-0 init)", s["joint_accuracy_a"],
                 s["joint_accuracy_b"], s["joint_seconds"], s["joint_steps"])]
    return pd.DataFrame(rows)


def curve_rows(rows: list[dict], method: str) -> list[dict]:
    """Rows that carry accuracy on both tasks, as (method, phase, step, t, accuracy on each task)."""
    out = []
    for r in rows:
        acc_a, acc_b = r.get("accuracy", float("nan")), r.get("accuracy_b", float("nan"))
        if acc_a == acc_a and acc_b == acc_b:
            name = {"relax-path": "relaxed path", "line": "straight line", "finetune": "fine-tune A on B",
                    "joint": "joint training"}.get(r["phase"], method)
            out.append({"method": name, "phase": r["phase"], "step": r["step"], "t": r.get("t", float("nan")),
                        "accuracy_mnist": acc_a, "accuracy_fashion_mnist": acc_b})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--steps", type=int, default=300, help="walk steps")
    ap.add_argument("--eps", type=float, default=0.5, help="trust region ε of the first walk step")
    ap.add_argument("--eps-final", type=float, default=0.002, help="ε of the last walk step (cosine decay)")
    ap.add_argument("--beta", type=float, default=0.01, help="β of the tangent problem")
    ap.add_argument("--pull", type=float, default=0.5, help="ρ: pull toward A's function on MNIST images")
    ap.add_argument("--direction", choices=("labels", "teacher"), default="labels", help="walk direction")
    ap.add_argument("--eval-every", type=int, default=50, help="full-test-set accuracy every k walk/fine-tuning steps")
    ap.add_argument("--points", type=int, default=8, help="N: segments of the relaxed path and the line")
    ap.add_argument("--relax-iters", type=int, default=150, help="Adam iterations of the relaxation")
    ap.add_argument("--relax-lr", type=float, default=1e-3, help="Adam learning rate of the relaxation")
    ap.add_argument("--finetune-steps", type=int, default=300, help="Adam steps of the fine-tuning baseline")
    ap.add_argument("--joint-epochs", type=int, default=5, help="epochs of the joint-training baseline (5: about the walk's wall time)")
    ap.add_argument("--extra", default="teacher:0.5,labels:0",
                    help="more walks, DIRECTION:PULL separated by commas (\"\": none)")
    ap.add_argument("--data", choices=("full", "bundled"), default="full", help="bundled: a quick check, not results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    model, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / "lenet60-mnist.safetensors")
    model_b, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / "lenet60-fashion-mnist.safetensors")
    w_a, w_b = flatten(model), flatten(model_b)
    (train_a, test_a), (train_b, test_b) = ((data.load(t, "train", args.data), data.load(t, "test", args.data)) for t in TASKS)
    path = replace(default_path(), beta=args.beta, eps=args.eps, eps_final=args.eps_final, max_steps=args.steps,
                   eval_every=args.eval_every)
    cfg = MergeConfig(phases=("walk", "relax", "line", "finetune", "joint"), direction=args.direction,
                      pull=args.pull, eval_size=0, path=path, points=args.points, relax_iters=args.relax_iters,
                      relax_lr=args.relax_lr, finetune_steps=args.finetune_steps,
                      joint_epochs=args.joint_epochs).validate()

    def progress(r: dict) -> None:
        if r.get("accuracy", float("nan")) == r.get("accuracy", 0.0) or r["phase"] == "relax" and r["step"] % 25 == 0:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()
                   if k in ("phase", "step", "t", "accuracy", "accuracy_b", "energy", "energy_fixed", "length")},
                  flush=True)

    out = run_merge(model, w_a, w_b, train_a, train_b, test_a, test_b, cfg, on_row=progress)
    print(out.summary, flush=True)
    walks = {walk_name(cfg.direction, cfg.pull): out.summary}
    curves = curve_rows(out.rows, walk_name(cfg.direction, cfg.pull))
    for spec in filter(None, args.extra.split(",")):
        direction, pull = spec.split(":")
        extra = replace(cfg, phases=("walk",), direction=direction, pull=float(pull))
        o = run_merge(model, w_a, w_b, train_a, train_b, test_a, test_b, extra, on_row=progress)
        print(o.summary, flush=True)
        walks[walk_name(direction, float(pull))] = o.summary
        curves += curve_rows(o.rows, walk_name(direction, float(pull)))
    curves = pd.DataFrame(curves)
    df = table(out.summary, walks, curves, cfg)
    RESULTS.mkdir(parents=True, exist_ok=True)
    p = cfg.path
    note = (f"lenet60; A = the shipped MNIST net, B = the shipped Fashion-MNIST net (both trained from init seed 0); "
            f"accuracy on the full {len(test_a):,}-image test sets of both tasks; one set of 10 outputs serves both tasks. "
            f"Walks: v = −∇CE (labels) or −∇D(w, w_B) (B's function, √softmax) on {cfg.learn_batch} fresh Fashion-MNIST "
            f"images + ρ|v|p̂, p̂ ∝ −∇D(w, w_A) on {cfg.pull_batch} fresh MNIST images; metric on {p.probe} MNIST images ({p.phi}), "
            f"β = {p.beta:g}, ε cosine-decayed from {p.eps:g} to {p.eps_final:g} over {p.max_steps} steps. "
            f"Relaxation: N = {cfg.points} segments from the straight line, E = N Σ D(w_i, w_i+1) (√softmax) on "
            f"{cfg.relax_batch} + {cfg.relax_batch} fresh images of both tasks per Adam iteration (lr {cfg.relax_lr:g}, "
            f"cosine); fixed-batch energy {out.summary['relax_energy_start']:.4g} → {out.summary['relax_energy_end']:.4g}. "
            f"Best point on a path: max over its points of min(MNIST, Fashion-MNIST accuracy). Fine-tuning: Adam "
            f"lr {cfg.finetune_lr:g}, batch {cfg.batch}, on Fashion-MNIST only. Joint training: Adam lr {cfg.joint_lr:g} "
            f"(cosine), batch {cfg.batch}, {cfg.joint_epochs} epoch(s) over the {len(train_a) + len(train_b):,} training images of both sets. "
            f"Seconds: wall time on this shared 2-core CPU with {args.threads} torch thread(s), evaluation excluded "
            f"(load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end). Curves along every path: "
            f"bench/results/merge-curves.csv.")
    name = "merge" if args.data == "full" else "merge-bundled-check"
    curves.to_csv(RESULTS / f"{name}-curves.csv", index=False)
    print(save(name, df, note))


if __name__ == "__main__":
    main()
