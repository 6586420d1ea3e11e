"""Command line: `geodesic COMMAND …` or `python -m geodesic COMMAND …` (`--help` on each command).

Every option's default is read from the engine's config dataclasses (geodesic/infra/options.py); `sparsify` starts
from the benchmarked setting, `--preset literal` from the paper's algorithm as written.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from .infra import threads
from .infra.backend import ClusterError
from .infra.options import Option, add_options, apply_options, given
from .store import cards, checkpoints, data, inputs, zoo

DATA_SOURCES = ("auto", "full", "bundled")
ARCH_HELP = ("your own architecture: FILE.py:FACTORY or package.module:FACTORY, a function with no arguments "
             "returning the nn.Module whose state dict --checkpoint holds (the file's code runs)")


# --- shared wiring ---------------------------------------------------------------------------------------


def common_options(c: argparse.ArgumentParser, eval_default: int, checkpoint: bool = True,
                   source_flag: str = "--data", threads_option: bool = True) -> None:
    if checkpoint:
        c.add_argument("--checkpoint", required=True, help=".safetensors checkpoint with its .json card")
    c.add_argument("--model", choices=sorted(zoo.ZOO), help="architecture, for a checkpoint without a .json card")
    c.add_argument("--arch", help=ARCH_HELP)
    c.add_argument("--dataset", choices=sorted(data.FOLDERS), help="data of the metric and evaluation (default: the card's)")
    c.add_argument(source_flag, dest="data", choices=DATA_SOURCES, default="auto",
                   help="full sets, or the bundled subsets (auto: full when installed)")
    c.add_argument("--eval-size", type=int, default=eval_default, help=f"test images for accuracy (0: all; default {eval_default})")
    if threads_option:
        c.add_argument("--threads", type=int, default=None,
                       help=f"torch CPU threads (default {threads.DEFAULT}, or $GEODESIC_THREADS)")


def one_architecture(args: argparse.Namespace) -> None:
    """ValueError when both --model and --arch name the architecture (one would be ignored)."""
    if getattr(args, "model", None) and getattr(args, "arch", None):
        raise ValueError("give --model (a zoo architecture) or --arch (your own), not both")


def start(args: argparse.Namespace) -> tuple[inputs.Checkpoint, str, data.Split, data.Split]:
    """Threads, checkpoint, dataset, (train, test); warns on stderr when the net measures far below its card."""
    one_architecture(args)
    threads.configure(args.threads)
    if args.eval_size < 0:
        raise ValueError(f"--eval-size must be >= 0 (0: all), got {args.eval_size}")
    ckpt = inputs.open_checkpoint(args.checkpoint, args.model, args.arch)
    dataset = inputs.dataset_of(ckpt, args.dataset)
    warn(inputs.card_warning(ckpt, dataset))
    return (ckpt, dataset, *inputs.splits(dataset, args.data, args.eval_size))


def warn(message: str | None) -> None:
    if message:
        print(f"warning: {message}", file=sys.stderr)


def writer_for(out: Path, meta: dict):
    from .store.runs import RunWriter

    return RunWriter(meta, root=out.parent, run_id=out.name)


def progress(total: int, desc: str, unit: str = "step"):
    """A tqdm bar on a terminal, a plain line now and then on a file or pipe (geodesic.infra.progress)."""
    from .infra.progress import progress as bar

    return bar(total, desc, unit)


def finished(status, what: str, where: Path) -> int:
    """Exit code of a run: 0 unless it failed (diverged), with a message saying so."""
    if status.failed:
        print(f"error: the {what} {status.value}; what was done is in {where}", file=sys.stderr)
        from .infra.lifecycle import DIVERGED_HINT, Status

        if status is Status.DIVERGED:
            print(f"hint: {DIVERGED_HINT}", file=sys.stderr)
        return 1
    return 0


# --- fetch-data, train -----------------------------------------------------------------------------------


def cmd_fetch_data(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else data.data_root()
    done = data.fetch(root)
    for name in data.FOLDERS:
        for split in ("train", "test"):
            s = data.load_full(name, split, root)
            print(f"{name:14s} {split:5s} {len(s):6d} images  ({'installed now' if name in done else 'present'})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .core.train import evaluate, train
    from .store.arch import normalize as normalize_arch

    out = checkpoints.check_out(args.out, args.force)  # before hours of training, not after
    threads.configure(args.threads)
    model, name = train_model(args)
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


def train_model(args: argparse.Namespace):
    """(fresh model, its name): a zoo model, or the user's --arch (its factory's name; its code runs). The seed
    fixes the initialization either way."""
    import torch

    from .store import arch

    if (args.model is None) == (args.arch is None):
        raise ValueError("give the architecture to train: --model NAME (the zoo) or --arch FILE.py:FACTORY")
    if args.model is not None:
        return zoo.build(args.model, seed=args.seed), args.model
    torch.manual_seed(args.seed)
    model = arch.build(args.arch)
    model.train()
    return model, arch.split_spec(args.arch)[1]


# --- sparsify ------------------------------------------------------------------------------------------


def sparsify_options() -> list[Option]:
    from .core.metric import OUTPUT_MAPS
    from .core.path import SOLVERS
    from .core.targets import STRATEGIES

    return [
        Option("--filters", "filters", "number of groups to zero (conv filters; hidden neurons of an mlp)"),
        Option("--strategy", "strategy", "which groups to zero (with --paths K > 1: strategies in turn)", STRATEGIES),
        Option("--pull", "pull", "ρ: pull toward the start's function on the free weights, v + ρ|v|p̂, p̂ ∝ −∇D (0: none)"),
        Option("--pull-batch", "pull_batch", "images per pull and relaxation gradient"),
        Option("--relax-steps", "relax_steps", "geodesic restore steps inside the hyperplane after arrival"),
        Option("--relax-eps", "relax_eps", "trust region ε of the first relaxation step"),
        Option("--relax-eps-final", "relax_eps_final", "ε of the last relaxation step (cosine decay)"),
        Option("--seconds", "seconds", "CPU seconds for the walk and the relaxation: the walk is cut there, the "
                                       "relaxation sized to what the walk leaves"),
        Option("--phi", "path.phi", "output map of the metric", tuple(sorted(OUTPUT_MAPS))),
        Option("--beta", "path.beta", "weight β of the direction term"),
        Option("--eps", "path.eps", "trust region ε of the walk's first step and its cap (|θ|² ≤ ε); each step "
                                    "measures itself and shrinks or grows it"),
        Option("--probe", "path.probe", "probe batch size B (J has B·classes rows)"),
        Option("--seed", "path.seed", "probe-batch and choice seed"),
        Option("--max-steps", "path.max_steps", "step cap of the walk"),
        Option("--solver", "path.solver", "K = JJᵀ layer by layer (J never stored) or explicit J", SOLVERS),
        Option("--eval-every", "path.eval_every", "evaluate accuracy every k steps"),
        Option("--snapshot-every", "path.snapshot_every", "keep the weights every k steps"),
    ]


def sparsify_config(args: argparse.Namespace):
    """The SparsifyConfig that `sparsify`'s preset and options describe (validated)."""
    from .experiments.sparsify import PRESETS

    return apply_options(args, sparsify_options(), PRESETS[args.preset]).validate()


