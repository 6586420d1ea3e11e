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

from typing import Callable

import torch

from ..core.scenario import Head, head
from ..core.split import Split
from ..store.tasks import Task


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
