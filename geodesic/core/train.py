"""Supervised training of zoo models (the checkpoints in assets/ are made by `python -m geodesic train`)."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .split import Split


@torch.no_grad()
def scores(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
           batch: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of logits = forward(x) on (x, y), in batches."""
    if len(y) == 0:
        raise ValueError("no images to score")
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        out = forward(x[i : i + batch])
        loss += F.cross_entropy(out, y[i : i + batch], reduction="sum").item()
        correct += (out.argmax(1) == y[i : i + batch]).sum().item()
    return loss / len(y), correct / len(y)


def evaluate(model: nn.Module, data: Split, batch: int = 2000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on all of `data`."""
    model.eval()
    return scores(model, data.x, data.y, batch)


def check_settings(data: Split, epochs: int, batch: int, lr: float, warmup: int = 0) -> None:
    """ValueError for settings that cannot train: no data, epochs or batch not a positive integer, lr not a
    positive finite number, warmup not an integer >= 0."""
    if len(data) == 0:
        raise ValueError("no training images")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0 (steps), got {warmup!r}")


def schedule(total: int, warmup: int = 0) -> Callable[[int], float]:
    """The learning rate of step s (from 0) over lr: min(1, (s + 1) / warmup) · ½(1 + cos(π s / total)), a linear
    warmup over the first `warmup` steps (0: none) times a cosine decay over all `total`.

    Why a warmup: Adam's first steps move every weight by about lr whatever its gradient's size; on the mlp
    (784 non-negative inputs per hidden unit) they push whole ReLU units below zero for every image within ten
    steps at lr 3e-3 (12 of 32 on Fashion-MNIST), and a dead unit gets no gradient to come back."""
    return lambda s: min(1.0, (s + 1) / warmup if warmup else 1.0) * 0.5 * (1 + math.cos(math.pi * s / total))


def train_steps(model: nn.Module, data: Split, epochs: int, seed: int, lr: float = 1e-3,
                batch: int = 128, warmup: int = 0) -> Iterator[tuple[int, int, float]]:
    """Adam with a cosine learning-rate schedule after `warmup` steps of linear warmup (`schedule`), data order
    fixed by `seed`: yields (step, total, loss) after every step; the model is back in eval mode when the steps
    end or are abandoned.

    Raises ValueError for settings that cannot train (`check_settings`) and as soon as the loss is NaN or inf,
    rather than train on to a net of NaN weights.
    """
    check_settings(data, epochs, batch, lr, warmup)
    g = torch.Generator().manual_seed(seed)
    total = epochs * math.ceil(len(data) / batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(total, warmup))
    step = 0
    model.train()
    try:
        for _ in range(epochs):
            perm = torch.randperm(len(data), generator=g)
            for i in range(0, len(data), batch):
                idx = perm[i : i + batch]
                loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                value = loss.item()
                if not math.isfinite(value):
                    raise ValueError(f"training diverged: loss {value} at step {step} of {total}; try a smaller lr "
                                     f"(now {lr})")
                yield step, total, value
    finally:
        model.eval()


def train(model: nn.Module, data: Split, epochs: int, seed: int, lr: float = 1e-3, batch: int = 128,
          progress: Callable[[int, int, float], None] | None = None, warmup: int = 0) -> dict:
    """`train_steps` to the end; returns a summary (steps, seconds). `progress(step, total, loss)` is called
    every step."""
    t0, step = time.perf_counter(), 0
    for step, total, loss in train_steps(model, data, epochs, seed, lr, batch, warmup):
        if progress:
            progress(step, total, loss)
    return {"steps": step, "seconds": time.perf_counter() - t0}
