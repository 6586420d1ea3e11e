"""Learning tasks one after another: the accuracy matrix and what the field reads from it.

R[i, j] is the accuracy on task j's test set after learning tasks 0 … i (T × T; a task not yet learned is read
through the head it will have, scenario.head). With b[j] the accuracy of the net before any task (its
initialization), following Lopez-Paz & Ranzato (2017, "Gradient Episodic Memory") and Chaudhry et al. (2018):

    ACC = 1/T Σ_j R[T−1, j]                        mean accuracy after the last task
    BWT = 1/(T−1) Σ_{j<T−1} (R[T−1, j] − R[j, j])   what learning later tasks did to earlier ones (< 0: forgetting)
    FWT = 1/(T−1) Σ_{j≥1} (R[j−1, j] − b[j])        what earlier tasks did for a task not yet learned
    forgetting = 1/(T−1) Σ_{j<T−1} (max_{l<T−1} R[l, j] − R[T−1, j])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..core.params import flatten
from ..core.scenario import SCENARIOS, Head, head
from ..core.split import Split
from ..infra.lifecycle import Phase, Status, Stop, execute
from ..store.runs import RunWriter
from ..store.tasks import FILE as TASKS_FILE
from ..store.tasks import Task, parse
from ..store.tasks import write as write_tasks
from .continual import METHODS, LearnConfig, Learned, learn, make

ACCURACY_FILE = "accuracy.safetensors"  # R (T, T) and b (T,) of a sequence run


def summary_of(R: torch.Tensor, b: torch.Tensor | None = None) -> dict[str, float]:
    """ACC, BWT, FWT (NaN without b) and forgetting of an accuracy matrix R (T, T); a single task has no BWT."""
    R = torch.as_tensor(R, dtype=torch.float64)
    T = R.shape[0]
    if R.shape != (T, T) or T < 1:
        raise ValueError(f"the accuracy matrix must be square, not {tuple(R.shape)}")
    nan = float("nan")
    acc = R[-1].mean().item()
    if T == 1:
        return {"ACC": acc, "BWT": nan, "FWT": nan, "forgetting": nan}
    earlier = torch.arange(T - 1)
    bwt = (R[-1, :-1] - R[earlier, earlier]).mean().item()
    fwt = nan if b is None else (R[earlier, earlier + 1] - torch.as_tensor(b, dtype=torch.float64)[1:]).mean().item()
    forgetting = (R[:-1, :-1].max(0).values - R[-1, :-1]).mean().item()
    return {"ACC": acc, "BWT": bwt, "FWT": fwt, "forgetting": forgetting}


@torch.no_grad()
def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], data: Split, read: Head, batch: int = 2000) -> float:
    """Share of `data` (a task's test images) whose argmax over the head's units is the label's unit."""
    if len(data) == 0:
        raise ValueError(f"no test images for this task in {data.name} {data.split}")
    right = sum(int(read.correct(forward(data.x[i:i + batch]), data.y[i:i + batch]).sum())
                for i in range(0, len(data), batch))
    return right / len(data)


def row(forward: Callable[[torch.Tensor], torch.Tensor], tasks: list[Task], tests: list[Split], learned: int,
        scenario: str) -> list[float]:
    """R[learned − 1, :] (or b with learned = 0): the accuracy on every task's test images after `learned` tasks."""
    classes = [t.classes for t in tasks]
    return [accuracy(forward, tests[j], head(classes, j, learned, scenario)) for j in range(len(tasks))]


# --- one sequence as a run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceConfig:
    """One method learning one task sequence (all recorded in the run's meta.json)."""

    tasks: str = "split-mnist"  # store.tasks.parse: permuted-mnist:T, split-mnist, or datasets
    scenario: str = "task"  # core.scenario.SCENARIOS
    method: str = "geodesic"  # continual.METHODS
    seed: int = 0  # the net's initialization, batches, memory
    task_seed: int = 0  # the permutations of permuted-MNIST (the same for every method and seed)
    learn: LearnConfig = field(default_factory=LearnConfig)

    def validate(self) -> "SequenceConfig":
        from ..core.path import require

        tasks = parse(self.tasks, self.task_seed)
        shared = len({t.classes for t in tasks}) == 1 and len(tasks) > 1
        lc = self.learn
        require([
            (self.scenario in SCENARIOS, f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}"),
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {self.method!r}"),
            (not shared or self.scenario == "domain",
             f"the tasks of {self.tasks} share their classes: with one ten-way output only the domain scenario tells "
             "them apart (task and class would need a head per task)"),
            (0 <= self.seed < 2**32 and 0 <= self.task_seed < 2**32, "seeds must be in [0, 2**32)"),
            (lc.steps >= 1 and lc.seconds > 0, f"steps must be >= 1 and seconds > 0, got {lc.steps}, {lc.seconds}"),
            (lc.batch >= 1 and 0 < lc.lr < math.inf, f"batch must be >= 1 and lr > 0, got {lc.batch}, {lc.lr}"),
            (lc.memory >= 1, f"memory must be >= 1 image per task, got {lc.memory}"),
            (all(0 <= v < math.inf for v in (lc.ewc_lambda, lc.si_c, lc.pull)),
             f"EWC λ, SI c and the pull must be finite and >= 0, got {lc.ewc_lambda}, {lc.si_c}, {lc.pull}"),
        ])
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SequenceOutcome:
    R: torch.Tensor  # (T, T); rows of tasks not learned (a stop) are NaN
    b: torch.Tensor  # (T,)
    status: Status
    summary: dict  # ACC, BWT, FWT, forgetting, seconds, steps, …
    rows: list[dict]  # one per task learned after the row of the net before any task
    w: torch.Tensor


def run_sequence(model: nn.Module, train: dict[str, Split], test: dict[str, Split], cfg: SequenceConfig,
                 writer: RunWriter | None = None, stop: Stop | None = None,
                 on_row: Callable[[dict], None] | None = None, tasks: list[Task] | None = None) -> SequenceOutcome:
    """Learn cfg.tasks in order with cfg.method, one row per task learned (R's row as acc.<j>, its steps and CPU
    seconds) after a row for the net before any task (task −1: b). The run folder gets tasks.safetensors, the
    weights after each task as snapshots (step t + 1; step 0 the start), accuracy.safetensors (R, b), the final
    net with its card, and ACC, BWT, FWT and forgetting in its summary. A stop ends the run after the task being
    learned. `tasks` replaces cfg.tasks' sequence (a part of one, in tests).

    train/test: the datasets' splits by name ({"mnist": …})."""
    cfg.validate()
    tasks = parse(cfg.tasks, cfg.task_seed) if tasks is None else tasks
    classes = [t.classes for t in tasks]
    tests = [t.apply(test[t.dataset]) for t in tasks]
    learner, earlier = make(cfg.method, cfg.learn, cfg.seed), []
    T, w0 = len(tasks), flatten(model)
    R, b = torch.full((T, T), float("nan")), torch.full((T,), float("nan"))
    snaps: list[tuple[int, torch.Tensor]] = [(0, w0.clone())]
    if writer is not None:
        writer.begin(model, w0, config=cfg.as_dict(), task_names=[t.name for t in tasks])
        write_tasks(writer.dir / TASKS_FILE, tasks)

    def accuracies(learned: int) -> dict:
        model.eval()
        return {f"acc.{j}": a for j, a in enumerate(row(model, tasks, tests, learned, cfg.scenario))}

    def rows():
        first = accuracies(0)
        b[:] = torch.tensor(list(first.values()))
        yield {"phase": "sequence", "step": 0, "task": -1, "name": "before", "steps": 0, "seconds": 0.0, **first}
        for t, task in enumerate(tasks):
            for j, old in enumerate(earlier):
                old.current = head(classes, j, t + 1, cfg.scenario)
            now = Learned(task.apply(train[task.dataset]), head(classes, t, t + 1, cfg.scenario))
            spent = learn(model, learner, now, earlier, cfg.seed * 1000 + t)
            earlier.append(now)
            accs = accuracies(t + 1)
            R[t] = torch.tensor(list(accs.values()))
            snaps.append((t + 1, flatten(model)))
            yield {"phase": "sequence", "step": t + 1, "task": t, "name": task.name, "steps": spent["steps"],
                   "seconds": spent["seconds"], "ACC": R[t, :t + 1].mean().item(), **accs}

    def summary(rec) -> dict:
        done = int((~R.isnan().any(1)).sum())
        s = summary_of(R[:done, :done], b[:done]) if done else {}
        spent = [r for r in rec.rows if r.get("task", -1) >= 0]
        out = {**s, "accuracy": s.get("ACC"), "tasks_learned": done, "R": R.tolist(), "b": b.tolist(),
               "seconds": sum(r["seconds"] for r in spent), "steps": sum(r["steps"] for r in spent),
               "memory": cfg.learn.memory, "status": rec.status}
        if writer is not None:
            writer.save_extra(ACCURACY_FILE, {"R": R, "b": b})
        return out

    phase = Phase("sequence", rows(), snapshots=lambda: snaps, weights=lambda: flatten(model))
    rec = execute([phase], writer, stop, on_row, summary)
    final = summary(rec)
    return SequenceOutcome(R, b, rec.status, final, rec.rows, flatten(model))