def with_fraction(cfg, args: argparse.Namespace, groups: int):
    """cfg with filters = round(fraction × groups) when --fraction is given."""
    from dataclasses import replace

    if args.fraction is None:
        return cfg
    if hasattr(args, "filters"):
        raise ValueError("give --filters or --fraction, not both")
    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")
    return replace(cfg, filters=max(1, round(args.fraction * groups))).validate()


def sparsify_one(ckpt: inputs.Checkpoint, cfg, folder: Path, meta: dict, train_set: data.Split, evaluation,
                 label: str):
    """One sparsify run into `folder`, with a progress bar; its Outcome."""
    from .experiments.sparsify import run_sparsify

    writer = writer_for(folder, meta)
    bar = progress(cfg.path.max_steps + cfg.relax_steps, label)

    def on_row(r: dict) -> None:
        bar.set_postfix(zero=r["groups_zero"], D=f"{r['distance']:.4f}", phase=r["phase"], refresh=False)
        bar.update(r["step"] - bar.n)

    try:
        return run_sparsify(ckpt.model, ckpt.w, ckpt.groups, cfg, train_set, evaluation, writer=writer, on_row=on_row)
    finally:
        bar.close()


def check_sparsifiable(ckpt: inputs.Checkpoint) -> None:
    """Refuse, before any folder is made, a net with no prunable groups or layers the metric has no rule for."""
    from .core.metric import check_layers

    if not ckpt.groups:
        raise ValueError(f"{ckpt.path}: {ckpt.name} has no prunable groups (conv filters, hidden neurons of Linear "
                         "layers): there is nothing to zero")
    check_layers(ckpt.model)


