"""Model zoo: build a net by name, list its filter groups, save and load checkpoints.

Models take float images in [0, 1] of shape (B, 1, 28, 28) and normalize inside. Checkpoints are
`.safetensors` files (never pickles) with a JSON card beside them (`<stem>.json`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .params import Group, output_unit_groups

class Normalize(nn.Module):
    """(x − mean) / std with fixed constants (no parameters)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLP(nn.Module):
    """784 → 32 → 10, ReLU: tiny, for tests and teaching (25,450 weights; its 32 hidden neurons are its groups)."""

    prunable = ("fc1",)

    def __init__(self, hidden: int = 32):
        super().__init__()
        # background pixels stay 0: centred inputs (mostly −1) leave whole ReLU units dead for every image
        self.norm = Normalize(0.0, 0.5)
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.norm(x).flatten(1))))


class LeNet60(nn.Module):
    """conv 1→20 5×5, pool, conv 20→40 5×5, pool, fc 640→100, fc 100→10: 60 conv filters, 85,670 weights."""

    prunable = ("conv1", "conv2")

    def __init__(self):
        super().__init__()
        self.norm = Normalize(0.5, 0.5)  # [0, 1] -> [-1, 1]
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 40, 5)
        self.fc1 = nn.Linear(40 * 4 * 4, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(pool(self.conv1(self.norm(x))))
        x = torch.relu(pool(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def pool(x: torch.Tensor) -> torch.Tensor:
    """2×2 max-pool. relu(pool(x)) = pool(relu(x)) as relu is monotone, on a quarter of the values; the
    channels-last copy makes CPU max-pooling about 4× faster than on NCHW (19 → 5 ms for 256×20×24×24)."""
    # channels-last strides by permute + contiguous, which vmap (the reference Jacobian) also supports
    return torch.max_pool2d(x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), 2)


ZOO: dict[str, type[nn.Module]] = {"mlp": MLP, "lenet60": LeNet60}


def build(name: str, seed: int | None = None) -> nn.Module:
    """A fresh model of the zoo; `seed` fixes the initialization."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {sorted(ZOO)}")
    if seed is not None:
        torch.manual_seed(seed)
    return ZOO[name]()


def filter_groups(model: nn.Module) -> list[Group]:
    """The prunable units of a zoo model: each conv filter (weights + bias) or hidden neuron."""
    return output_unit_groups(model, list(getattr(model, "prunable", ())))


# --- checkpoints -------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not the architecture its card names."""


def card_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: nn.Module, path: str | os.PathLike, card: dict) -> dict:
    """Write weights (.safetensors) and card (.json) atomically; the card gains the weights' sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".safetensors.tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata={"model": str(card.get("model", ""))})
    card = {**card, "sha256": sha256_file(tmp)}
    ctmp = card_path(path).with_suffix(".json.tmp")
    ctmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, path)
    os.replace(ctmp, card_path(path))
    return card


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a .safetensors file, turning every failure into a CheckpointError with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from None


def check_architecture(model: nn.Module, tensors: dict[str, torch.Tensor], name: str) -> None:
    """Raise CheckpointError listing every missing, unexpected or mis-shaped tensor."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k} {want[k]}" for k in want if k not in got]
    problems += [f"unexpected {k} {got[k]}" for k in got if k not in want]
    problems += [f"{k}: file has {got[k]}, {name} needs {want[k]}" for k in want if k in got and got[k] != want[k]]
    problems += [f"{k}: not a float tensor ({tensors[k].dtype})" for k in want if k in got and not tensors[k].is_floating_point()]
    if problems:
        raise CheckpointError(f"weights do not match architecture {name!r}: " + "; ".join(problems))


def load(path: str | os.PathLike, model_name: str | None = None) -> tuple[nn.Module, dict]:
    """Load a checkpoint and its card. `model_name` is needed only when the card is absent.

    Refuses (CheckpointError) a missing or corrupt file, a card/file sha256 mismatch, an unknown model,
    and tensors that do not match the architecture, saying what differs.
    """
    path = Path(path)
    cpath = card_path(path)
    card: dict = {}
    if cpath.is_file():
        try:
            card = json.loads(cpath.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cpath}: card is not valid JSON ({e})") from None
    name = model_name or card.get("model")
    if name is None:
        raise CheckpointError(f"{path}: no card ({cpath.name}) and no model name given; use one of {sorted(ZOO)}")
    if name not in ZOO:
        raise CheckpointError(f"{path}: unknown model {name!r}; the zoo has {sorted(ZOO)}")
    tensors = read_tensors(path)
    if "sha256" in card and card["sha256"] != sha256_file(path):
        raise CheckpointError(f"{path}: sha256 differs from its card; the file was changed or damaged")
    model = build(name)
    check_architecture(model, tensors, name)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    model.eval()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{path}: weights contain NaN or inf")
    return model, {"model": name, **card}
