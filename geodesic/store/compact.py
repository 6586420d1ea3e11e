"""The compact net: every all-zero coupled group (groups.py) taken out of a zeroed net, and what it costs.

Removing a channel that is exactly zero everywhere also removes its consumers' input slices, which only ever
multiplied zeros, so the compact net computes what the zeroed net computes. Channels go along Torch-Pruning's
dependency graph (`shrink`).
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import torch
from torch import nn

from ..core.groups import NORM_TYPES, ROOT_TYPES, dependency_graph, example_input
from ..core.params import Group, load_flat
from .cards import CheckpointError

# --- which channels go -------------------------------------------------------------------------------------


def zero_groups(w: torch.Tensor, groups: list[Group]) -> list[Group]:
    """The groups whose coordinates are all exactly zero in w."""
    return [g for g in groups if g.idx.numel() and not bool(w[g.idx].any())]


def removed_channels(w: torch.Tensor, groups: list[Group]) -> dict[str, list[int]]:
    """{root layer: sorted channel indices} of the all-zero groups; a root keeps at least one channel (the
    lowest-numbered), so a layer whose groups are all zero stays one zero channel wide instead of vanishing."""
    total: dict[str, int] = {}
    for g in groups:
        total[g.layer] = total.get(g.layer, 0) + 1
    out: dict[str, list[int]] = {}
    for g in zero_groups(w, groups):
        out.setdefault(g.layer, []).append(g.index)
    for layer, idxs in out.items():
        idxs.sort()
        if len(idxs) >= total[layer]:
            del idxs[0]
    return {k: v for k, v in out.items() if v}


def shrink(model: nn.Module, removed: dict, where: str | os.PathLike | None = None) -> nn.Module:
    """Take the output channels `removed` ({root module name: [channel, …]}) out of `model` in place, with all
    they are coupled to (BatchNorm entries, residual partners, the consumers' input slices), along Torch-Pruning's
    dependency graph. Returns `model`. A malformed `removed` raises cards.CheckpointError naming `where`."""
    pre = f"{where}: " if where is not None else ""
    if not isinstance(removed, dict):
        raise CheckpointError(f"{pre}'removed' must be an object {{layer: [channel, …]}}")
    modules = dict(model.named_modules())
    for layer, idxs in removed.items():
        m = modules.get(layer) if isinstance(layer, str) else None
        width = _width(m)
        if width is None:
            raise CheckpointError(f"{pre}'removed' names {layer!r}, not a conv or linear layer of "
                                  f"{type(model).__name__}")
        if not (isinstance(idxs, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in idxs)):
            raise CheckpointError(f"{pre}'removed'[{layer!r}] must be a list of channel numbers")
        if len(set(idxs)) != len(idxs) or not all(0 <= i < width for i in idxs) or len(idxs) >= width:
            raise CheckpointError(f"{pre}'removed'[{layer!r}] must list distinct channels in [0, {width}), "
                                  f"fewer than all {width}")
    if not removed:
        return model
    was_grad = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    DG = dependency_graph(model, example_input(model))
    for layer, idxs in removed.items():
        m = modules[layer]
        if m not in DG.module2node:
            raise CheckpointError(f"{pre}'removed' names {layer!r}, which the forward pass does not use")
        DG.get_pruning_group(m, DG.get_pruner_of_module(m).prune_out_channels, sorted(idxs)).prune()
    for p, g in zip(model.parameters(), was_grad):
        p.requires_grad_(g)
    return model


def _width(m: nn.Module | None) -> int | None:
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    return None


def compact(model: nn.Module, w: torch.Tensor, groups: list[Group] | None = None) -> nn.Module:
    """A copy of `model` at weights w with every all-zero group physically removed (eval mode); `model` is left
    as it is. `groups` default to groups.coupled_groups(model)."""
    from ..core.groups import coupled_groups

    groups = coupled_groups(model) if groups is None else groups
    small = load_flat(copy.deepcopy(model), w)
    shrink(small, removed_channels(w, groups))
    return small.eval()


def zeroed(model: nn.Module, w: torch.Tensor) -> nn.Module:
    """A copy of `model` at weights w (eval mode): the net the compact one must match."""
    return load_flat(copy.deepcopy(model), w).eval()


# --- measures ----------------------------------------------------------------------------------------------


def parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm γ/β included, running statistics not)."""
    return sum(p.numel() for p in model.parameters())


def flops(model: nn.Module, example: torch.Tensor | None = None) -> int:
    """FLOPs of one image's forward pass through the conv and linear layers: 2 × multiply-accumulates (+ one add
    per output for a bias)."""
    x = example_input(model) if example is None else example[:1]
    total = [0]

    def hook(m, inp, out):
        per_out = m.weight[0].numel() if isinstance(m, nn.Linear) else m.weight.shape[1:].numel()
        total[0] += out[0].numel() * (2 * per_out + (m.bias is not None))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ROOT_TYPES)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def latency_ms(model: nn.Module, batch: int, repeats: int = 20, warmup: int = 3, threads: int = 1) -> float:
    """Median wall time (ms) of one forward pass of `batch` images on the CPU with `threads` torch threads."""
    x = example_input(model, batch)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            model.eval()
            for i in range(warmup + repeats):
                t = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append((time.perf_counter() - t) * 1e3)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times)


def measure(model: nn.Module, batches: tuple[int, ...] = (1, 256), repeats: int = 20) -> dict:
    """{"parameters", "flops", "latency_ms": {batch: median ms}} of one net (CPU, 1 thread)."""
    return {"parameters": parameters(model), "flops": flops(model),
            "latency_ms": {str(b): latency_ms(model, b, repeats) for b in batches}}


def widths(model: nn.Module) -> dict[str, int]:
    """{module: output channels / features} of every conv, linear and BatchNorm layer."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, ROOT_TYPES):
            out[name] = _width(m)
        elif isinstance(m, NORM_TYPES):
            out[name] = m.num_features
    return out
