"""`geodesic damage`: damage a net with several seeds and measure the accuracy drop. Its damage options and their
checks serve `recover` too."""

from __future__ import annotations

import argparse

from ..store import inputs
from .common import RUN_FOLDER, checkpoint_options, finished, progress, start, writer_for


def damage_options(c: argparse.ArgumentParser, required: bool) -> None:
    """--kind, --level, --layers, --among (a DamageConfig)."""
    from ..experiments.damage import AMONG, KINDS

    c.add_argument("--kind", choices=KINDS, required=required, default=None,
                   help="zero: a random fraction of weights; ablate: whole filters/neurons; noise: Gaussian noise")
    c.add_argument("--level", type=float, required=required, default=None,
                   help="zero: fraction in [0, 1]; ablate: number of filters; noise: scale × each tensor's std")
    c.add_argument("--layers", nargs="+", default=None, help="zero/noise only these layers (e.g. conv2 fc1; default: all)")
    c.add_argument("--among", choices=AMONG, default="all",
                   help="ablate: pick among all filters (may hit ones already zero) or only nonzero ones (default all)")


def damage_config(args: argparse.Namespace, seeds: tuple[int, ...]):
    from ..experiments.damage import DamageConfig

    return DamageConfig(args.kind, (args.level,), seeds, tuple(args.layers) if args.layers else None,
                        args.among).validate()


def check_damage(cfg, ckpt: inputs.Checkpoint) -> None:
    """Damage that cannot apply to this net: an error before any folder is made."""
    from ..core.params import spec_of
    from ..experiments.damage import layer_mask

    if cfg.kind == "ablate" and cfg.levels[0] > len(ckpt.groups):
        raise ValueError(f"--level: {ckpt.name} has {len(ckpt.groups)} groups, cannot ablate {cfg.levels[0]:g}")
    if cfg.layers:
        layer_mask(spec_of(ckpt.model), list(cfg.layers))


def add(sub) -> None:
    d = sub.add_parser("damage", help="damage a net with several seeds and measure the accuracy drop",
                       description="Damage a checkpoint (seeds SEED … SEED+SEEDS−1), measure test accuracy before and "
                                   "after; write a run folder: one metrics row per seed, the first seed's damaged "
                                   "weights and its mask (damage.safetensors).")
    checkpoint_options(d, eval_default=0)
    damage_options(d, required=True)
    d.add_argument("--seeds", type=int, default=5, help="number of damage seeds (default 5)")
    d.add_argument("--seed", type=int, default=0, help="first damage seed (default 0)")
    d.add_argument("--out", required=True, help=RUN_FOLDER)
    d.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from ..core.path import Evaluation
    from ..experiments.damage import run_damage, summarize
    from ..store.runs import fresh_folder, run_meta

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = damage_config(args, tuple(range(args.seed, args.seed + args.seeds)))
    out = fresh_folder(args.out)
    ckpt, dataset, _, test_set = start(args)
    check_damage(cfg, ckpt)
    writer = writer_for(out, run_meta("damage", ckpt, dataset, test_set.source))
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
