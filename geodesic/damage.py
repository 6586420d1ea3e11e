"""Reproducible damage to a net: zero a fraction of weights, ablate whole filters, add Gaussian noise.

Each operation returns the damaged vector and the boolean mask of damaged coordinates; a recovery path
can hold those coordinates frozen (they stay broken).
"""

from __future__ import annotations

import torch

from .params import Group, ParamSpec, group_mask

KINDS = ("zero", "ablate", "noise")


def layer_mask(spec: ParamSpec, layers: list[str] | None) -> torch.Tensor:
    """Coordinates of the named layers' parameters (all parameters when `layers` is None)."""
    mask = torch.zeros(spec.n, dtype=torch.bool)
    for name in spec.names:
        if layers is None or name.rsplit(".", 1)[0] in layers:
            mask[spec.slice(name)] = True
    if layers is not None and not mask.any():
        known = sorted({n.rsplit(".", 1)[0] for n in spec.names})
        raise ValueError(f"no parameters in layers {layers}; the model has {known}")
    return mask


def zero_fraction(w: torch.Tensor, spec: ParamSpec, fraction: float, seed: int,
                  layers: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero a random `fraction` of the weights of `layers`."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    eligible = layer_mask(spec, layers)
    hit = eligible & (torch.rand(w.numel(), generator=g) < fraction)
    return torch.where(hit, torch.zeros_like(w), w), hit


def ablate_groups(w: torch.Tensor, groups: list[Group], count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero `count` whole groups (filters/neurons) chosen at random among the nonzero ones."""
    alive = [gr for gr in groups if bool(w[gr.idx].any())]
    if not 0 <= count <= len(alive):
        raise ValueError(f"cannot ablate {count} filters: {len(alive)} are nonzero")
    g = torch.Generator().manual_seed(seed)
    pick = [alive[i] for i in torch.randperm(len(alive), generator=g)[:count].tolist()]
    hit = group_mask(pick, w.numel())
    return torch.where(hit, torch.zeros_like(w), w), hit


def add_noise(w: torch.Tensor, spec: ParamSpec, scale: float, seed: int,
              layers: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """w + scale·σ_layer·N(0, 1) on `layers`, σ_layer the std of each parameter tensor (relative noise)."""
    if scale < 0:
        raise ValueError(f"noise scale must be >= 0, got {scale}")
    g = torch.Generator().manual_seed(seed)
    out, hit = w.clone(), layer_mask(spec, layers)
    for name in spec.names:
        sl = spec.slice(name)
        if hit[sl].any():
            out[sl] = w[sl] + scale * w[sl].std() * torch.randn(sl.stop - sl.start, generator=g)
    return out, hit


def damage(w: torch.Tensor, spec: ParamSpec, groups: list[Group], kind: str, level: float, seed: int,
           layers: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One entry point: kind "zero" (level = fraction), "ablate" (level = filter count), "noise" (level = scale)."""
    if kind == "zero":
        return zero_fraction(w, spec, level, seed, layers)
    if kind == "ablate":
        return ablate_groups(w, groups, int(level), seed)
    if kind == "noise":
        return add_noise(w, spec, level, seed, layers)
    raise ValueError(f"unknown damage {kind!r}; choose one of {KINDS}")
