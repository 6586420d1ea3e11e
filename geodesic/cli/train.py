"""`geodesic train`: train a zoo model or the user's architecture and write a checkpoint with its card."""

from __future__ import annotations

import argparse
import sys

from ..infra import threads
from ..store import checkpoints, data, zoo
from .common import progress, threads_options


def add(sub) -> None:
    t = sub.add_parser("train", help="train a zoo model, or your own architecture, on a full dataset and write a "
                                     "checkpoint + card")
    t.add_argument("--model", choices=sorted(zoo.ZOO), help="a zoo architecture")
    t.add_argument("--arch", help="your own architecture instead: FILE.py:FACTORY or package.module:FACTORY, a "
                                  "function with no arguments returning the nn.Module (the file's code runs); its "
                                  "checkpoint then loads with the same --arch")
    t.add_argument("--dataset", choices=sorted(data.FOLDERS), required=True, help="training data")
    t.add_argument("--epochs", type=int, default=8, help="passes over the 60,000 training images (default 8)")
    t.add_argument("--seed", type=int, default=0, help="initialization and data-order seed (default 0)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-decayed (default 0.001)")
    t.add_argument("--batch", type=int, default=128, help="minibatch size (default 128)")
    t.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warmup before the cosine "
                                                         "decay (default 0: none); keeps Adam's first steps from "
                                                         "killing ReLU units")
    threads_options(t)
    t.add_argument("--out", required=True, help="output .safetensors path (its .json card is written beside it)")
    t.add_argument("--force", action="store_true", help="replace an existing checkpoint and its card")
    t.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.train import evaluate, train
    from ..store.arch import normalize as normalize_arch

    out = checkpoints.check_out(args.out, args.force)  # before hours of training, not after
    threads.configure(args.threads)
    model, name = fresh_model(args)
    train_set, test_set = data.load(args.dataset, "train", "full"), data.load(args.dataset, "test", "full")
    bar = progress(1, f"train {name} on {args.dataset}")

    def on_step(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        summary = train(model, train_set, args.epochs, args.seed, lr=args.lr, batch=args.batch, progress=on_step,
                        warmup=args.warmup)
    finally:
        bar.close()
    loss, acc = evaluate(model, test_set)
    card = {"model": name, **({"arch": normalize_arch(args.arch)} if args.arch else {}), "dataset": args.dataset,
            "seed": args.seed, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
            **({"warmup": args.warmup} if args.warmup else {}),
            "optimizer": "Adam, linear warmup, cosine schedule" if args.warmup else "Adam, cosine schedule",
            "test_accuracy": round(acc, 6), "test_loss": round(loss, 6), "test_set": f"full ({len(test_set)} images)",
            "train_seconds": round(summary["seconds"], 1), "torch": torch.__version__,
            "command": "python -m geodesic " + " ".join(sys.argv[1:])}
    checkpoints.save(model, out, card)
    print(f"test accuracy {acc:.4f} (loss {loss:.4f}) after {summary['seconds']:.0f} s; wrote {out}")
    return 0


def fresh_model(args: argparse.Namespace):
    """(fresh model, its name): a zoo model, or the user's --arch (its factory's name; its code runs). The seed
    fixes the initialization either way."""
    import torch

    from ..store import arch

    if (args.model is None) == (args.arch is None):
        raise ValueError("give the architecture to train: --model NAME (the zoo) or --arch FILE.py:FACTORY")
    if args.model is not None:
        return zoo.build(args.model, seed=args.seed), args.model
    torch.manual_seed(args.seed)
    model = arch.build(args.arch)
    model.train()
    return model, arch.split_spec(args.arch)[1]
