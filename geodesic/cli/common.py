"""What the commands share: the option groups (checkpoint and data, threads, backend, the path's options) and the
wiring every run goes through (open the inputs, make the run folder, a progress bar, the exit code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..infra import threads
from ..infra.options import Option
from ..store import data, inputs, zoo

DATA_SOURCES = ("auto", "full", "bundled")
ARCH_HELP = ("your own architecture: FILE.py:FACTORY or package.module:FACTORY, a function with no arguments "
             "returning the nn.Module whose state dict --checkpoint holds (the file's code runs)")
RUN_FOLDER = "run folder to create (must not exist or be empty)"


# --- option groups ---------------------------------------------------------------------------------------


def checkpoint_options(c: argparse.ArgumentParser, eval_default: int, checkpoint: bool = True,
                       source_flag: str = "--data", threads_option: bool = True) -> None:
    """--checkpoint, --model, --arch, --dataset, --data (or `source_flag`), --eval-size and --threads."""
    if checkpoint:
        c.add_argument("--checkpoint", required=True, help=".safetensors checkpoint with its .json card")
    c.add_argument("--model", choices=sorted(zoo.ZOO), help="architecture, for a checkpoint without a .json card")
    c.add_argument("--arch", help=ARCH_HELP)
    c.add_argument("--dataset", choices=sorted(data.FOLDERS), help="data of the metric and evaluation (default: the card's)")
    c.add_argument(source_flag, dest="data", choices=DATA_SOURCES, default="auto",
                   help="full sets, or the bundled subsets (auto: full when installed)")
    c.add_argument("--eval-size", type=int, default=eval_default, help=f"test images for accuracy (0: all; default {eval_default})")
    if threads_option:
        threads_options(c, env=True)


def threads_options(c: argparse.ArgumentParser, env: bool = False) -> None:
    """--threads (default: geodesic.infra.threads.DEFAULT; `env`: the help names $GEODESIC_THREADS too)."""
    more = ", or $GEODESIC_THREADS" if env else ""
    c.add_argument("--threads", type=int, default=None, help=f"torch CPU threads (default {threads.DEFAULT}{more})")


def backend_options(c: argparse.ArgumentParser) -> None:
    """--backend, --address, --workers: where parallel runs go (geodesic.infra.backend)."""
    c.add_argument("--backend", choices=("ray", "loop"), default="ray",
                   help="ray: Ray tasks, on a local Ray (127.0.0.1) started for the command or the cluster at "
                        "--address; loop: one after another in this process (default ray)")
    c.add_argument("--address", default=None, help="HOST:PORT of a running Ray cluster (its nodes must see "
                                                   "--checkpoint, the data and --out)")
    c.add_argument("--workers", type=int, default=None,
                   help="CPUs of the local Ray, one run each (default: this machine's cores)")


def path_option(field: str, help: str, flag: str | None = None) -> Option:
    """The option of PathConfig's `field` ("beta" → --beta on path.beta), with its choices when it has any."""
    from ..core.metric import OUTPUT_MAPS
    from ..core.path import SOLVERS

    choices = {"phi": tuple(sorted(OUTPUT_MAPS)), "solver": SOLVERS}.get(field)
    return Option(flag or "--" + field.replace("_", "-"), f"path.{field}", help, choices)


# --- wiring ----------------------------------------------------------------------------------------------


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
    """The RunWriter of the run folder `out` (checked by `runs.fresh_folder`), meta from `runs.run_meta`."""
    from ..store.runs import RunWriter

    return RunWriter(meta, root=out.parent, run_id=out.name)


def progress(total: int, desc: str, unit: str = "step"):
    """A tqdm bar on a terminal, a plain line now and then on a file or pipe (geodesic.infra.progress)."""
    from ..infra.progress import progress as bar

    return bar(total, desc, unit)


def finished(status, what: str, where: Path) -> int:
    """Exit code of a run: 0 unless it failed (diverged), with a message saying so."""
    if status.failed:
        print(f"error: the {what} {status.value}; what was done is in {where}", file=sys.stderr)
        from ..infra.lifecycle import DIVERGED_HINT, Status

        if status is Status.DIVERGED:
            print(f"hint: {DIVERGED_HINT}", file=sys.stderr)
        return 1
    return 0


def run_cells(run, out: str, score: str, columns: list[str]) -> int:
    """Drive a grid of cells (a sweep, a task sequence): `run(on_cell, stop)` runs them and returns the results
    table. A progress bar over the cells (the last cell's status and `score`); the first Ctrl-C stops the grid,
    keeping every finished cell (exit 130), a second one interrupts at once; then the table's `columns`, each
    failed cell's error, and where the results are. Exit 1 when a cell failed."""
    import math
    import signal

    from ..infra.lifecycle import Status, Stop

    bar = progress(0, "cells", unit="cell")

    def on_cell(row: dict, done: int, total: int) -> None:
        bar.total = total
        bar.set_postfix(refresh=False, **{"last": row["cell"], "status": row.get("status"),
                                           score: f"{row.get(score, math.nan):.3f}"})
        bar.update(done - bar.n)

    stop = Stop()

    def on_ctrl_c(signum, frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    # a Stop rather than KeyboardInterrupt: raised inside Ray's client code, the latter was sometimes lost
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        table = run(on_cell, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if stop.is_set():
        print(f"interrupted; every finished cell is kept in {out}: run the same command to resume", file=sys.stderr)
        return 130
    print(table[columns].to_string(index=False))
    errors = table[table["status"] == Status.ERROR]
    for _, r in errors.iterrows():
        print(f"error: {r['cell']}: {r['error']}", file=sys.stderr)
    print(f"results: {Path(out) / 'results.csv'} (and .parquet); run folders: {Path(out) / 'cells'}")
    return 1 if len(errors) else 0
