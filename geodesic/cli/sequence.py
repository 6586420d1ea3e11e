"""`geodesic sequence`: learn a task sequence with every method × seed (Ray tasks); the accuracy matrices and a
results table."""

from __future__ import annotations

import argparse

from ..infra import threads
from .common import backend_options, run_cells
from .sweep import numbers


def names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add(sub) -> None:
    from ..core.scenario import SCENARIOS
    from ..experiments.choices import DEFAULT_MEMORY, MEMORY
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
    per = ", ".join(f"{m} on {k}" for k, m in MEMORY.items())
    q.add_argument("--memory", type=int, help="images kept per earlier task by every method that keeps any "
                                              f"(default: the benchmark's, {per}, else {DEFAULT_MEMORY})")
    q.add_argument("--seconds", type=float, default=30.0, help="CPU seconds per task, one thread (default 30)")
    q.add_argument("--steps", type=int, default=d.steps, help=f"steps per task at most (default {d.steps})")
    for flag, what in (("--ewc-lambda", "EWC's λ"), ("--si-c", "SI's c"), ("--pull", "the geodesic's pull ρ")):
        q.add_argument(flag, type=float, help=f"{what} (default: the value measured for the benchmark, "
                                              "continual.STRENGTHS)")
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
    from ..experiments.continual import config_for
    from ..experiments.sequence_cells import SequenceSpec, run_sequences

    threads.configure(1)
    given = {k: getattr(args, k) for k in ("ewc_lambda", "si_c", "pull", "memory") if getattr(args, k) is not None}
    learn = config_for(args.tasks, seconds=args.seconds, steps=args.steps, **given)
    spec = SequenceSpec(args.tasks, args.scenario, args.methods, args.seeds, args.model, args.arch, args.data_source,
                        args.task_seed, learn).validate()
    cols = ["method", "seed", "ACC", "BWT", "FWT", "forgetting", "seconds", "steps", "status"]
    return run_cells(lambda on_cell, stop: run_sequences(spec, args.out, args.backend, args.address, args.workers,
                                                         on_cell, stop), args.out, "ACC", cols)
