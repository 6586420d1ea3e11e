"""`geodesic merge`: from net A (task A) walk toward learning task B, relax the path A→B, compare with the
straight line, fine-tuning and joint training."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..infra import threads
from ..infra.options import Option, add_options, apply_options
from ..store import data, inputs, zoo
from .common import (
    ARCH_HELP,
    DATA_SOURCES,
    RUN_FOLDER,
    finished,
    one_architecture,
    path_option,
    progress,
    threads_options,
    warn,
    writer_for,
)


def options() -> list[Option]:
    from ..experiments.merge import DIRECTIONS, PHASES

    return [
        Option("--phases", "phases", f"comma-separated, run in this order, of: {', '.join(PHASES)}"),
        Option("--direction", "direction", "walk direction: labels v = −∇CE_B; teacher v = −∇D(w, w_B)", DIRECTIONS),
        Option("--pull", "pull", "ρ: pull toward A's function on A's images, relative to |v| (0: none)"),
        Option("--learn-batch", "learn_batch", "B images per direction gradient"),
        Option("--pull-batch", "pull_batch", "A images per pull gradient"),
        path_option("phi", "output map of the metric and of D"),
        path_option("beta", "weight β of the direction term"),
        path_option("eps", "trust region ε (|θ|² ≤ ε) of the first walk step"),
        path_option("eps_final", "ε of the last walk step (cosine decay; 0: constant ε)"),
        path_option("probe", "probe batch B of A's images (J has B·classes rows)"),
        path_option("seed", "sampling seed"),
        path_option("max_steps", "walk steps", flag="--steps"),
        path_option("eval_every", "accuracy on both tasks every k walk/fine-tuning steps"),
        path_option("snapshot_every", "keep the walk's weights every k steps"),
        Option("--eval-size", "eval_size", "test images per task for accuracy along the walk (0: all)"),
        Option("--points", "points", "N: segments of the relaxed path and of the straight line"),
        Option("--relax-iters", "relax_iters", "Adam iterations of the relaxation"),
        Option("--relax-lr", "relax_lr", "Adam learning rate of the relaxation (cosine-decayed)"),
        Option("--relax-batch", "relax_batch", "images of each task per relaxation iteration"),
        Option("--finetune-steps", "finetune_steps", "finetune phase: Adam steps on B from A"),
        Option("--joint-epochs", "joint_epochs", "joint phase: epochs on A ∪ B from the seed-0 init"),
    ]


def add(sub) -> None:
    from ..experiments.merge import MergeConfig

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
    m.add_argument("--out", required=True, help=RUN_FOLDER)
    m.add_argument("--data", choices=DATA_SOURCES, default="auto", help="full sets or the bundled subsets")
    threads_options(m)
    add_options(m, options(), MergeConfig())
    m.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.merge import MergeConfig, run_merge
    from ..store.runs import fresh_folder, run_meta

    cfg = apply_options(args, options(), MergeConfig()).validate()
    threads.configure(args.threads)
    out = fresh_folder(args.out)
    a, b, task_a, task_b = nets(args)
    (train_a, test_a), (train_b, test_b) = inputs.splits(task_a, args.data), inputs.splits(task_b, args.data)
    writer = writer_for(out, run_meta("merge", a, task_a, train_a.source, len(test_a), checkpoint_b=str(args.b),
                                      task_b=task_b))
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


def nets(args: argparse.Namespace) -> tuple[inputs.Checkpoint, inputs.Checkpoint, str, str]:
    """Nets A and B (one architecture), their tasks; warns when a net measures far below its card. Refuses a net
    whose layers the metric has no rule for."""
    from ..core.metric import check_layers

    one_architecture(args)
    a, b = inputs.open_checkpoint(args.a, args.model, args.arch), inputs.open_checkpoint(args.b, args.model, args.arch)
    if a.name != b.name:
        raise ValueError(f"--a is a {a.name} and --b is a {b.name}: a merge needs two nets of one architecture")
    task_a, task_b = inputs.dataset_of(a, args.task_a), inputs.dataset_of(b, args.task_b)
    warn(inputs.card_warning(a, task_a))
    warn(inputs.card_warning(b, task_b))
    check_layers(a.model)
    return a, b, task_a, task_b


def print_merge(o, task_a: str, task_b: str, test_a: data.Split, test_b: data.Split, out: Path) -> None:
    s = o.summary
    labels = {"walk": "walk (end)", "relax_best": "relaxed path (best point)", "line_best": "straight line (best point)",
              "line_mid": "weight average (midpoint)", "finetune": "fine-tune A on B", "joint": "joint training"}
    for key, label in labels.items():
        if f"{key}_accuracy_a" in s:
            print(f"{label:28s} {task_a} {s[f'{key}_accuracy_a']:.4f}   {task_b} {s[f'{key}_accuracy_b']:.4f}")
    print(f"status {o.status.value}; accuracy on {len(test_a)} + {len(test_b)} {test_a.source} test images; "
          f"run folder {out}")