def cmd_sparsify(args: argparse.Namespace) -> int:
    from .store.runs import fresh_folder

    base = sparsify_config(args)
    if args.paths < 1:
        raise ValueError(f"--paths must be >= 1, got {args.paths}")
    out = fresh_folder(args.out)
    ckpt, dataset, train_set, test_set = start(args)
    check_sparsifiable(ckpt)
    base = with_fraction(base, args, len(ckpt.groups))
    if not base.filters <= len(ckpt.groups):
        raise ValueError(f"--filters must be between 1 and {len(ckpt.groups)} for {ckpt.name}, got {base.filters}")
    meta = {"kind": "sparsify", **ckpt.meta(), "dataset": dataset, "data_source": train_set.source,
            "eval_images": len(test_set), "preset": args.preset}
    if args.paths == 1:
        from .core.path import Evaluation

        o = sparsify_one(ckpt, base, out, {**meta, "candidate": 0}, train_set, Evaluation(test_set.x, test_set.y),
                         f"path 1/1 ({base.strategy})")
        print_candidates(out, [{"path": out.name, "strategy": base.strategy, "seed": base.path.seed, **o.summary()}],
                         test_set, single=True)
        return finished(o.status, "walk", out)
    return sparsify_candidates(args, base, out, meta, test_set)


def sparsify_candidates(args: argparse.Namespace, base, out: Path, meta: dict, test_set: data.Split) -> int:
    """--paths K: the candidates in parallel on the backend (local Ray by default), the shortest reported."""
    from .experiments.sparsify import candidate_configs, run_candidates
    from .infra.lifecycle import Status
    from .store.runs import write_json
    from .store.source import Source

    source = Source(str(args.checkpoint), args.dataset or meta["dataset"], args.data, args.eval_size, args.model,
                    args.arch)
    configs = candidate_configs(base, args.paths)
    bar = progress(len(configs), f"{len(configs)} candidate paths", unit="path")
    rows = run_candidates(source, configs, out, meta, args.backend, args.address, args.workers,
                          on_done=lambda r: bar.update(1))
    bar.close()
    write_json(out / "candidates.json", rows)
    print_candidates(out, rows, test_set)
    failed = [r for r in rows if r.get("status") in (Status.ERROR, Status.DIVERGED)]
    for r in failed:
        print(f"error: {r['path']}: {r.get('error') or r['status']}", file=sys.stderr)
    return 1 if failed else 0


def print_candidates(out: Path, rows: list[dict], test_set: data.Split, single: bool = False) -> None:
    import pandas as pd

    from .experiments.sparsify import shortest

    best = shortest(rows)
    print(pd.DataFrame(rows).assign(shortest=[i == best for i in range(len(rows))]).to_string(index=False))
    folder = out if single else out / rows[best]["path"]
    print(f"shortest: {rows[best]['path']} (length {rows[best].get('length', math.nan):.4f}, accuracy "
          f"{rows[best].get('accuracy', math.nan):.4f} on {len(test_set)} {test_set.source} test images); "
          f"its sparse net: {folder / 'final.safetensors'}")


# --- damage, recover -----------------------------------------------------------------------------------


def damage_config(args: argparse.Namespace, seeds: tuple[int, ...]):
    from .experiments.damage import DamageConfig

    return DamageConfig(args.kind, (args.level,), seeds, tuple(args.layers) if args.layers else None,
                        args.among).validate()


def check_damage(cfg, ckpt: inputs.Checkpoint) -> None:
    """Damage that cannot apply to this net: an error before any folder is made."""
    from .core.params import spec_of
    from .experiments.damage import layer_mask

    if cfg.kind == "ablate" and cfg.levels[0] > len(ckpt.groups):
        raise ValueError(f"--level: {ckpt.name} has {len(ckpt.groups)} groups, cannot ablate {cfg.levels[0]:g}")
    if cfg.layers:
        layer_mask(spec_of(ckpt.model), list(cfg.layers))


def cmd_damage(args: argparse.Namespace) -> int:
    from .core.path import Evaluation
    from .experiments.damage import run_damage, summarize
    from .store.runs import fresh_folder

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = damage_config(args, tuple(range(args.seed, args.seed + args.seeds)))
    out = fresh_folder(args.out)
    ckpt, dataset, _, test_set = start(args)
    check_damage(cfg, ckpt)
    writer = writer_for(out, {"kind": "damage", **ckpt.meta(), "dataset": dataset, "data_source": test_set.source})
    bar = progress(len(cfg.seeds), f"damage {cfg.kind} {args.level:g}", "seed")
    try:
        result = run_damage(ckpt.model, {"checkpoint": ckpt.w}, ckpt.groups, cfg, Evaluation(test_set.x, test_set.y),
                            writer, on_row=lambda r: (bar.set_postfix(accuracy=f"{r['accuracy']:.4f}"), bar.update(1)))
    finally:
        bar.close()
    print(result.table[["seed", "accuracy_before", "accuracy", "drop", "damaged", "filters_lost"]].to_string(index=False))
    s = summarize(result.table).iloc[0]
    print(f"drop {s.drop_mean:.4f} ± {s.drop_sd:.4f} over {s.seeds} seed(s) on {len(test_set)} {test_set.source} "
          f"test images; run folder {out}")
    return finished(result.status, "damage run", out)


