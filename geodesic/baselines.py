"""What the geodesic path is compared with: magnitude filter pruning, with and without fine-tuning."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split
from .metric import model_fn, output_map
from .params import Group, group_mask, group_norms


def layer_normalized_norms(w: torch.Tensor, groups: list[Group]) -> torch.Tensor:
    """|w_g| / mean_{g' in layer(g)} |w_g'|: comparable across layers of different scale."""
    norms = group_norms(w, groups)
    out = norms.clone()
    for layer in {g.layer for g in groups}:
        sel = torch.tensor([g.layer == layer for g in groups])
        out[sel] = norms[sel] / norms[sel].mean().clamp_min(1e-12)
    return out


def smallest_groups(w: torch.Tensor, groups: list[Group], count: int) -> list[Group]:
    """The `count` groups of smallest layer-normalized norm."""
    order = layer_normalized_norms(w, groups).argsort()
    return [groups[i] for i in order[:count].tolist()]


def magnitude_prune(w: torch.Tensor, groups: list[Group], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the `count` smallest layer-normalized groups; returns (pruned w, boolean mask of zeroed coords)."""
    mask = group_mask(smallest_groups(w, groups, count), w.numel())
    return torch.where(mask, torch.zeros_like(w), w), mask


def finetune(model: nn.Module, w: torch.Tensor, zero_mask: torch.Tensor, train: Split, seconds: float | None = None,
             steps: int | None = None, lr: float = 1e-3, batch: int = 128, seed: int = 0,
             w_teacher: torch.Tensor | None = None, phi: str = "sqrt_probs",
             on_step: Callable[[int, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, int]:
    """Adam on the task loss (or, with `w_teacher`, on D(w, w_teacher): distillation) with `zero_mask` held at 0.

    Runs until `steps` steps or `seconds` of wall time, whichever comes first; returns (w, steps done).
    """
    if seconds is None and steps is None:
        raise ValueError("give a budget: seconds or steps")
    f, out = model_fn(model), output_map(phi)
    g = torch.Generator().manual_seed(seed)
    keep = (~zero_mask).to(w.dtype)
    p = (w * keep).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    t0, done = time.perf_counter(), 0
    while (steps is None or done < steps) and (seconds is None or time.perf_counter() - t0 < seconds):
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
            p.mul_(keep)
        done += 1
        if on_step:
            on_step(done, p.detach())
    return p.detach().clone(), done
