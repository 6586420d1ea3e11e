"""Command line: `python -m geodesic COMMAND …` (`--help` on each command lists its options)."""

from __future__ import annotations

import argparse
import math
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

    from .experiments import candidate_configs, run_sparsify, shortest
    from .params import flatten
    from .path import Evaluation
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
    base = sparsify_config(args)
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


def _fresh_out(out: Path) -> Path:
    """Refuse a non-empty --out (nothing is overwritten); an empty folder is removed so the run writer makes it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not empty; choose a new --out folder (nothing was overwritten)")
    if out.is_dir():
        out.rmdir()
    return out


def _eval_split(split: data.Split, size: int) -> data.Split:
    if size:
        split.x, split.y = split.x[:size], split.y[:size]
    return split


def _checkpoint_and_data(args: argparse.Namespace) -> tuple:
    """(model, card, dataset, train split, test split) for a --checkpoint command."""
    model, card = models.load(args.checkpoint, args.model)
    dataset = args.dataset or card.get("dataset")
    if dataset not in data.FOLDERS:
        raise ValueError(f"say which data the net was trained on: --dataset {{{', '.join(data.FOLDERS)}}}")
    return model, card, dataset, data.load(dataset, "train", args.data), data.load(dataset, "test", args.data)


def cmd_damage(args: argparse.Namespace) -> int:
    from . import damage as dmg
    from .params import flatten, spec_of
    from .path import Evaluation
    from .recovery import DamageConfig, run_damage, summarize
    from .runs import RunWriter

    torch.set_num_threads(args.threads)
    model, card, dataset, _, test_set = _checkpoint_and_data(args)
    test_set = _eval_split(test_set, args.eval_size)
    cfg = DamageConfig(args.kind, (args.level,), tuple(range(args.seed, args.seed + args.seeds)),
                       tuple(args.layers) if args.layers else None, args.among).validate()
    groups, w0 = models.filter_groups(model), flatten(model)
    if cfg.kind == "ablate" and args.level > len(groups):
        raise ValueError(f"--level: {card['model']} has {len(groups)} filters, cannot ablate {args.level:g}")
    if cfg.layers:
        dmg.layer_mask(spec_of(model), list(cfg.layers))  # unknown layers: an error before any folder is made
    out = _fresh_out(Path(args.out))
    writer = RunWriter({"kind": "damage", "model": card["model"], "checkpoint": str(args.checkpoint),
                        "dataset": dataset, "data_source": test_set.source}, root=out.parent, run_id=out.name)
    bar = tqdm(total=len(cfg.seeds), desc=f"damage {cfg.kind} {args.level:g}", unit="seed")
    try:
        result = run_damage(model, {"checkpoint": w0}, groups, cfg, Evaluation(test_set.x, test_set.y), writer,
                            on_row=lambda r: (bar.set_postfix(accuracy=f"{r['accuracy']:.4f}"), bar.update(1)))
    finally:
        bar.close()
    cols = ["seed", "accuracy_before", "accuracy", "drop", "damaged", "filters_lost"]
    print(result.table[cols].to_string(index=False))
    s = summarize(result.table).iloc[0]
    print(f"drop {s.drop_mean:.4f} ± {s.drop_sd:.4f} over {s.seeds} seed(s) on {len(test_set)} {test_set.source} "
          f"test images; run folder {writer.dir}")
    return 0


def _damage_from_run(args: argparse.Namespace) -> tuple:
    """(model, meta, w_ref, w_damaged, frozen) from a damage run folder."""
    from .recovery import load_damage
    from .runs import load_run

    run = load_run(args.from_run)
    if run.meta.get("kind") != "damage":
        raise ValueError(f"{args.from_run} is a {run.meta.get('kind')!r} run, not a damage run")
    given = [f"--{k}" for k in ("kind", "level", "layers") if getattr(args, k) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: the damage comes from --from-run, do not give damage options")
    final, dam = run.final(), load_damage(run.dir)
    return models.build(run.meta["model"]), run.meta, final["w_start"], final["w"], dam["frozen"]


def cmd_recover(args: argparse.Namespace) -> int:
    from . import damage as dmg
    from .params import flatten, spec_of
    from .path import Evaluation, PathConfig
    from .recovery import DamageConfig, RecoveryConfig, run_recover
    from .runs import RunWriter

    torch.set_num_threads(args.threads)
    steps = args.steps if args.steps or args.seconds or args.grad_evals else 200
    cfg = RecoveryConfig(method=args.method, steps=steps, seconds=args.seconds, grad_evals=args.grad_evals,
                         eval_every=args.eval_every, within=args.within, stop_when_recovered=args.stop_when_recovered,
                         seed=args.seed, restore_batch=args.restore_batch, lr=args.lr, momentum=args.momentum,
                         batch=args.batch, path=PathConfig(phi=args.phi, beta=args.beta, eps=args.eps,
                                                           probe=args.probe, solver=args.solver)).validate()
    if args.from_run:
        model, src, w_ref, w_d, frozen = _damage_from_run(args)
        dataset, damage_meta = args.dataset or src["dataset"], {"from_run": str(args.from_run), **src["config"]}
        train_set, test_set = data.load(dataset, "train", args.data), data.load(dataset, "test", args.data)
        checkpoint, model_name = src.get("checkpoint"), src["model"]
    else:
        if args.checkpoint is None or args.kind is None or args.level is None:
            raise ValueError("give --checkpoint with --kind and --level, or --from-run DAMAGE_RUN")
        model, card, dataset, train_set, test_set = _checkpoint_and_data(args)
        dcfg = DamageConfig(args.kind, (args.level,), (args.seed,), tuple(args.layers) if args.layers else None,
                            args.among).validate()
        w_ref, groups = flatten(model), models.filter_groups(model)
        w_d, mask = dmg.damage(w_ref, spec_of(model), groups, dcfg.kind, args.level, args.seed,
                               list(dcfg.layers) if dcfg.layers else None, dcfg.among)
        frozen, damage_meta, checkpoint = dmg.frozen(dcfg.kind, mask), dcfg.as_dict(), str(args.checkpoint)
        model_name = card["model"]
    test_set = _eval_split(test_set, args.eval_size)
    out = _fresh_out(Path(args.out))
    writer = RunWriter({"kind": "recover", "model": model_name, "checkpoint": checkpoint,
                        "dataset": dataset, "data_source": train_set.source, "method": cfg.method,
                        "damage": damage_meta}, root=out.parent, run_id=out.name)
    bar = tqdm(total=cfg.steps, desc=f"recover ({cfg.method})", unit="step", mininterval=0.5)

    def on_row(r: dict) -> None:
        bar.set_postfix(accuracy=f"{r['accuracy']:.4f}", D=f"{r['distance']:.4f}", refresh=False)
        bar.update(r["step"] - bar.n)

    try:
        o = run_recover(model, w_ref, w_d, frozen, cfg, train_set, Evaluation(test_set.x, test_set.y),
                        models.filter_groups(model), writer, on_row=on_row)
    finally:
        bar.close()
    s = o.summary()
    print(o.curve[["step", "seconds", "grad_evals", "accuracy", "distance"]].to_string(index=False))
    reached = "never" if math.isnan(s["within_step"]) else (
        f"at step {s['within_step']:.0f} ({s['within_seconds']:.1f} s, {s['within_grad_evals']:.0f} gradient evaluations)")
    print(f"accuracy {s['accuracy_damaged']:.4f} -> {s['accuracy']:.4f} (before damage {s['accuracy_before']:.4f}) "
          f"on {len(test_set)} {test_set.source} test images; within {cfg.within:g}: {reached}; run folder {writer.dir}")
    return 0


def _merge_inputs(args: argparse.Namespace) -> tuple:
    """(model, card_a, w_a, w_b, task_a, task_b) from --a and --b; refuses two different architectures."""
    from .params import flatten

    model, card_a = models.load(args.a, args.model)
    model_b, card_b = models.load(args.b, args.model)
    if card_a["model"] != card_b["model"]:
        raise ValueError(f"--a is a {card_a['model']} and --b is a {card_b['model']}: a merge needs two nets of "
                         f"one architecture")
    tasks = (args.task_a or card_a.get("dataset"), args.task_b or card_b.get("dataset"))
    for flag, task in zip(("--task-a", "--task-b"), tasks):
        if task not in data.FOLDERS:
            raise ValueError(f"say which data the net was trained on: {flag} {{{', '.join(data.FOLDERS)}}}")
    return model, card_a, flatten(model), flatten(model_b), *tasks


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import MergeConfig, run_merge
    from .path import PathConfig
    from .runs import RunWriter

    torch.set_num_threads(args.threads)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    path = PathConfig(phi=args.phi, beta=args.beta, eps=args.eps, eps_final=args.eps_final, probe=args.probe,
                      seed=args.seed, max_steps=args.steps, eval_every=args.eval_every,
                      snapshot_every=args.snapshot_every)
    cfg = MergeConfig(phases=phases, direction=args.direction, pull=args.pull, learn_batch=args.learn_batch,
                      pull_batch=args.pull_batch, eval_size=args.eval_size, path=path, points=args.points,
                      relax_iters=args.relax_iters, relax_lr=args.relax_lr, relax_batch=args.relax_batch,
                      finetune_steps=args.finetune_steps, joint_epochs=args.joint_epochs).validate()
    model, card, w_a, w_b, task_a, task_b = _merge_inputs(args)
    train_a, test_a = data.load(task_a, "train", args.data), data.load(task_a, "test", args.data)
    train_b, test_b = data.load(task_b, "train", args.data), data.load(task_b, "test", args.data)
    out = _fresh_out(Path(args.out))
    writer = RunWriter({"kind": "merge", "model": card["model"], "checkpoint": str(args.a), "checkpoint_b": str(args.b),
                        "dataset": task_a, "task_b": task_b, "data_source": train_a.source,
                        "eval_images": len(test_a)}, root=out.parent, run_id=out.name)
    total = (args.steps if "walk" in phases else 0) + (args.relax_iters if "relax" in phases else 0)
    bar = tqdm(total=total, desc=f"merge {task_a} + {task_b}", unit="step", mininterval=0.5)

    def on_row(r: dict) -> None:
        bar.set_description(f"merge: {r['phase']}", refresh=False)
        if r["phase"] in ("walk", "relax") and r["step"] > 0:
            bar.update(1)
        if not math.isnan(r.get("accuracy_b", math.nan)):
            bar.set_postfix(A=f"{r['accuracy']:.4f}", B=f"{r['accuracy_b']:.4f}", refresh=False)

    try:
        o = run_merge(model, w_a, w_b, train_a, train_b, test_a, test_b, cfg, writer, on_row=on_row)
    finally:
        bar.close()
    s = o.summary
    labels = {"walk": "walk (end)", "relax_best": "relaxed path (best point)", "line_best": "straight line (best point)",
              "line_mid": "weight average (midpoint)", "finetune": "fine-tune A on B", "joint": "joint training"}
    for key, label in labels.items():
        if f"{key}_accuracy_a" in s:
            print(f"{label:28s} {task_a} {s[f'{key}_accuracy_a']:.4f}   {task_b} {s[f'{key}_accuracy_b']:.4f}")
    print(f"status {o.status}; accuracy on {len(test_a)} + {len(test_b)} {test_a.source} test images; "
          f"run folder {writer.dir}")
    return 0


def sparsify_config(args: argparse.Namespace):
    """The SparsifyConfig that `sparsify`'s options describe (validated)."""
    from .experiments import SparsifyConfig
    from .path import PathConfig

    path_cfg = PathConfig(phi=args.phi, beta=args.beta, eps=args.eps, probe=args.probe, seed=args.seed,
                          max_steps=args.max_steps, eval_every=args.eval_every, snapshot_every=args.snapshot_every,
                          solver=args.solver)
    return SparsifyConfig(filters=args.filters, strategy=args.strategy, pull=args.pull, pull_batch=args.pull_batch,
                          relax_steps=args.relax_steps, relax_eps=args.relax_eps,
                          relax_eps_final=args.relax_eps_final, path=path_cfg).validate()


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
    from .damage import AMONG, KINDS
    from .recovery import METHODS

    def damage_options(c: argparse.ArgumentParser, required: bool) -> None:
        c.add_argument("--kind", choices=KINDS, required=required, default=None,
                       help="zero: a random fraction of weights; ablate: whole filters/neurons; noise: Gaussian noise")
        c.add_argument("--level", type=nonneg_float, required=required, default=None,
                       help="zero: fraction in [0, 1]; ablate: number of filters; noise: scale × each tensor's std")
        c.add_argument("--layers", nargs="+", default=None,
                       help="zero/noise only these layers (e.g. conv2 fc1; default: all)")
        c.add_argument("--among", choices=AMONG, default="all",
                       help="ablate: pick among all filters (may hit ones already zero) or only nonzero ones")
        c.add_argument("--model", choices=sorted(models.ZOO), help="architecture, for a checkpoint without a .json card")
        c.add_argument("--dataset", choices=sorted(data.FOLDERS), help="evaluation data (default: the card's)")
        c.add_argument("--data", choices=("auto", "full", "bundled"), default="auto", help="full sets or the bundled subsets")
        c.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")

    d = sub.add_parser("damage", help="damage a net with several seeds and measure the accuracy drop",
                       description="Damage a checkpoint (seeds SEED … SEED+SEEDS−1), measure test accuracy before and "
                                   "after; write a run folder: one metrics row per seed, the first seed's damaged "
                                   "weights (final.safetensors) and its mask (damage.safetensors).")
    d.add_argument("--checkpoint", required=True, help=".safetensors checkpoint with its .json card")
    damage_options(d, required=True)
    d.add_argument("--seeds", type=positive_int, default=5, help="number of damage seeds")
    d.add_argument("--seed", type=nonneg_int, default=0, help="first damage seed")
    d.add_argument("--eval-size", type=nonneg_int, default=0, help="test images for accuracy (0: all)")
    d.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    d.set_defaults(fn=cmd_damage)

    r = sub.add_parser("recover", help="recover a damaged net: geodesic restore, SGD or Adam, damaged weights frozen",
                       description="Damage a checkpoint (or take a damage run folder) and walk back toward the "
                                   "pre-damage net with the damaged coordinates frozen (noise: none frozen); "
                                   "accuracy along the way; write a run folder.")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help=".safetensors checkpoint to damage (with --kind and --level)")
    src.add_argument("--from-run", help="a damage run folder: recover its first seed's damaged weights")
    damage_options(r, required=False)
    r.add_argument("--seed", type=nonneg_int, default=0, help="damage seed and the recovery's sampling seed")
    r.add_argument("--method", choices=METHODS, default="geodesic",
                   help="geodesic: restore path (v = −∇D toward the pre-damage function); sgd/adam: task loss")
    r.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    r.add_argument("--steps", type=positive_int, default=None, help="step budget (default 200 when no budget is given)")
    r.add_argument("--seconds", type=positive_float, default=None, help="wall-time budget of the steps (evaluation not counted)")
    r.add_argument("--grad-evals", type=positive_int, default=None, help="budget in per-image gradient evaluations")
    r.add_argument("--within", type=nonneg_float, default=0.01, help="recovered at accuracy >= before − WITHIN")
    r.add_argument("--stop-when-recovered", action="store_true", help="end the run once within WITHIN of before")
    r.add_argument("--eval-every", type=positive_int, default=5, help="evaluate accuracy every k steps")
    r.add_argument("--eval-size", type=nonneg_int, default=2000, help="test images for accuracy along the way (0: all)")
    r.add_argument("--phi", choices=sorted(OUTPUT_MAPS), default="sqrt_probs", help="geodesic: output map of D and the metric")
    r.add_argument("--beta", type=positive_float, default=0.01, help="geodesic: weight β of the direction term")
    r.add_argument("--eps", type=positive_float, default=0.01, help="geodesic: trust region ε (|θ|² ≤ ε)")
    r.add_argument("--probe", type=positive_int, default=32, help="geodesic: probe batch B (J has B·10 rows)")
    r.add_argument("--restore-batch", type=positive_int, default=256, help="geodesic: images per ∇D")
    r.add_argument("--solver", choices=("gram", "explicit"), default="gram", help="geodesic: K = JJᵀ layer by layer or explicit J")
    r.add_argument("--lr", type=positive_float, default=None, help="sgd/adam learning rate (default 0.01 SGD, 1e-3 Adam)")
    r.add_argument("--momentum", type=nonneg_float, default=0.9, help="sgd: heavy-ball momentum in [0, 1)")
    r.add_argument("--batch", type=positive_int, default=128, help="sgd/adam minibatch size")
    r.set_defaults(fn=cmd_recover)

    m = sub.add_parser("merge", help="a net good on two tasks: walk from net A learning B, relax the path A→B",
                       description="From two nets of one architecture (A on task A, B on task B): walk from A along "
                                   "v = −∇CE_B plus a pull toward A's function on A's images, with the metric "
                                   "measured on A's images; relax the discretized path between A and B (energy "
                                   "N Σ D(w_i, w_i+1) on both tasks' images, ends fixed); compare with the straight "
                                   "line, fine-tuning and joint training. Writes a run folder.")
    m.add_argument("--a", required=True, help="checkpoint of net A (.safetensors with its .json card): the walk starts here")
    m.add_argument("--b", required=True, help="checkpoint of net B, same architecture as A: the relaxed path ends here")
    m.add_argument("--model", choices=sorted(models.ZOO), help="architecture, for checkpoints without a .json card")
    m.add_argument("--task-a", choices=sorted(data.FOLDERS), help="task of A (default: A's card)")
    m.add_argument("--task-b", choices=sorted(data.FOLDERS), help="task of B (default: B's card)")
    m.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    m.add_argument("--data", choices=("auto", "full", "bundled"), default="auto", help="full sets or the bundled subsets")
    m.add_argument("--phases", default="walk,relax,line",
                   help="comma-separated, run in this order: walk, relax, line, finetune, joint")
    m.add_argument("--direction", choices=("labels", "teacher"), default="labels",
                   help="walk direction: labels v = −∇CE_B; teacher v = −∇D(w, w_B) on B's images")
    m.add_argument("--pull", type=nonneg_float, default=0.5, help="ρ: pull toward A's function on A's images, relative to |v| (0: none)")
    m.add_argument("--learn-batch", type=positive_int, default=256, help="B images per direction gradient")
    m.add_argument("--pull-batch", type=positive_int, default=256, help="A images per pull gradient")
    m.add_argument("--phi", choices=sorted(OUTPUT_MAPS), default="sqrt_probs", help="output map of the metric and of D")
    m.add_argument("--beta", type=positive_float, default=0.01, help="weight β of the direction term")
    m.add_argument("--eps", type=positive_float, default=0.5, help="trust region ε (|θ|² ≤ ε) of the first walk step")
    m.add_argument("--eps-final", type=nonneg_float, default=0.002, help="ε of the last walk step (cosine decay; 0: constant ε)")
    m.add_argument("--probe", type=positive_int, default=32, help="probe batch B of A's images (J has B·10 rows)")
    m.add_argument("--seed", type=int, default=0, help="sampling seed")
    m.add_argument("--steps", type=positive_int, default=300, help="walk steps")
    m.add_argument("--eval-every", type=positive_int, default=25, help="accuracy on both tasks every k walk/fine-tuning steps")
    m.add_argument("--eval-size", type=nonneg_int, default=2000, help="test images per task for accuracy along the walk (0: all)")
    m.add_argument("--snapshot-every", type=positive_int, default=10, help="keep the walk's weights every k steps")
    m.add_argument("--points", type=positive_int, default=8, help="N: segments of the relaxed path and of the straight line")
    m.add_argument("--relax-iters", type=positive_int, default=150, help="Adam iterations of the relaxation")
    m.add_argument("--relax-lr", type=positive_float, default=1e-3, help="Adam learning rate of the relaxation (cosine-decayed)")
    m.add_argument("--relax-batch", type=positive_int, default=128, help="images of each task per relaxation iteration")
    m.add_argument("--finetune-steps", type=positive_int, default=300, help="finetune phase: Adam steps on B from A")
    m.add_argument("--joint-epochs", type=positive_int, default=2, help="joint phase: epochs on A ∪ B from the seed-0 init")
    m.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    m.set_defaults(fn=cmd_merge)
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
