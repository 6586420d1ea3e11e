"""Command line: `python -m geodesic COMMAND …` (`--help` on each command lists its options)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from . import data, models
from .train import evaluate, train


def positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def positive_float(s: str) -> float:
    v = float(s)
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {s}")
    return v


def nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {s}")
    return v


def nonneg_float(s: str) -> float:
    v = float(s)
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {s}")
    return v


def cmd_fetch_data(args: argparse.Namespace) -> int:
    done = data.fetch(Path(args.root) if args.root else None)
    root = Path(args.root) if args.root else data.data_root()
    for name in data.FOLDERS:
        for split in ("train", "test"):
            s = data.load_full(name, split, root)
            print(f"{name:14s} {split:5s} {len(s):6d} images  ({'installed now' if name in done else 'present'})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    train_set, test_set = data.load(args.dataset, "train", "full"), data.load(args.dataset, "test", "full")
    model = models.build(args.model, seed=args.seed)
    bar = tqdm(total=1, desc=f"train {args.model} on {args.dataset}", unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    summary = train(model, train_set, args.epochs, args.seed, lr=args.lr, batch=args.batch, progress=progress)
    bar.close()
    loss, acc = evaluate(model, test_set)
    card = {
        "model": args.model, "dataset": args.dataset, "seed": args.seed, "epochs": args.epochs,
        "batch": args.batch, "lr": args.lr, "optimizer": "Adam, cosine schedule",
        "test_accuracy": round(acc, 6), "test_loss": round(loss, 6), "test_set": f"full ({len(test_set)} images)",
        "train_seconds": round(summary["seconds"], 1), "torch": torch.__version__,
        "command": "python -m geodesic " + " ".join(sys.argv[1:]),
    }
    card = models.save(model, args.out, card)
    print(f"test accuracy {acc:.4f} (loss {loss:.4f}) after {summary['seconds']:.0f} s; wrote {args.out}")
    return 0


def cmd_sparsify(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from .experiments import SparsifyConfig, candidate_configs, run_sparsify, shortest
    from .params import flatten
    from .path import Evaluation, PathConfig
    from .runs import RunWriter

    if args.threads:
        torch.set_num_threads(args.threads)
    model, card = models.load(args.checkpoint, args.model)
    dataset = args.dataset or card.get("dataset")
    if dataset not in data.FOLDERS:
        raise ValueError(f"say which data the net was trained on: --dataset {{{', '.join(data.FOLDERS)}}}")
    groups = models.filter_groups(model)
    if not 1 <= args.filters <= len(groups):
        raise ValueError(f"--filters must be between 1 and {len(groups)} for {card['model']}, got {args.filters}")
    train_set, test_set = data.load(dataset, "train", args.data), data.load(dataset, "test", args.data)
    if args.eval_size:
        test_set.x, test_set.y = test_set.x[: args.eval_size], test_set.y[: args.eval_size]
    path_cfg = PathConfig(phi=args.phi, beta=args.beta, eps=args.eps, probe=args.probe, seed=args.seed,
                          max_steps=args.max_steps, eval_every=args.eval_every, snapshot_every=args.snapshot_every,
                          solver=args.solver)
    base = SparsifyConfig(filters=args.filters, strategy=args.strategy, pull=args.pull, pull_batch=args.pull_batch,
                          relax_steps=args.relax_steps, relax_eps=args.relax_eps,
                          relax_eps_final=args.relax_eps_final, path=path_cfg).validate()
    configs = candidate_configs(base, args.paths)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose a new --out folder (nothing was overwritten)")
    if out.is_dir():
        out.rmdir()  # an empty folder given: the run writer creates it anew
    w0 = flatten(model)
    evaluation = Evaluation(test_set.x, test_set.y)
    outcomes, rows = [], []
    for i, cfg in enumerate(configs):
        meta = {"kind": "sparsify", "model": card["model"], "checkpoint": str(args.checkpoint), "dataset": dataset,
                "data_source": train_set.source, "eval_images": len(test_set), "candidate": i}
        if len(configs) == 1:
            writer = RunWriter(meta, root=out.parent, run_id=out.name)
        else:
            writer = RunWriter(meta, root=out, run_id=f"path{i}-{cfg.strategy}-seed{cfg.path.seed}")
        bar = tqdm(total=cfg.path.max_steps + cfg.relax_steps, desc=f"path {i + 1}/{len(configs)} ({cfg.strategy})",
                   unit="step", mininterval=0.5)

        def on_step(s, bar=bar):
            bar.set_postfix(zero=s.groups_zero, D=f"{s.distance:.4f}", T=f"{s.target_norm:.3f}", phase=s.phase, refresh=False)
            bar.update(s.step - bar.n)

        try:
            o = run_sparsify(model, w0, groups, cfg, train_set, evaluation, writer=writer, on_step=on_step)
        finally:
            bar.close()
        outcomes.append(o)
        rows.append({"path": writer.id, "strategy": cfg.strategy, "seed": cfg.path.seed, **o.summary()})
    best = shortest(outcomes)
    table = pd.DataFrame(rows)
    table["shortest"] = [i == best for i in range(len(rows))]
    if len(configs) > 1:
        (out / "candidates.json").write_text(json.dumps(table.to_dict(orient="records"), indent=2, default=str))
    print(table.to_string(index=False))
    print(f"shortest: {rows[best]['path']} (length {rows[best]['length']:.4f}, accuracy {rows[best]['accuracy']:.4f} on {len(test_set)} {test_set.source} test images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m geodesic", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch-data", help="install full MNIST and Fashion-MNIST as raw idx files (offline registries only)")
    f.add_argument("--root", help="data folder (default: $GEODESIC_DATA or <repo>/data)")
    f.set_defaults(fn=cmd_fetch_data)

    t = sub.add_parser("train", help="train a zoo model on a full dataset and write a checkpoint + card")
    t.add_argument("--model", choices=sorted(models.ZOO), required=True, help="architecture")
    t.add_argument("--dataset", choices=sorted(data.FOLDERS), required=True, help="training data")
    t.add_argument("--epochs", type=positive_int, default=8, help="passes over the 60,000 training images")
    t.add_argument("--seed", type=int, default=0, help="initialization and data-order seed")
    t.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (cosine-decayed)")
    t.add_argument("--batch", type=positive_int, default=128, help="minibatch size")
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    t.add_argument("--out", required=True, help="output .safetensors path (card written beside it)")
    t.set_defaults(fn=cmd_train)

    from .experiments import STRATEGIES
    from .metric import OUTPUT_MAPS

    s = sub.add_parser("sparsify", help="walk a trained net along a short path until whole filters are zero",
                       description="Walk a checkpoint along geodesic tangent steps until FILTERS whole conv "
                                   "filters (or hidden neurons for mlp) are exactly zero; write a run folder.")
    s.add_argument("--checkpoint", required=True, help=".safetensors checkpoint with its .json card")
    s.add_argument("--model", choices=sorted(models.ZOO), help="architecture, for a checkpoint without a .json card")
    s.add_argument("--filters", type=positive_int, default=50, help="number of filters to zero (lenet60 has 60)")
    s.add_argument("--out", required=True, help="run folder to create (with --paths K > 1: a folder of K run folders)")
    s.add_argument("--paths", type=positive_int, default=1, help="candidate paths (strategies in turn, then seeds); the shortest is reported")
    s.add_argument("--strategy", choices=STRATEGIES, default="norm", help="which filters to zero (for --paths 1)")
    s.add_argument("--dataset", choices=sorted(data.FOLDERS), help="data of the metric and evaluation (default: the card's)")
    s.add_argument("--data", choices=("auto", "full", "bundled"), default="auto", help="full sets or the bundled subsets")
    s.add_argument("--phi", choices=sorted(OUTPUT_MAPS), default="sqrt_probs", help="output map of the metric")
    s.add_argument("--beta", type=positive_float, default=0.01, help="weight β of the direction term")
    s.add_argument("--eps", type=positive_float, default=0.01, help="trust region ε (|θ|² ≤ ε)")
    s.add_argument("--probe", type=positive_int, default=32, help="probe batch size B (J has B·10 rows)")
    s.add_argument("--seed", type=int, default=0, help="probe-batch and choice seed")
    s.add_argument("--max-steps", type=positive_int, default=400, help="step cap of the walk")
    s.add_argument("--pull", type=nonneg_float, default=0.0, help="ρ: pull toward the start's function on the free weights, v + ρ|v| p̂ with p̂ ∝ −∇D (0: the literal algorithm)")
    s.add_argument("--pull-batch", type=positive_int, default=256, help="images per pull gradient")
    s.add_argument("--relax-steps", type=nonneg_int, default=0, help="geodesic restore steps inside the hyperplane after arrival")
    s.add_argument("--relax-eps", type=positive_float, default=0.1, help="trust region ε of the first relaxation step")
    s.add_argument("--relax-eps-final", type=positive_float, default=0.002, help="ε of the last relaxation step (cosine decay)")
    s.add_argument("--solver", choices=("gram", "explicit"), default="gram", help="K = JJᵀ layer by layer (J never stored) or explicit J")
    s.add_argument("--eval-every", type=positive_int, default=10, help="evaluate accuracy every k steps")
    s.add_argument("--eval-size", type=positive_int, default=2000, help="test images used for accuracy along the path")
    s.add_argument("--snapshot-every", type=positive_int, default=5, help="keep the weights every k steps")
    s.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    s.set_defaults(fn=cmd_sparsify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (data.DataMissing, models.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
