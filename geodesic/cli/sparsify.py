"""`geodesic sparsify`: walk a checkpoint until whole filters are zero; with --paths K, K candidate paths in
parallel and the shortest reported."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ..infra.options import Option, add_options, apply_options
from ..store import data, inputs
from .common import backend_options, checkpoint_options, finished, path_option, progress, start, writer_for


def options() -> list[Option]:
    from ..core.targets import STRATEGIES

    return [
        Option("--filters", "filters", "number of groups to zero (conv filters; hidden neurons of an mlp)"),
        Option("--strategy", "strategy", "which groups to zero (with --paths K > 1: strategies in turn)", STRATEGIES),
        Option("--pull", "pull", "ρ: pull toward the start's function on the free weights, v + ρ|v|p̂, p̂ ∝ −∇D (0: none)"),
        Option("--pull-batch", "pull_batch", "images per pull and relaxation gradient, at most (halved with --probe when "
                                             "a step would leave room for fewer than 50 walk steps in half of --seconds)"),
        Option("--relax-steps", "relax_steps", "geodesic restore steps inside the hyperplane after arrival, at most "
                                               "(none: until --seconds are spent; 0: no relaxation)"),
        Option("--relax-eps", "relax_eps", "trust region ε of the first relaxation step"),
        Option("--relax-eps-final", "relax_eps_final", "ε of the last relaxation step (cosine decay)"),
        Option("--seconds", "seconds", "CPU seconds for the whole run: the walk must arrive within half of them "
                                       "(else it is projected and restored by descent), the relaxation fits the rest"),
        path_option("phi", "output map of the metric"),
        path_option("beta", "weight β of the direction term"),
        path_option("eps", "trust region ε of the walk's first step and its cap (|θ|² ≤ ε); each step measures "
                           "itself and shrinks or grows it"),
        path_option("probe", "probe batch size B (J has B·classes rows), at most (see --pull-batch)"),
        path_option("seed", "probe-batch and choice seed"),
        path_option("max_steps", "step cap of the walk (10000000: none, the CPU budget ends it; a walk it stops "
                                 "short is projected and restored when the run relaxes, as one the budget cuts)"),
        path_option("solver", "K = JJᵀ layer by layer (J never stored) or explicit J"),
        path_option("eval_every", "evaluate accuracy every k steps"),
        path_option("snapshot_every", "keep the weights every k steps"),
    ]


def add(sub) -> None:
    from ..experiments.sparsify import PRESETS

    s = sub.add_parser("sparsify", help="walk a trained net along a short path until whole filters are zero",
                       description="Walk a checkpoint along geodesic tangent steps until FILTERS whole groups (conv "
                                   "filters, hidden neurons) are exactly zero, then relax inside that hyperplane; "
                                   "write a run folder whose final.safetensors is the sparse net.")
    checkpoint_options(s, eval_default=2000)
    s.add_argument("--out", required=True, help="run folder to create (with --paths K > 1: a folder of K run folders)")
    s.add_argument("--preset", choices=sorted(PRESETS), default="recommended",
                   help="starting setting: recommended (benchmarked) or literal (the paper's algorithm); options "
                        "below change it (default recommended)")
    s.add_argument("--paths", type=int, default=1, help="candidate paths, run in parallel on the backend; the "
                                                       "shortest is reported (default 1)")
    backend_options(s)
    s.add_argument("--fraction", type=float, default=None,
                   help="zero this fraction of the net's prunable groups, in (0, 1] (instead of --filters)")
    add_options(s, options(), PRESETS["recommended"], ("literal", PRESETS["literal"]))
    s.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.sparsify import MIN_WALK_STEPS
    from ..store.runs import fresh_folder, run_meta

    base = config(args)
    if args.paths < 1:
        raise ValueError(f"--paths must be >= 1, got {args.paths}")
    out = fresh_folder(args.out)
    ckpt, dataset, train_set, test_set = start(args)
    check_sparsifiable(ckpt)
    base = with_fraction(base, args, len(ckpt.groups))
    if not base.filters <= len(ckpt.groups):
        raise ValueError(f"--filters must be between 1 and {len(ckpt.groups)} for {ckpt.name}, got {base.filters}")
    meta = run_meta("sparsify", ckpt, dataset, train_set.source, len(test_set), preset=args.preset)
    if args.paths == 1:
        from ..core.path import Evaluation

        o = one_path(ckpt, base, out, {**meta, "candidate": 0}, train_set, Evaluation(test_set.x, test_set.y),
                     f"path 1/1 ({base.strategy})")
        summary = o.summary()
        fitted = o.config
        if fitted is not None and (fitted.path.probe, fitted.pull_batch) != (base.path.probe, base.pull_batch):
            print(f"note: one walk step at probe {base.path.probe} and pull batch {base.pull_batch} would leave room "
                  f"for fewer than {MIN_WALK_STEPS} steps in half of --seconds ({base.seconds:g} CPU s): the run used "
                  f"probe {fitted.path.probe} and pull batch {fitted.pull_batch} (more --seconds keep them)")
        print_candidates(out, [{"path": out.name, "strategy": base.strategy, "seed": base.path.seed, **summary}],
                         test_set, single=True)
        if summary.get("restore_steps"):
            print(missed_note(base.seconds, summary))
        return finished(o.status, "walk", out)
    return candidates(args, base, out, meta, test_set)


def missed_note(seconds: float, summary: dict) -> str:
    """What a run whose walk was cut and restored by descent says, with the budget that would let the walk arrive
    when the walk could estimate it."""
    more = (f"about --seconds {summary['budget_to_arrive']} would let it walk there, by its steps so far"
            if summary.get("budget_to_arrive") else "more --seconds let it walk")
    return (f"note: the walk could not arrive within half of --seconds ({seconds:g} CPU s) in the linear regime; it "
            f"was projected onto the zero groups and restored by descent toward the dense function (no labels, "
            f"{summary['restore_steps']} steps): {more}")


def config(args: argparse.Namespace):
    """The SparsifyConfig that `sparsify`'s preset and options describe (validated)."""
    from ..experiments.sparsify import PRESETS

    return apply_options(args, options(), PRESETS[args.preset]).validate()


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