def recovery_options() -> list[Option]:
    from .core.metric import OUTPUT_MAPS
    from .core.path import SOLVERS
    from .experiments.recovery import METHODS

    return [
        Option("--method", "method", "geodesic: restore path toward the pre-damage function; sgd/adam: task loss", METHODS),
        Option("--steps", "steps", "step budget"),
        Option("--seconds", "seconds", "wall-time budget of the steps (evaluation not counted)"),
        Option("--grad-evals", "grad_evals", "budget in per-image gradient evaluations"),
        Option("--within", "within", "recovered at accuracy >= before − WITHIN"),
        Option("--stop-when-recovered", "stop_when_recovered", "end the run once within WITHIN of before"),
        Option("--eval-every", "eval_every", "evaluate accuracy every k steps"),
        Option("--phi", "path.phi", "geodesic: output map of D and the metric", tuple(sorted(OUTPUT_MAPS))),
        Option("--beta", "path.beta", "geodesic: weight β of the direction term"),
        Option("--eps", "path.eps", "geodesic: trust region ε (|θ|² ≤ ε)"),
        Option("--probe", "path.probe", "geodesic: probe batch B (J has B·classes rows)"),
        Option("--restore-batch", "restore_batch", "geodesic: images per ∇D"),
        Option("--solver", "path.solver", "geodesic: K = JJᵀ layer by layer or explicit J", SOLVERS),
        Option("--lr", "lr", "sgd/adam learning rate (none: 0.01 for SGD, 1e-3 for Adam)"),
        Option("--momentum", "momentum", "sgd: heavy-ball momentum in [0, 1)"),
        Option("--batch", "batch", "sgd/adam minibatch size"),
    ]


def recovery_config(args: argparse.Namespace):
    from dataclasses import replace

    from .experiments.recovery import RecoveryConfig

    cfg = apply_options(args, recovery_options(), RecoveryConfig())
    other_budget = {"seconds", "grad_evals"} & set(given(args, recovery_options()))
    if other_budget and not hasattr(args, "steps"):
        cfg = replace(cfg, steps=None)  # a budget in seconds or evaluations alone: no step cap
    return replace(cfg, seed=args.seed).validate()


def damage_from_run(args: argparse.Namespace) -> tuple:
    """(checkpoint-like fields, dataset, w_ref, w_damaged, frozen, damage meta) from a damage run folder."""
    from .experiments.damage import DAMAGE_FILE
    from .store.runs import load_run

    given_ = [f"--{k}" for k in ("kind", "level", "layers") if getattr(args, k) is not None]
    if given_:
        raise ValueError(f"{', '.join(given_)}: the damage comes from --from-run, do not give damage options")
    run = load_run(args.from_run)
    if run.meta.get("kind") != "damage":
        raise ValueError(f"{args.from_run} is a {run.meta.get('kind')!r} run, not a damage run")
    final, frozen = run.final(), run.extra(DAMAGE_FILE)["frozen"]
    return run.meta, final["w_start"], final["w"], frozen


def cmd_recover(args: argparse.Namespace) -> int:
    from .core.params import spec_of
    from .core.path import Evaluation
    from .experiments import damage as dmg
    from .experiments.recovery import run_recover
    from .store.runs import fresh_folder

    cfg = recovery_config(args)
    if args.from_run:
        src, w_ref, w_d, frozen = damage_from_run(args)
        args.checkpoint, args.model, args.arch = src.get("checkpoint"), src.get("model"), src.get("arch")
        args.model = None if args.arch else args.model
        args.dataset = args.dataset or src.get("dataset")
        damage_meta = {"from_run": str(args.from_run), **src.get("config", {})}
    elif args.kind is None or args.level is None:
        raise ValueError("give --checkpoint with --kind and --level, or --from-run DAMAGE_RUN")
    out = fresh_folder(args.out)
    ckpt, dataset, train_set, test_set = start(args)
    if not args.from_run:
        dcfg = damage_config(args, (args.seed,))
        check_damage(dcfg, ckpt)
        w_ref, (w_d, mask) = ckpt.w, dmg.damage(ckpt.w, spec_of(ckpt.model), ckpt.groups, dcfg.kind, args.level,
                                                args.seed, list(dcfg.layers) if dcfg.layers else None, dcfg.among)
        frozen, damage_meta = dmg.frozen(dcfg.kind, mask), dcfg.as_dict()
    if cfg.method == "geodesic":
        from .core.metric import check_layers

        check_layers(ckpt.model)
    writer = writer_for(out, {"kind": "recover", **ckpt.meta(), "dataset": dataset, "data_source": train_set.source,
                              "method": cfg.method, "damage": damage_meta})
    bar = progress(cfg.steps or 0, f"recover ({cfg.method})")

    def on_row(r: dict) -> None:
        bar.set_postfix(accuracy=f"{r['accuracy']:.4f}", D=f"{r['distance']:.4f}", refresh=False)
        bar.update(r["step"] - bar.n)

    try:
        o = run_recover(ckpt.model, w_ref, w_d, frozen, cfg, train_set, Evaluation(test_set.x, test_set.y),
                        ckpt.groups, writer, on_row=on_row)
    finally:
        bar.close()
    print_recovery(o, cfg, test_set, out)
    return finished(o.status, "recovery", out)


