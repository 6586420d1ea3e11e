"""`geodesic recover`: damage a net (or take a damage run) and walk back with the damaged coordinates frozen."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..infra.options import Option, add_options, apply_options, given
from ..store import data
from .common import RUN_FOLDER, checkpoint_options, finished, path_option, progress, start, writer_for
from .damage import check_damage, damage_config, damage_options


def options() -> list[Option]:
    from ..experiments.recovery import METHODS

    return [
        Option("--method", "method", "geodesic: restore path toward the pre-damage function; sgd/adam: task loss", METHODS),
        Option("--steps", "steps", "step budget"),
        Option("--seconds", "seconds", "wall-time budget of the steps (evaluation not counted)"),
        Option("--grad-evals", "grad_evals", "budget in per-image gradient evaluations"),
        Option("--within", "within", "recovered at accuracy >= before − WITHIN"),
        Option("--stop-when-recovered", "stop_when_recovered", "end the run once within WITHIN of before"),
        Option("--eval-every", "eval_every", "evaluate accuracy every k steps"),
        path_option("phi", "geodesic: output map of D and the metric"),
        path_option("beta", "geodesic: weight β of the direction term"),
        path_option("eps", "geodesic: trust region ε (|θ|² ≤ ε)"),
        path_option("probe", "geodesic: probe batch B (J has B·classes rows)"),
        Option("--restore-batch", "restore_batch", "geodesic: images per ∇D"),
        path_option("solver", "geodesic: K = JJᵀ layer by layer or explicit J"),
        Option("--lr", "lr", "sgd/adam learning rate (none: 0.01 for SGD, 1e-3 for Adam)"),
        Option("--momentum", "momentum", "sgd: heavy-ball momentum in [0, 1)"),
        Option("--batch", "batch", "sgd/adam minibatch size"),
    ]


def add(sub) -> None:
    from ..experiments.recovery import RecoveryConfig

    r = sub.add_parser("recover", help="recover a damaged net: geodesic restore, SGD or Adam, damaged weights frozen",
                       description="Damage a checkpoint (or take a damage run folder) and walk back toward the "
                                   "pre-damage net with the damaged coordinates frozen (noise: none frozen); "
                                   "accuracy along the way; write a run folder.")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help=".safetensors checkpoint to damage (with --kind and --level)")
    src.add_argument("--from-run", help="a damage run folder: recover its first seed's damaged weights")
    checkpoint_options(r, eval_default=2000, checkpoint=False)
    damage_options(r, required=False)
    r.add_argument("--seed", type=int, default=0, help="damage seed and the recovery's sampling seed (default 0)")
    r.add_argument("--out", required=True, help=RUN_FOLDER)
    add_options(r, options(), RecoveryConfig())
    r.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from ..core.path import Evaluation
    from ..experiments.damage import recovery_start
    from ..experiments.recovery import run_recover
    from ..store.runs import fresh_folder, run_meta

    cfg = config(args)
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
        w_ref, (w_d, _, frozen) = ckpt.w, recovery_start(ckpt.model, ckpt.w, ckpt.groups, dcfg)
        damage_meta = dcfg.as_dict()
    if cfg.method == "geodesic":
        from ..core.metric import check_layers

        check_layers(ckpt.model)
    writer = writer_for(out, run_meta("recover", ckpt, dataset, train_set.source, method=cfg.method,
                                      damage=damage_meta))
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


def config(args: argparse.Namespace):
    """The RecoveryConfig of the options given (validated); its seed is --seed."""
    from dataclasses import replace

    from ..experiments.recovery import RecoveryConfig

    cfg = apply_options(args, options(), RecoveryConfig())
    other_budget = {"seconds", "grad_evals"} & set(given(args, options()))
    if other_budget and not hasattr(args, "steps"):
        cfg = replace(cfg, steps=None)  # a budget in seconds or evaluations alone: no step cap
    return replace(cfg, seed=args.seed).validate()


def damage_from_run(args: argparse.Namespace) -> tuple:
    """(the damage run's meta, w_ref, w_damaged, frozen) from the damage run folder --from-run."""
    from ..experiments.damage import DAMAGE_FILE
    from ..store.runs import load_run

    given_ = [f"--{k}" for k in ("kind", "level", "layers") if getattr(args, k) is not None]
    if given_:
        raise ValueError(f"{', '.join(given_)}: the damage comes from --from-run, do not give damage options")
    damaged = load_run(args.from_run)
    if damaged.meta.get("kind") != "damage":
        raise ValueError(f"{args.from_run} is a {damaged.meta.get('kind')!r} run, not a damage run")
    final, frozen = damaged.final(), damaged.extra(DAMAGE_FILE)["frozen"]
    return damaged.meta, final["w_start"], final["w"], frozen


def print_recovery(o, cfg, test_set: data.Split, out: Path) -> None:
    s = o.summary()
    print(o.curve[["step", "seconds", "grad_evals", "accuracy", "distance"]].to_string(index=False))
    reached = "never" if math.isnan(s["within_step"]) else (
        f"at step {s['within_step']:.0f} ({s['within_seconds']:.1f} s, {s['within_grad_evals']:.0f} gradient evaluations)")
    print(f"accuracy {s['accuracy_damaged']:.4f} -> {s['accuracy']:.4f} (before damage {s['accuracy_before']:.4f}) "
          f"on {len(test_set)} {test_set.source} test images; within {cfg.within:g}: {reached}; run folder {out}")
