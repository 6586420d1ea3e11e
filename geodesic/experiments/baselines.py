"""What the geodesic path is compared with: magnitude filter pruning, with and without fine-tuning."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.metric import model_fn, output_map
from ..core.params import Group, group_mask
from ..core.targets import smallest_groups
from ..store.data import Split

SCHEDULES = ("constant", "cosine")


def magnitude_prune(w: torch.Tensor, groups: list[Group], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the `count` smallest layer-normalized groups; returns (pruned w, boolean mask of zeroed coords)."""
    mask = group_mask(smallest_groups(w, groups, count), w.numel())
    return torch.where(mask, torch.zeros_like(w), w), mask


def descend(model: nn.Module, w: torch.Tensor, hold: torch.Tensor, train: Split, optimizer: str = "adam",
            lr: float = 1e-3, batch: int = 128, seed: int = 0, momentum: float = 0.9,
            w_teacher: torch.Tensor | None = None, phi: str = "sqrt_probs",
            lr_scale: Callable[[], float] | None = None) -> Iterator[torch.Tensor]:
    """Minibatch descent from w, the coordinates `hold` kept at their values (∇_hold := 0), on the task loss
    CE(f(x, w), y), or with `w_teacher` on D = |φ f(x, w) − φ f(x, w_teacher)|² (distillation). "sgd"
    (heavy-ball momentum) or "adam"; `lr_scale()`, asked before every step, multiplies lr. Yields a copy of w
    after every step, endlessly (the caller may keep it; the next step does not change it)."""
    f, out, g = model_fn(model), output_map(phi), torch.Generator().manual_seed(seed)
    keep = (~hold).to(w.dtype)
    p = w.detach().clone().requires_grad_(True)
    held = w[hold].detach().clone()
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum) if optimizer == "sgd" else torch.optim.Adam([p], lr=lr)
    while True:
        if lr_scale is not None:
            for group in opt.param_groups:
                group["lr"] = lr * lr_scale()
        x, y = train.batch(batch, g)
        logits = f(p, x)
        if w_teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                target = out(f(w_teacher, x))
            loss = (out(logits) - target).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        p.grad.mul_(keep)
        opt.step()
        with torch.no_grad():
            p[hold] = held
        yield p.detach().clone()


def finetune(model: nn.Module, w: torch.Tensor, zero_mask: torch.Tensor, train: Split, seconds: float | None = None,
             steps: int | None = None, lr: float = 1e-3, batch: int = 128, seed: int = 0,
             w_teacher: torch.Tensor | None = None, phi: str = "sqrt_probs", schedule: str = "constant",
             on_step: Callable[[int, torch.Tensor], None] | None = None,
             cpu_seconds: float | None = None) -> tuple[torch.Tensor, int]:
    """Adam (`descend`) on the task loss, or with `w_teacher` distillation, with `zero_mask` held at 0.

    Runs until `steps` steps, `seconds` of wall time or `cpu_seconds` of this process's CPU time (a budget that
    other load on the machine does not eat), whichever comes first; returns (w, steps done).
    schedule "cosine": lr·½(1 + cos πf), f the spent fraction of the budget (the largest of the three).
    """
    if seconds is None and steps is None and cpu_seconds is None:
        raise ValueError("give a budget: steps, seconds or cpu_seconds")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    p = torch.where(zero_mask, torch.zeros_like(w), w)
    t0, c0, done = time.perf_counter(), time.process_time(), 0

    def spent() -> float:
        return max(done / steps if steps else 0.0, (time.perf_counter() - t0) / seconds if seconds else 0.0,
                   (time.process_time() - c0) / cpu_seconds if cpu_seconds else 0.0)

    scale = (lambda: 0.5 * (1 + math.cos(math.pi * min(spent(), 1.0)))) if schedule == "cosine" else None
    points = descend(model, p, zero_mask, train, "adam", lr, batch, seed, w_teacher=w_teacher, phi=phi, lr_scale=scale)
    while spent() < 1.0:
        p = next(points)
        done += 1
        if on_step:
            on_step(done, p)
    return p.detach().clone(), done