def print_recovery(o, cfg, test_set: data.Split, out: Path) -> None:
    s = o.summary()
    print(o.curve[["step", "seconds", "grad_evals", "accuracy", "distance"]].to_string(index=False))
    reached = "never" if math.isnan(s["within_step"]) else (
        f"at step {s['within_step']:.0f} ({s['within_seconds']:.1f} s, {s['within_grad_evals']:.0f} gradient evaluations)")
    print(f"accuracy {s['accuracy_damaged']:.4f} -> {s['accuracy']:.4f} (before damage {s['accuracy_before']:.4f}) "
          f"on {len(test_set)} {test_set.source} test images; within {cfg.within:g}: {reached}; run folder {out}")


# --- merge ---------------------------------------------------------------------------------------------


def merge_options() -> list[Option]:
    from .core.metric import OUTPUT_MAPS
    from .experiments.merge import DIRECTIONS, PHASES

    return [
        Option("--phases", "phases", f"comma-separated, run in this order, of: {', '.join(PHASES)}"),
        Option("--direction", "direction", "walk direction: labels v = −∇CE_B; teacher v = −∇D(w, w_B)", DIRECTIONS),
        Option("--pull", "pull", "ρ: pull toward A's function on A's images, relative to |v| (0: none)"),
        Option("--learn-batch", "learn_batch", "B images per direction gradient"),
        Option("--pull-batch", "pull_batch", "A images per pull gradient"),
        Option("--phi", "path.phi", "output map of the metric and of D", tuple(sorted(OUTPUT_MAPS))),
        Option("--beta", "path.beta", "weight β of the direction term"),
        Option("--eps", "path.eps", "trust region ε (|θ|² ≤ ε) of the first walk step"),
        Option("--eps-final", "path.eps_final", "ε of the last walk step (cosine decay; 0: constant ε)"),
        Option("--probe", "path.probe", "probe batch B of A's images (J has B·classes rows)"),
        Option("--seed", "path.seed", "sampling seed"),
        Option("--steps", "path.max_steps", "walk steps"),
        Option("--eval-every", "path.eval_every", "accuracy on both tasks every k walk/fine-tuning steps"),
        Option("--snapshot-every", "path.snapshot_every", "keep the walk's weights every k steps"),
        Option("--eval-size", "eval_size", "test images per task for accuracy along the walk (0: all)"),
        Option("--points", "points", "N: segments of the relaxed path and of the straight line"),
        Option("--relax-iters", "relax_iters", "Adam iterations of the relaxation"),
        Option("--relax-lr", "relax_lr", "Adam learning rate of the relaxation (cosine-decayed)"),
        Option("--relax-batch", "relax_batch", "images of each task per relaxation iteration"),
        Option("--finetune-steps", "finetune_steps", "finetune phase: Adam steps on B from A"),
        Option("--joint-epochs", "joint_epochs", "joint phase: epochs on A ∪ B from the seed-0 init"),
    ]


def merge_inputs(args: argparse.Namespace) -> tuple[inputs.Checkpoint, inputs.Checkpoint, str, str]:
    """Nets A and B (one architecture), their tasks; warns when a net measures far below its card. Refuses a net
    whose layers the metric has no rule for."""
    from .core.metric import check_layers

    one_architecture(args)
    a, b = inputs.open_checkpoint(args.a, args.model, args.arch), inputs.open_checkpoint(args.b, args.model, args.arch)
    if a.name != b.name:
        raise ValueError(f"--a is a {a.name} and --b is a {b.name}: a merge needs two nets of one architecture")
    task_a, task_b = inputs.dataset_of(a, args.task_a), inputs.dataset_of(b, args.task_b)
    warn(inputs.card_warning(a, task_a))
    warn(inputs.card_warning(b, task_b))
    check_layers(a.model)
    return a, b, task_a, task_b


