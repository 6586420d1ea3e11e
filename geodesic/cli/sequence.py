"""`geodesic sequence`: learn a task sequence with every method × seed (Ray tasks); the accuracy matrices and a
results table."""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from ..infra import threads
from .common import backend_options, progress
from .sweep import numbers


def names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add(sub) -> None:
    from ..core.scenario import SCENARIOS
    from ..experiments.continual import METHODS, LearnConfig
    from ..store import zoo

    d = LearnConfig()
    q = sub.add_parser("sequence", help="learn tasks one after another with every method × seed; ACC, BWT, FWT",
                       description="Learn a sequence of tasks in order with each method and seed, every method with "
                                   "the same CPU seconds and steps per task and the same memory of images per earlier "
                                   "task, each as a Ray task; each cell is a run folder under OUT/cells (its accuracy "
                                   "matrix R[i, j]: task j after learning task i, on full test sets) and a row of "
                                   "OUT/results.csv (and .parquet) with ACC, BWT, FWT and forgetting. Rerun the same "
                                   "command to resume; add methods or seeds to grow it.")
    q.add_argument("--tasks", default="split-mnist",
                   help="permuted-mnist:T (T tasks), split-mnist (0/1, 2/3, …), or datasets such as mnist,fashion-mnist "
                        "(default split-mnist)")
    q.add_argument("--scenario", choices=SCENARIOS, default="task",
                   help="task: the task is given; domain: one shared head; class: all classes seen compete "
                        "(van de Ven & Tolias; default task)")
    q.add_argument("--methods", type=names, default=METHODS, help=f"comma-separated, among {','.join(METHODS)} "
                                                                   "(default all)")
    q.add_argument("--seeds", type=numbers(int, "--seeds"), default=(0,), help="e.g. 0,1,2 (default 0)")
    q.add_argument("--memory", type=int, default=d.memory,
                   help=f"images kept per earlier task by every method that keeps any (default {d.memory})")
    q.add_argument("--seconds", type=float, default=30.0, help="CPU seconds per task, one thread (default 30)")
    q.add_argument("--steps", type=int, default=d.steps, help=f"steps per task at most (default {d.steps})")
    q.add_argument("--model", choices=sorted(zoo.ZOO), default="mlp100",
                   help="the zoo net each cell starts from, freshly initialized by its seed (default mlp100)")
    q.add_argument("--arch", help="FILE.py:FACTORY, a net of your own instead of --model")
    q.add_argument("--task-seed", type=int, default=0, help="seed of permuted-MNIST's permutations (default 0)")
    q.add_argument("--data-source", choices=("auto", "full", "bundled"), default="auto",
                   help="full datasets (installed by `make data`), the bundled subsets, or auto (default)")
    q.add_argument("--out", required=True, help="folder (created; resumed or grown when it holds the same sequence)")
    backend_options(q)
    q.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..experiments.continual import LearnConfig
    from ..experiments.sequence_cells import SequenceSpec, run_sequences
    from ..infra.lifecycle import Status, Stop

    threads.configure(1)
    learn = replace(LearnConfig(), memory=args.memory, seconds=args.seconds, steps=args.steps)
    spec = SequenceSpec(args.tasks, args.scenario, args.methods, args.seeds, args.model, args.arch, args.data_source,
                        args.task_seed, learn).validate()
    bar = progress(0, "cells", unit="cell")

    def on_cell(row: dict, done: int, total: int) -> None:
        bar.total = total
        bar.set_postfix(last=row["cell"], status=row.get("status"), ACC=f"{row.get('ACC', math.nan):.3f}",
                        refresh=False)
        bar.update(done - bar.n)

    stop = Stop()

    def on_ctrl_c(signum, frame) -> None:  # the first Ctrl-C stops; a second one interrupts at once
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        table = run_sequences(spec, args.out, args.backend, args.address, args.workers, on_cell, stop)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if stop.is_set():
        print(f"interrupted; every finished cell is kept in {args.out}: run the same command to resume", file=sys.stderr)
        return 130
    cols = ["method", "seed", "ACC", "BWT", "FWT", "forgetting", "seconds", "steps", "status"]
    print(table[cols].to_string(index=False))
    errors = table[table["status"] == Status.ERROR]
    for _, r in errors.iterrows():
        print(f"error: {r['cell']}: {r['error']}", file=sys.stderr)
    print(f"results: {Path(args.out) / 'results.csv'} (and .parquet); run folders: {Path(args.out) / 'cells'}")
    return 1 if len(errors) else 0
