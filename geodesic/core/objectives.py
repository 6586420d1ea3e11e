"""Direction fields v(w): where each step of a path wants to go.

- sparsify(T): v = −w on the coordinates T (whole filters: weights and bias), 0 elsewhere — the direction
  to the nearest point of the hyperplane {w_T = 0}. Free coordinates move because the metric makes them
  compensate.
- restore(w_ref): v = −∇_w D(w, w_ref), toward the function of w_ref (frozen coordinates masked by the path).
- learn(task): v = −∇_w L_task(w), cross-entropy on another task's data.
- with_pull(v, w_ref, ρ): v + ρ|v| p̂ with p̂ ∝ −∇_w D(w, w_ref), a correction toward the original function added to any
  field (first-order metric preservation on a small probe batch drifts; this pulls the drift back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .metric import distance_grad, model_fn
from .scenario import Head
from .split import Split

Field = Callable[[torch.Tensor], torch.Tensor]  # w (n,) -> v (n,)

# Independent random streams of one run: a sampler draws from seed + its stream, fixed so that runs reproduce.
# sparsify and recovery: probe batches, pull/restore batches, …, the trial steps that size a run's batches
PROBE, PULL, RELAX, CHOICE, KEEP, TRIAL = 0, 1, 2, 3, 4, 5
LEARN_B, PULL_A, RELAX_PATH = 1, 2, 10  # the two-task walk: task-B batches, pull toward A, path relaxation


class Sampler(Protocol):
    def __call__(self, size: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class BatchSampler:
    """Seeded minibatches of a split: a fresh batch every call."""

    data: Split
    generator: torch.Generator

    @classmethod
    def of(cls, data: Split, seed: int) -> "BatchSampler":
        return cls(data, torch.Generator().manual_seed(seed))

    def __call__(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.batch(size, self.generator)


def sparsify(target: torch.Tensor) -> Field:
    """v = −w ⊙ 1_T for a boolean mask T of shape (n,)."""
    mask = target.to(torch.bool)
    return lambda w: torch.where(mask, -w, torch.zeros_like(w))


def restore(model: nn.Module, w_ref: torch.Tensor, sampler: Sampler, batch: int = 256,
            phi: str = "sqrt_probs") -> Field:
    """v = −∇_w D(w, w_ref) on a fresh batch each call."""
    def field(w: torch.Tensor) -> torch.Tensor:
        x, _ = sampler(batch)
        return -distance_grad(model, w, w_ref, x, phi)
    return field


def learn(model: nn.Module, sampler: Sampler, batch: int = 256, read: Head | None = None) -> Field:
    """v = −∇_w CE(f(x, w), y) on a fresh batch of the task each call; with a head (scenario.py), the cross-entropy
    of the head's units against the labels' positions among them."""
    f = model_fn(model)

    def field(w: torch.Tensor) -> torch.Tensor:
        x, y = sampler(batch)
        w = w.detach().requires_grad_(True)
        out = f(w, x)
        loss = F.cross_entropy(out, y) if read is None else F.cross_entropy(read.logits(out), read.labels(y))
        (g,) = torch.autograd.grad(loss, w)
        return -g
    return field


def with_pull(field: Field, model: nn.Module, w_ref: torch.Tensor, sampler: Sampler, rho: float,
              batch: int = 256, phi: str = "sqrt_probs", only: torch.Tensor | None = None) -> Field:
    """v(w) + ρ |v(w)| p̂, p̂ = −∇_w D(w, w_ref) / |∇_w D(w, w_ref)|: the field plus a pull back toward the
    reference function, scaled relative to the field so the walk keeps its pace toward the target.

    `only` (boolean (n,)) restricts the pull to those coordinates; a sparsify walk pulls only the free
    coordinates so that the pull never fights the move of w_T toward 0.
    """
    if rho == 0:
        return field
    back = restore(model, w_ref, sampler, batch, phi)

    def pulled(w: torch.Tensor) -> torch.Tensor:
        v, p = field(w), back(w)
        if only is not None:
            p = torch.where(only, p, torch.zeros_like(p))
        norm = p.norm()
        return v if norm == 0 else v + (rho * v.norm() / norm) * p

    return pulled
