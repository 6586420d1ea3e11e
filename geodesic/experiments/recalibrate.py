"""Label-free BatchNorm recalibration: the running statistics of every BatchNorm re-estimated for the net at w.

Zeroing groups changes what every later BatchNorm sees, while its running mean and variance stay those of the
dense net. For each BatchNorm layer that tracks running statistics, over N unlabeled images X at once:

    running_mean_c = mean of its input's channel c over the n = N · positions values
    running_var_c  = their unbiased variance, Σ (x − mean_c)² / (n − 1)

which is what torch stores after one training-mode forward pass with momentum None (a cumulative average: after
the first batch, exactly that batch's statistics). The pass runs with the BatchNorm layers in training mode and
every other module as it was (dropout stays off), without gradients, so a layer's input is the one it has when
each earlier BatchNorm normalizes by the statistics of the same images; then the layers return to their mode
and momentum. All N images go through in one batch: per-batch averages would leave out the variance between the
batches' means. A net without BatchNorm is left unchanged.

The module's buffers are what change (the flat w holds only trainable parameters): `metric.model_fn`, a run
folder's final.safetensors (`params.state_dict_at`) and every score after the call read the new statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..core.params import spec_of, unflatten
from ..store.data import Split

# unlabeled training images: on resnet8 (bench/results/recal-resnet8-fashion-mnist.md) 64, 512 and 4,096 give the
# same accuracy within 0.02, the spread over draws shrinks with more, and 512 cost 0.4–0.5 CPU s against 6.5 for 4,096
IMAGES = 512
STATS = ("running_mean", "running_var", "num_batches_tracked")
_BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorms(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """(name, module) of every BatchNorm layer with running statistics, in forward-definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def batchnorm_statistics(model: nn.Module, w: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The recalibrated buffers {"<layer>.running_mean" | ".running_var" | ".num_batches_tracked": tensor} of the
    net at flat weights w on the images x (N, …), computed without touching the module's own buffers."""
    layers = batchnorms(model)
    if not layers:
        return {}
    fresh = {}
    for name, m in layers:
        fresh[f"{name}.running_mean"] = torch.zeros_like(m.running_mean)
        fresh[f"{name}.running_var"] = torch.ones_like(m.running_var)
        fresh[f"{name}.num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
    saved = [(m, m.momentum, m.training) for _, m in layers]
    try:
        for m, _, _ in saved:
            m.momentum = None
            m.train()
        with torch.no_grad():  # the layers update the fresh buffers in place
            functional_call(model, {**unflatten(spec_of(model), w.detach()), **fresh}, (x,))
    finally:
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
    return fresh


def recalibrate(model: nn.Module, w: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Write `batchnorm_statistics(model, w, x)` into the module's buffers (in place) and return them."""
    stats = batchnorm_statistics(model, w, x)
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in stats.items():
            buffers[name].copy_(value)
    return stats


def images(train: Split, seed: int, count: int = IMAGES) -> torch.Tensor:
    """`count` distinct training images (all of them when fewer), drawn by a permutation seeded by `seed`; no
    labels."""
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:count]
    return train.x[keep]


__all__ = ["IMAGES", "batchnorm_statistics", "batchnorms", "images", "recalibrate"]
