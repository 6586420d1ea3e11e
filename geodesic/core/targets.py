"""Which parameter groups (whole filters, neurons) a sparsify run zeroes: the target T of {w_T = 0}."""

from __future__ import annotations

import torch
from torch import nn

from .metric import jacobian_fast
from .params import Group, group_norms
from .strategies import STRATEGIES


def layer_normalized_norms(w: torch.Tensor, groups: list[Group]) -> torch.Tensor:
    """|w_g| / mean_{g' in layer(g)} |w_g'|: comparable across layers of different scale."""
    norms = group_norms(w, groups)
    out = norms.clone()
    for layer in {g.layer for g in groups}:
        sel = torch.tensor([g.layer == layer for g in groups])
        out[sel] = norms[sel] / norms[sel].mean().clamp_min(1e-12)
    return out


def smallest_groups(w: torch.Tensor, groups: list[Group], count: int) -> list[Group]:
    """The `count` groups of smallest layer-normalized norm, leaving every layer at least one group while
    count allows (a layer with all its groups at zero disconnects the net: its outputs become constant)."""
    order = layer_normalized_norms(w, groups).argsort().tolist()
    left = {layer: sum(g.layer == layer for g in groups) for layer in {g.layer for g in groups}}
    spare = len(groups) - count  # groups that stay; one per layer is kept while there are enough
    chosen, skipped = [], []
    for i in order:
        g = groups[i]
        if len(chosen) == count:
            break
        if left[g.layer] == 1 and spare >= len(left):
            skipped.append(g)
            continue
        chosen.append(g)
        left[g.layer] -= 1
    return chosen + skipped[: count - len(chosen)]


def within_layer_quantiles(w: torch.Tensor, groups: list[Group]) -> torch.Tensor:
    """Each group's rank by layer-normalized norm within its layer, as a quantile in (0, 1)."""
    score, norms = torch.empty(len(groups)), layer_normalized_norms(w, groups)
    for layer in sorted({g.layer for g in groups}):
        sel = [i for i, g in enumerate(groups) if g.layer == layer]
        ranks = norms[sel].argsort().argsort().double()
        score[sel] = ((ranks + 0.5) / len(sel)).float()
    return score


def choose_groups(strategy: str, model: nn.Module, w: torch.Tensor, groups: list[Group], count: int,
                  probe: torch.Tensor | None = None, phi: str = "sqrt_probs", seed: int = 0) -> list[Group]:
    """Which `count` groups to zero.

    norm: smallest layer-normalized norm; importance: smallest functional importance |J_g w_g| (the change of the
    outputs if the group were zeroed, to first order, on `probe`); balanced: the same fraction of every layer,
    smallest norm within each; random: seeded.
    """
    if not 0 <= count <= len(groups):
        raise ValueError(f"cannot zero {count} groups: the model has {len(groups)}")
    if strategy == "norm":
        score = layer_normalized_norms(w, groups)
    elif strategy == "importance":
        if probe is None:
            raise ValueError("importance needs a probe batch")
        J = jacobian_fast(model, w, probe, phi)
        score = torch.stack([(J[:, g.idx] * w[g.idx]).norm() for g in groups])
    elif strategy == "balanced":
        score = within_layer_quantiles(w, groups)
    elif strategy == "random":
        score = torch.rand(len(groups), generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    return [groups[i] for i in score.argsort()[:count].tolist()]