def cmd_merge(args: argparse.Namespace) -> int:
    from .experiments.merge import MergeConfig, run_merge

    cfg = apply_options(args, merge_options(), MergeConfig()).validate()
    threads.configure(args.threads)
    from .store.runs import fresh_folder

    out = fresh_folder(args.out)
    a, b, task_a, task_b = merge_inputs(args)
    (train_a, test_a), (train_b, test_b) = inputs.splits(task_a, args.data), inputs.splits(task_b, args.data)
    writer = writer_for(out, {"kind": "merge", **a.meta(), "checkpoint_b": str(args.b), "dataset": task_a,
                              "task_b": task_b, "data_source": train_a.source, "eval_images": len(test_a)})
    phases = cfg.phases
    bar = progress((cfg.path.max_steps if "walk" in phases else 0) + (cfg.relax_iters if "relax" in phases else 0),
                   f"merge {task_a} + {task_b}")

    def on_row(r: dict) -> None:
        bar.set_description(f"merge: {r['phase']}", refresh=False)
        if r["phase"] in ("walk", "relax") and r["step"] > 0:
            bar.update(1)
        if not math.isnan(r.get("accuracy_b", math.nan)):
            bar.set_postfix(A=f"{r['accuracy']:.4f}", B=f"{r['accuracy_b']:.4f}", refresh=False)

    try:
        o = run_merge(a.model, a.w, b.w, train_a, train_b, test_a, test_b, cfg, writer, on_row=on_row)
    finally:
        bar.close()
    print_merge(o, task_a, task_b, test_a, test_b, out)
    return finished(o.status, "merge", out)


def print_merge(o, task_a: str, task_b: str, test_a: data.Split, test_b: data.Split, out: Path) -> None:
    s = o.summary
    labels = {"walk": "walk (end)", "relax_best": "relaxed path (best point)", "line_best": "straight line (best point)",
              "line_mid": "weight average (midpoint)", "finetune": "fine-tune A on B", "joint": "joint training"}
    for key, label in labels.items():
        if f"{key}_accuracy_a" in s:
            print(f"{label:28s} {task_a} {s[f'{key}_accuracy_a']:.4f}   {task_b} {s[f'{key}_accuracy_b']:.4f}")
    print(f"status {o.status.value}; accuracy on {len(test_a)} + {len(test_b)} {test_a.source} test images; "
          f"run folder {out}")


# --- the parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geodesic", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    add_fetch_data(sub)
    add_train(sub)
    add_sparsify(sub)
    add_damage(sub)
    add_recover(sub)
    add_merge(sub)
    add_export(sub)
    add_sweep(sub)
    return p


def add_fetch_data(sub) -> None:
    f = sub.add_parser("fetch-data", help="install full MNIST and Fashion-MNIST as raw idx files (offline registries only)")
    f.add_argument("--root", help="data folder (default: $GEODESIC_DATA or <repo>/data)")
    f.set_defaults(fn=cmd_fetch_data)


def add_train(sub) -> None:
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
    t.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default {threads.DEFAULT})")
    t.add_argument("--out", required=True, help="output .safetensors path (its .json card is written beside it)")
    t.add_argument("--force", action="store_true", help="replace an existing checkpoint and its card")
    t.set_defaults(fn=cmd_train)


def add_sparsify(sub) -> None:
    from .experiments.sparsify import PRESETS

    s = sub.add_parser("sparsify", help="walk a trained net along a short path until whole filters are zero",
                       description="Walk a checkpoint along geodesic tangent steps until FILTERS whole groups (conv "
                                   "filters, hidden neurons) are exactly zero, then relax inside that hyperplane; "
                                   "write a run folder whose final.safetensors is the sparse net.")
    common_options(s, eval_default=2000)
    s.add_argument("--out", required=True, help="run folder to create (with --paths K > 1: a folder of K run folders)")
    s.add_argument("--preset", choices=sorted(PRESETS), default="recommended",
                   help="starting setting: recommended (benchmarked) or literal (the paper's algorithm); options "
                        "below change it (default recommended)")
    s.add_argument("--paths", type=int, default=1, help="candidate paths, run in parallel on the backend; the "
                                                       "shortest is reported (default 1)")
    backend_options(s)
    s.add_argument("--fraction", type=float, default=None,
                   help="zero this fraction of the net's prunable groups, in (0, 1] (instead of --filters)")
    add_options(s, sparsify_options(), PRESETS["recommended"], ("literal", PRESETS["literal"]))
    s.set_defaults(fn=cmd_sparsify)


def backend_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--backend", choices=("ray", "loop"), default="ray",
                   help="ray: Ray tasks, on a local Ray (127.0.0.1) started for the command or the cluster at "
                        "--address; loop: one after another in this process (default ray)")
    c.add_argument("--address", default=None, help="HOST:PORT of a running Ray cluster (its nodes must see "
                                                   "--checkpoint, the data and --out)")
    c.add_argument("--workers", type=int, default=None,
                   help="CPUs of the local Ray, one run each (default: this machine's cores)")


