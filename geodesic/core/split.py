"""A labelled set of inputs: what the metric, the objectives and training are evaluated on."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Split:
    """Images (N, 1, 28, 28) float in [0, 1] and labels (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    source: str  # "full" or "bundled"

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(len(self), (size,), generator=generator)
        return self.x[i], self.y[i]
