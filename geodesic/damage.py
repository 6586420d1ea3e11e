"""Reproducible damage to a net: zero a fraction of weights, ablate whole filters, add Gaussian noise.

Each operation returns the damaged vector and the boolean mask of damaged coordinates. For a given seed the
damage does not depend on the weights it hits (the same coordinates are zeroed, the same filters ablated with
`among="all"`, the same noise vector added with a fixed `reference`), so one damage can be applied equally to
several nets. `frozen` says which coordinates a recovery holds at their damaged values (they stay broken).
"""

from __future__ import annotations

import torch

from .params import Group, ParamSpec, group_mask

KINDS = ("zero", "ablate", "noise")
AMONG = ("all", "alive")


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
    """Zero a random `fraction` of the weights of `layers` (each coordinate hit with probability `fraction`)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    eligible = layer_mask(spec, layers)
    hit = eligible & (torch.rand(w.numel(), generator=g) < fraction)
    return torch.where(hit, torch.zeros_like(w), w), hit


def ablate_groups(w: torch.Tensor, groups: list[Group], count: int, seed: int,
                  among: str = "alive") -> tuple[torch.Tensor, torch.Tensor]:
    """Zero `count` whole groups (filters/neurons) chosen at random.

    among="alive": only nonzero groups can be picked (every pick destroys a working filter);
    among="all": any group (a pick may land on a filter that is already zero and change nothing).
    """
    if among not in AMONG:
        raise ValueError(f"among must be one of {AMONG}, got {among!r}")
    pool = [gr for gr in groups if bool(w[gr.idx].any())] if among == "alive" else list(groups)
    if count != int(count) or not 0 <= count <= len(pool):
        what = "are nonzero" if among == "alive" else "exist"
        raise ValueError(f"cannot ablate {count} filters: {len(pool)} {what}")
    g = torch.Generator().manual_seed(seed)
    pick = [pool[i] for i in torch.randperm(len(pool), generator=g)[: int(count)].tolist()]
    hit = group_mask(pick, w.numel())
    return torch.where(hit, torch.zeros_like(w), w), hit


def add_noise(w: torch.Tensor, spec: ParamSpec, scale: float, seed: int, layers: list[str] | None = None,
              reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """w + scale·σ_p·N(0, 1) on `layers`, σ_p the std of each parameter tensor p of `reference` (default w).

    A fixed `reference` (e.g. the dense net) makes the added vector the same for every net."""
    if not scale >= 0 or scale == float("inf"):
        raise ValueError(f"noise scale must be a finite number >= 0, got {scale}")
    ref = w if reference is None else reference
    if ref.shape != w.shape:
        raise ValueError(f"reference has shape {tuple(ref.shape)}, the weights {tuple(w.shape)}")
    g = torch.Generator().manual_seed(seed)
    out, hit = w.clone(), layer_mask(spec, layers)
    for name in spec.names:
        sl = spec.slice(name)
        if hit[sl].any():
            out[sl] = w[sl] + scale * ref[sl].std() * torch.randn(sl.stop - sl.start, generator=g)
    return out, hit


def damage(w: torch.Tensor, spec: ParamSpec, groups: list[Group], kind: str, level: float, seed: int,
           layers: list[str] | None = None, among: str = "alive",
           reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One entry point: kind "zero" (level = fraction), "ablate" (level = filter count, picked `among` "alive"
    or "all" filters; `layers` ignored), "noise" (level = scale × σ of `reference`'s parameter tensors)."""
    if kind == "zero":
        return zero_fraction(w, spec, level, seed, layers)
    if kind == "ablate":
        return ablate_groups(w, groups, level, seed, among)
    if kind == "noise":
        return add_noise(w, spec, level, seed, layers, reference)
    raise ValueError(f"unknown damage {kind!r}; choose one of {KINDS}")


def frozen(kind: str, mask: torch.Tensor) -> torch.Tensor:
    """The coordinates a recovery holds at their damaged values: the hit ones for "zero" and "ablate"; none for
    "noise" (it touches every coordinate of its layers, so freezing them would leave nothing to move there)."""
    if kind not in KINDS:
        raise ValueError(f"unknown damage {kind!r}; choose one of {KINDS}")
    return mask.clone() if kind in ("zero", "ablate") else torch.zeros_like(mask)
