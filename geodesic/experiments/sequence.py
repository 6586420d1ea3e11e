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

from typing import TYPE_CHECKING, Callable

import torch

from ..core.scenario import Head, head
from ..core.split import Split
from ..store.tasks import Task

if TYPE_CHECKING:
    from .continual import LearnConfig


def summary(R: torch.Tensor, b: torch.Tensor | None = None) -> dict[str, float]:
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


def learn_sequence(model: torch.nn.Module, tasks: list[Task], train: dict[str, Split], test: dict[str, Split],
                   scenario: str, method: str, cfg: LearnConfig, seed: int) -> dict:
    """Learn `tasks` in order with a method of continual.py; returns the accuracy matrix R (T, T), b (the net
    before any task), each task's steps and CPU seconds. train/test: the datasets' splits by name."""
    from .continual import Learned, learn, make

    T = len(tasks)
    classes = [t.classes for t in tasks]
    tests = [t.apply(test[t.dataset]) for t in tasks]
    learner = make(method, cfg, seed)
    model.eval()
    b = torch.tensor(row(model, tasks, tests, 0, scenario))
    R = torch.full((T, T), float("nan"))
    spent, earlier = [], []
    for t, task in enumerate(tasks):
        now = Learned(task.apply(train[task.dataset]), head(classes, t, t + 1, scenario))
        for j, old in enumerate(earlier):
            old.current = head(classes, j, t + 1, scenario)
        spent.append(learn(model, learner, now, earlier, seed * 1000 + t))
        earlier.append(now)
        R[t] = torch.tensor(row(model, tasks, tests, t + 1, scenario))
    return {"R": R, "b": b, "spent": spent, **summary(R, b)}
