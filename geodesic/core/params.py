"""Flat weight vector ⇄ module parameters, and parameter groups (whole filters, neurons).

A path owns one flat vector w ∈ Rⁿ (all trainable parameters, in `named_parameters` order); the model is
called functionally on it (`metric.model_fn`), never mutated in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of a module's parameters inside the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]  # start of each parameter; offsets[-1] + numel(last) == n

    @property
    def n(self) -> int:
        return self.offsets[-1] + self.shapes[-1].numel() if self.names else 0

    def slice(self, name: str) -> slice:
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + self.shapes[i].numel())


def spec_of(model: nn.Module) -> ParamSpec:
    names, shapes, offsets, at = [], [], [], 0
    for name, p in model.named_parameters():
        names.append(name)
        shapes.append(p.shape)
        offsets.append(at)
        at += p.numel()
    return ParamSpec(tuple(names), tuple(shapes), tuple(offsets))


def flatten(model: nn.Module) -> torch.Tensor:
    """w = concat(p.flatten() for p in parameters), detached, shape (n,)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def unflatten(spec: ParamSpec, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of w shaped like the module's parameters (differentiable in w)."""
    return {
        name: w[off : off + shape.numel()].view(shape)
        for name, shape, off in zip(spec.names, spec.shapes, spec.offsets)
    }


def load_flat(model: nn.Module, w: torch.Tensor) -> nn.Module:
    """Copy the flat vector w into the module's parameters (for evaluation outside a path)."""
    spec = spec_of(model)
    if w.numel() != spec.n:
        raise ValueError(f"weight vector has {w.numel()} entries, the model has {spec.n}")
    with torch.no_grad():
        for p, t in zip(model.parameters(), unflatten(spec, w).values()):
            p.copy_(t)
    return model


def state_dict_at(model: nn.Module, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """The module's full state dict (buffers such as BatchNorm statistics included) with its parameters taken
    from the flat vector w: what `model.load_state_dict` reads."""
    spec = spec_of(model)
    if w.numel() != spec.n:
        raise ValueError(f"weight vector has {w.numel()} entries, the model has {spec.n}")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update({k: v.detach().clone() for k, v in unflatten(spec, w).items()})
    return state


@dataclass(frozen=True)
class Group:
    """One prunable unit (a conv filter with its bias, or a hidden neuron): flat indices into w."""

    name: str  # e.g. "conv1[3]"
    layer: str  # e.g. "conv1"
    index: int
    idx: torch.Tensor  # LongTensor of flat indices

    def __repr__(self) -> str:
        return f"Group({self.name}, {self.idx.numel()} weights)"


def output_unit_groups(model: nn.Module, layers: list[str]) -> list[Group]:
    """Groups = output units of the named layers: row i of `<layer>.weight` plus `<layer>.bias[i]`."""
    spec = spec_of(model)
    groups = []
    for layer in layers:
        wsl, wshape = spec.slice(f"{layer}.weight"), spec.shapes[spec.names.index(f"{layer}.weight")]
        per = wshape[1:].numel()
        bsl = spec.slice(f"{layer}.bias") if f"{layer}.bias" in spec.names else None
        for i in range(wshape[0]):
            idx = torch.arange(wsl.start + i * per, wsl.start + (i + 1) * per)
            if bsl is not None:
                idx = torch.cat([idx, torch.tensor([bsl.start + i])])
            groups.append(Group(f"{layer}[{i}]", layer, i, idx))
    return groups


def group_mask(groups: list[Group], n: int) -> torch.Tensor:
    """Boolean (n,) mask of the coordinates covered by `groups`."""
    mask = torch.zeros(n, dtype=torch.bool)
    for g in groups:
        mask[g.idx] = True
    return mask


def group_norms(w: torch.Tensor, groups: list[Group]) -> torch.Tensor:
    """|w_g| for every group, shape (len(groups),)."""
    return torch.stack([w[g.idx].norm() for g in groups]) if groups else torch.zeros(0)
