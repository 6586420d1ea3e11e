"""How a net's outputs answer a task in each continual-learning scenario (van de Ven & Tolias, "Three scenarios
for continual learning").

A task keeps some of a dataset's classes (split-MNIST: a pair; permuted-MNIST: all ten). A `Head` is the slice of
the net's outputs a task is read from and the map from the dataset's labels to positions in that slice:

    task    the task's identity is given: only its own classes compete (the reference code's multi-head by
            masking): units = the task's classes, label = position of y among them
    domain  the task is not given and need not be named: one shared head of as many units as a task has
            classes; label = position of y within its task (split-MNIST: y mod 2, "odd or even")
    class   the task is not given and must be named: all classes seen so far compete; label = y

Logits restricted to `units` feed the cross-entropy and the argmax, so a net with 10 outputs serves every scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads on first use: the app draws the scenarios before it loads
    import torch

SCENARIOS = ("task", "domain", "class")


@dataclass(frozen=True)
class Head:
    units: tuple[int, ...]  # the output units in play, in order
    label_of: tuple[int, ...]  # label_of[y] = the position of dataset label y among units (−1: not this head's)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """out: (B, C) → (B, len(units))."""
        return out[:, list(self.units)]

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        """Dataset labels (B,) → positions in units (B,); every label must belong to the head."""
        import torch

        table = torch.tensor(self.label_of, dtype=torch.long, device=y.device)
        mapped = table[y]
        if bool((mapped < 0).any()):
            raise ValueError(f"labels {sorted(set(y[mapped < 0].tolist()))} are not read by the head {self.units}")
        return mapped

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the argmax over the head's units is the label's unit."""
        return self.logits(out).argmax(1) == self.labels(y)


def check_scenario(scenario: str) -> str:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    return scenario


def head(classes: list[tuple[int, ...]], j: int, seen: int, scenario: str, n_labels: int = 10) -> Head:
    """The head task j is read from once tasks 0 … seen−1 have been learned (seen ≥ j + 1 for a learned task; a
    task not learned yet is read as if it were the next one, seen = j + 1). classes[t]: task t's dataset labels."""
    check_scenario(scenario)
    own = classes[j]
    if scenario == "task":
        units = own
        label_of = {y: i for i, y in enumerate(own)}
    elif scenario == "domain":
        width = max(len(c) for c in classes)
        units = tuple(range(width))
        label_of = {y: i for i, y in enumerate(own)}
    else:
        upto = max(seen, j + 1)
        units = tuple(sorted({y for c in classes[:upto] for y in c}))
        label_of = {y: i for i, y in enumerate(units)}
    return Head(tuple(units), tuple(label_of.get(y, -1) for y in range(n_labels)))
