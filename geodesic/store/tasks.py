"""Task sequences built from the installed datasets, and their definitions on disk.

    permuted-mnist:T   T tasks on MNIST; task 0 the images as they are, task t > 0 a fixed random permutation of
                       the 784 pixels (a torch.Generator seeded with `seed`), the same ten classes in each
    split-mnist        five tasks on MNIST: the classes 0/1, 2/3, 4/5, 6/7, 8/9
    mnist,fashion-mnist  one task per dataset named, each with its ten classes

A run folder keeps its sequence as `tasks.safetensors`: `perm.<j>` (784,) int64 for each permuted task and
`classes.<j>` (k,) int64 for every task, with the tasks' names and datasets in the file's metadata, so that anyone
can rebuild each task's images and recompute the accuracy matrix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.split import Split
from .data import check_name
from .runs import _atomic_write_bytes as atomic_write
from .task_kinds import family

PIXELS = 28 * 28
FILE = "tasks.safetensors"
DIGITS = tuple(range(10))


@dataclass(frozen=True)
class Task:
    name: str  # "perm-3", "split-2/3", "fashion-mnist"
    dataset: str  # the dataset its images come from
    classes: tuple[int, ...]  # the dataset labels it keeps
    perm: torch.Tensor | None = None  # (784,) pixel order: image.flatten()[perm]; None keeps the image

    def apply(self, split: Split) -> Split:
        """The task's images: the split's images of its classes, pixels permuted."""
        if split.name != self.dataset:
            raise ValueError(f"task {self.name} is on {self.dataset}, not {split.name}")
        keep = torch.isin(split.y, torch.tensor(self.classes))
        x, y = split.x[keep], split.y[keep]
        if self.perm is not None:
            x = x.flatten(1)[:, self.perm].view_as(x)
        return Split(x, y, split.name, split.split, split.source)


def permuted_mnist(count: int, seed: int = 0) -> list[Task]:
    if count < 1:
        raise ValueError(f"a sequence needs at least one task, not {count}")
    g = torch.Generator().manual_seed(seed)
    perms = [None] + [torch.randperm(PIXELS, generator=g) for _ in range(count - 1)]
    return [Task(f"perm-{t}", "mnist", DIGITS, p) for t, p in enumerate(perms)]


def split_mnist() -> list[Task]:
    return [Task(f"split-{a}/{a + 1}", "mnist", (a, a + 1)) for a in range(0, 10, 2)]


def dataset_sequence(names: list[str]) -> list[Task]:
    return [Task(check_name(n), n, DIGITS) for n in names]


def parse(spec: str, seed: int = 0) -> list[Task]:
    """`permuted-mnist:T` | `split-mnist` | a comma-separated list of datasets (`mnist,fashion-mnist`)."""
    text, kind = spec.strip().lower(), family(spec)
    if kind == "permuted-mnist":
        _, _, count = text.partition(":")
        if not count.strip().isdigit():
            raise ValueError(f"{spec!r}: give the number of tasks, e.g. permuted-mnist:10")
        return permuted_mnist(int(count), seed)
    if kind == "split-mnist":
        return split_mnist()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 1:
        raise ValueError(f"{spec!r}: name a sequence (permuted-mnist:T, split-mnist, or datasets like "
                         "mnist,fashion-mnist)")
    try:
        return dataset_sequence(names)
    except ValueError as e:
        raise ValueError(f"{spec!r}: {e}; sequences are permuted-mnist:T, split-mnist, or datasets") from None


def tensors(tasks: list[Task]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What tasks.safetensors holds: the tensors and the metadata (names and datasets as JSON)."""
    out = {f"classes.{j}": torch.tensor(t.classes, dtype=torch.int64) for j, t in enumerate(tasks)}
    out |= {f"perm.{j}": t.perm.to(torch.int64) for j, t in enumerate(tasks) if t.perm is not None}
    meta = {"names": json.dumps([t.name for t in tasks]), "datasets": json.dumps([t.dataset for t in tasks])}
    return out, meta


def write(path: str | os.PathLike, tasks: list[Task]) -> None:
    """Write tasks.safetensors atomically (a temporary file renamed into place)."""
    out, meta = tensors(tasks)
    atomic_write(Path(path), lambda tmp: save_file(out, str(tmp), metadata=meta))


def read(path: str | os.PathLike) -> list[Task]:
    """The tasks of a tasks.safetensors file; ValueError naming the file when it is damaged or inconsistent."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        names, datasets = json.loads(meta["names"]), json.loads(meta["datasets"])
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a task sequence file ({type(e).__name__}: {e})") from None
    if not (isinstance(names, list) and isinstance(datasets, list) and len(names) == len(datasets)):
        raise ValueError(f"{path}: names and datasets must be two lists of one length")
    tasks = []
    for j, (name, dataset) in enumerate(zip(names, datasets)):
        classes, perm = t.get(f"classes.{j}"), t.get(f"perm.{j}")
        if classes is None or classes.dim() != 1 or not all(0 <= c < 10 for c in classes.tolist()):
            raise ValueError(f"{path}: classes.{j} missing or not labels 0-9")
        if perm is not None and not torch.equal(perm.sort().values, torch.arange(PIXELS)):
            raise ValueError(f"{path}: perm.{j} is not a permutation of the {PIXELS} pixels")
        tasks.append(Task(str(name), check_name(str(dataset)), tuple(classes.tolist()), perm))
    return tasks
