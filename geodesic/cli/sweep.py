"""`geodesic sweep`: every method × sparsity × seed × data budget as Ray tasks; a results table."""

from __future__ import annotations

import argparse

from ..infra import threads
from .common import backend_options, checkpoint_options, one_architecture, run_cells


def numbers(kind: type, what: str):
    """An argparse type: a comma-separated list of `kind` ("30,40,50")."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: a comma-separated list of numbers, got {text!r}") from None

    return parse


def add(sub) -> None:
    from ..experiments.methods import METHODS, RECAL

    w = sub.add_parser("sweep", help="every method × sparsity × seed × data budget as Ray tasks; a results table",
                       description="Run every cell (method × sparsity × seed × training images), each with the same "
                                   "CPU budget on one thread, as Ray tasks; each cell is a run folder under "
                                   "OUT/cells and a row of OUT/results.csv (and .parquet). Rerun the same command "
                                   "to resume: finished cells are kept; add sparsities, methods, seeds or data "
                                   "budgets (same checkpoint, data and --seconds) to grow the sweep.")
    checkpoint_options(w, eval_default=0, source_flag="--data-source", threads_option=False)  # one thread per cell
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
    w.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.sweep import SweepSpec, run_sweep

    threads.configure(1)
    spec = SweepSpec(source(args), filters=args.filters or (), fractions=args.fractions or (),
                     methods=args.methods, seeds=args.seeds, data=args.images, seconds=args.seconds).validate()
    cols = ["method", "filters", "seed", "data", "accuracy", "seconds", "steps", "status"]
    return run_cells(lambda on_cell, stop: run_sweep(spec, args.out, args.backend, args.address, args.workers,
                                                     on_cell, stop), args.out, "accuracy", cols)


def source(args: argparse.Namespace):
    from ..store.source import Source

    one_architecture(args)
    return Source(str(args.checkpoint), args.dataset, args.data, args.eval_size, args.model, args.arch)