def damage_options(c: argparse.ArgumentParser, required: bool) -> None:
    from .experiments.damage import AMONG, KINDS

    c.add_argument("--kind", choices=KINDS, required=required, default=None,
                   help="zero: a random fraction of weights; ablate: whole filters/neurons; noise: Gaussian noise")
    c.add_argument("--level", type=float, required=required, default=None,
                   help="zero: fraction in [0, 1]; ablate: number of filters; noise: scale × each tensor's std")
    c.add_argument("--layers", nargs="+", default=None, help="zero/noise only these layers (e.g. conv2 fc1; default: all)")
    c.add_argument("--among", choices=AMONG, default="all",
                   help="ablate: pick among all filters (may hit ones already zero) or only nonzero ones (default all)")


def add_damage(sub) -> None:
    d = sub.add_parser("damage", help="damage a net with several seeds and measure the accuracy drop",
                       description="Damage a checkpoint (seeds SEED … SEED+SEEDS−1), measure test accuracy before and "
                                   "after; write a run folder: one metrics row per seed, the first seed's damaged "
                                   "weights and its mask (damage.safetensors).")
    common_options(d, eval_default=0)
    damage_options(d, required=True)
    d.add_argument("--seeds", type=int, default=5, help="number of damage seeds (default 5)")
    d.add_argument("--seed", type=int, default=0, help="first damage seed (default 0)")
    d.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    d.set_defaults(fn=cmd_damage)


def add_recover(sub) -> None:
    from .experiments.recovery import RecoveryConfig

    r = sub.add_parser("recover", help="recover a damaged net: geodesic restore, SGD or Adam, damaged weights frozen",
                       description="Damage a checkpoint (or take a damage run folder) and walk back toward the "
                                   "pre-damage net with the damaged coordinates frozen (noise: none frozen); "
                                   "accuracy along the way; write a run folder.")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help=".safetensors checkpoint to damage (with --kind and --level)")
    src.add_argument("--from-run", help="a damage run folder: recover its first seed's damaged weights")
    common_options(r, eval_default=2000, checkpoint=False)
    damage_options(r, required=False)
    r.add_argument("--seed", type=int, default=0, help="damage seed and the recovery's sampling seed (default 0)")
    r.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    add_options(r, recovery_options(), RecoveryConfig())
    r.set_defaults(fn=cmd_recover)


def add_merge(sub) -> None:
    from .experiments.merge import MergeConfig

    m = sub.add_parser("merge", help="a net good on two tasks: walk from net A learning B, relax the path A→B",
                       description="From two nets of one architecture (A on task A, B on task B): walk from A along "
                                   "v = −∇CE_B plus a pull toward A's function on A's images, with the metric "
                                   "measured on A's images; relax the discretized path between A and B; compare "
                                   "with the straight line, fine-tuning and joint training. Writes a run folder.")
    m.add_argument("--a", required=True, help="checkpoint of net A (.safetensors with its .json card): the walk starts here")
    m.add_argument("--b", required=True, help="checkpoint of net B, same architecture as A: the relaxed path ends here")
    m.add_argument("--model", choices=sorted(zoo.ZOO), help="architecture, for checkpoints without a .json card")
    m.add_argument("--arch", help=ARCH_HELP)
    m.add_argument("--task-a", choices=sorted(data.FOLDERS), help="task of A (default: A's card)")
    m.add_argument("--task-b", choices=sorted(data.FOLDERS), help="task of B (default: B's card)")
    m.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    m.add_argument("--data", choices=DATA_SOURCES, default="auto", help="full sets or the bundled subsets")
    m.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default {threads.DEFAULT})")
    add_options(m, merge_options(), MergeConfig())
    m.set_defaults(fn=cmd_merge)


def cmd_export(args: argparse.Namespace) -> int:
    from .store.export import export, markdown
    from .store.runs import load_run

    threads.configure(args.threads)
    dataset = load_run(args.run).meta.get("dataset")
    images = data.load(dataset, "test", "bundled").x[:256] if dataset in data.FOLDERS else None
    report = export(args.run, args.out, images, force=args.force)
    print(markdown(report, f"{args.run} → {args.out}"), end="")
    print(f"wrote {args.out}/model.onnx, model.safetensors, model.json "
          f"({report['groups_removed']} of {report['groups']} groups removed)")
    return 0