def check_sparsifiable(ckpt: inputs.Checkpoint) -> None:
    """Refuse, before any folder is made, a net with no prunable groups or layers the metric has no rule for."""
    from ..core.metric import check_layers

    if not ckpt.groups:
        raise ValueError(f"{ckpt.path}: {ckpt.name} has no prunable groups (conv filters, hidden neurons of Linear "
                         "layers): there is nothing to zero")
    check_layers(ckpt.model)


def one_path(ckpt: inputs.Checkpoint, cfg, folder: Path, meta: dict, train_set: data.Split, evaluation,
             label: str):
    """One sparsify run into `folder`, with a progress bar; its Outcome."""
    from ..experiments.sparsify import run_sparsify

    writer = writer_for(folder, meta)
    bar = progress(math.ceil(cfg.seconds), label, unit="CPU s")  # the budget ends the run, not a step count
    shown, cpu0 = {"D": float("nan")}, time.process_time()

    def on_row(r: dict) -> None:
        if r["distance"] == r["distance"]:  # under a budget D is measured every few steps only (RECORD_SHARE)
            shown["D"] = r["distance"]
        bar.set_postfix(step=r["step"], zero=r["groups_zero"], D=f"{shown['D']:.4f}", phase=r["phase"],
                        refresh=False)
        bar.update(min(int(time.process_time() - cpu0), bar.total) - bar.n)

    try:
        return run_sparsify(ckpt.model, ckpt.w, ckpt.groups, cfg, train_set, evaluation, writer=writer, on_row=on_row)
    finally:
        bar.close()


def candidates(args: argparse.Namespace, base, out: Path, meta: dict, test_set: data.Split) -> int:
    """--paths K: the candidates in parallel on the backend (local Ray by default), the shortest reported."""
    from ..experiments.sparsify import candidate_configs, run_candidates
    from ..infra.lifecycle import Status
    from ..store.runs import write_json
    from ..store.source import Source

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

    from ..experiments.sparsify import shortest

    best = shortest(rows)
    print(pd.DataFrame(rows).assign(shortest=[i == best for i in range(len(rows))]).to_string(index=False))
    folder = out if single else out / rows[best]["path"]
    print(f"shortest: {rows[best]['path']} (length {rows[best].get('length', math.nan):.4f}, accuracy "
          f"{rows[best].get('accuracy', math.nan):.4f} on {len(test_set)} {test_set.source} test images); "
          f"its sparse net: {folder / 'final.safetensors'}")
