"""What every run starts from, loaded one way for the CLI, the app and the benchmarks: a checkpoint (the net, its
card, its flat weights and its groups) and the data it was trained on (training images for the metric, test
images for evaluation)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.params import Group, flatten
from . import checkpoints, data, zoo
from .arch import normalize


@dataclass
class Checkpoint:
    path: Path
    model: nn.Module
    card: dict
    w: torch.Tensor  # the flat weight vector (n,)
    groups: list[Group]  # prunable groups: coupled output channels (groups.py), hidden neurons
    arch: str | None = None  # a user's architecture ("FILE.py:FACTORY"), None for a zoo model

    @property
    def name(self) -> str:
        return str(self.card["model"])

    def meta(self) -> dict:
        """The run-folder fields that say where a run started."""
        return {"model": self.name, "checkpoint": str(self.path), **({"arch": self.arch} if self.arch else {})}


def open_checkpoint(path: str | os.PathLike, model_name: str | None = None, arch: str | None = None) -> Checkpoint:
    """Load and check a checkpoint of a zoo model, or of a user's architecture `arch` (its file runs);
    cards.CheckpointError / arch.ArchError with a clear message when it cannot be used."""
    arch = normalize(arch) if arch else None
    model, card = checkpoints.load(path, model_name, arch)
    return Checkpoint(Path(path), model, card, flatten(model), zoo.filter_groups(model), arch)


def dataset_of(ckpt: Checkpoint, dataset: str | None) -> str:
    """The dataset asked for, else the card's; ValueError when neither names one of ours."""
    name = dataset or ckpt.card.get("dataset")
    if name not in data.FOLDERS:
        raise ValueError(f"say which data {ckpt.path.name} was trained on: --dataset {{{', '.join(data.FOLDERS)}}}")
    return name


def splits(dataset: str, source: str = "auto", eval_size: int | None = None) -> tuple[data.Split, data.Split]:
    """(train, test) of a dataset; the test split cut to its first `eval_size` images when given."""
    train, test = data.load(dataset, "train", source), data.load(dataset, "test", source)
    if eval_size:
        test.x, test.y = test.x[:eval_size], test.y[:eval_size]
    return train, test


def card_warning(ckpt: Checkpoint, dataset: str) -> str | None:
    """A warning when the net measures far below its card on `dataset`'s bundled test images (a card that
    names the wrong dataset, a net trained on other data), else None."""
    return checkpoints.check_accuracy(ckpt.model, ckpt.card, data.load(dataset, "test", "bundled"), name=ckpt.path.name)