def add_export(sub) -> None:
    x = sub.add_parser("export", help="write a run's compact net (zeroed groups removed) as ONNX + safetensors",
                       description="Remove every all-zero group of a run's final net physically and write "
                                   "OUT/model.onnx (checked with onnxruntime), OUT/model.safetensors and its card "
                                   "OUT/model.json (loadable by geodesic.store.checkpoints.load); print parameters, FLOPs "
                                   "and CPU latency, dense against compact.")
    x.add_argument("--run", required=True, help="run folder with a final.safetensors")
    x.add_argument("--out", required=True, help="folder for model.onnx, model.safetensors, model.json")
    x.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    x.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default {threads.DEFAULT})")
    x.set_defaults(fn=cmd_export)


# --- sweep ----------------------------------------------------------------------------------------------


def numbers(kind: type, what: str):
    """An argparse type: a comma-separated list of `kind` ("30,40,50")."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: a comma-separated list of numbers, got {text!r}") from None

    return parse


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.sweep import SweepSpec, run_sweep
    from .infra.lifecycle import Status, Stop

    threads.configure(1)
    spec = SweepSpec(sweep_source(args), filters=args.filters or (), fractions=args.fractions or (),
                     methods=args.methods, seeds=args.seeds, data=args.images, seconds=args.seconds).validate()
    bar = progress(0, "cells", unit="cell")

    def on_cell(row: dict, done: int, total: int) -> None:
        bar.total = total
        bar.set_postfix(last=row["cell"], status=row.get("status"), acc=f"{row.get('accuracy', math.nan):.3f}",
                        refresh=False)
        bar.update(done - bar.n)

    stop = Stop()

    def on_ctrl_c(signum, frame) -> None:  # the first Ctrl-C stops the sweep; a second one interrupts at once
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    # a Stop rather than KeyboardInterrupt: raised inside Ray's client code, the latter was sometimes lost
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        table = run_sweep(spec, args.out, args.backend, args.address, args.workers, on_cell, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if stop.is_set():
        print(f"interrupted; every finished cell is kept in {args.out}: run the same command to resume", file=sys.stderr)
        return 130
    cols = ["method", "filters", "seed", "data", "accuracy", "seconds", "steps", "status"]
    print(table[cols].to_string(index=False))
    errors = table[table["status"] == Status.ERROR]
    for _, r in errors.iterrows():
        print(f"error: {r['cell']}: {r['error']}", file=sys.stderr)
    print(f"results: {Path(args.out) / 'results.csv'} (and .parquet); run folders: {Path(args.out) / 'cells'}")
    return 1 if len(errors) else 0


def sweep_source(args: argparse.Namespace):
    from .store.source import Source

    one_architecture(args)
    return Source(str(args.checkpoint), args.dataset, args.data, args.eval_size, args.model, args.arch)


def add_sweep(sub) -> None:
    from .experiments.methods import METHODS, RECAL

    w = sub.add_parser("sweep", help="every method × sparsity × seed × data budget as Ray tasks; a results table",
                       description="Run every cell (method × sparsity × seed × training images), each with the same "
                                   "CPU budget on one thread, as Ray tasks; each cell is a run folder under "
                                   "OUT/cells and a row of OUT/results.csv (and .parquet). Rerun the same command "
                                   "to resume: finished cells are kept; add sparsities, methods, seeds or data "
                                   "budgets (same checkpoint, data and --seconds) to grow the sweep.")
    common_options(w, eval_default=0, source_flag="--data-source", threads_option=False)  # one thread per cell
    w.add_argument("--filters", type=numbers(int, "--filters"), help="groups to zero, e.g. 30,40,50")
    w.add_argument("--fractions", type=numbers(float, "--fractions"), help="fractions of the groups, e.g. 0.25,0.5")
    w.add_argument("--methods", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()),
                   default=METHODS, help=f"comma-separated, among {','.join(METHODS)} (default all); {RECAL} after "
                                         f"any, e.g. magnitude{RECAL}: BatchNorm statistics re-estimated on "
                                         "unlabeled training images before the scoring")
    w.add_argument("--seeds", type=numbers(int, "--seeds"), default=(0,), help="e.g. 0,1,2 (default 0)")
    w.add_argument("--data", dest="images", type=numbers(int, "--data"), default=(0,),
                   help="training images per cell, e.g. 1000,100 (0: the whole training split; default 0)")
    w.add_argument("--seconds", type=float, default=60.0, help="CPU seconds per cell, one thread (default 60)")
    w.add_argument("--out", required=True, help="sweep folder (created; resumed or grown when it holds a sweep of the "
                                                    "same checkpoint, data and --seconds)")
    backend_options(w)
    w.set_defaults(fn=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (data.DataMissing, cards.CheckpointError, ValueError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:  # a layer the metric has no rule for, named
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder the command could not read or write
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every finished step is kept in the run folder", file=sys.stderr)
        return 130

