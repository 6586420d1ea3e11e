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
