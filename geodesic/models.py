"""Model zoo: build a net by name, list its filter groups, save and load checkpoints.

Models take float images in [0, 1] of shape (B, 1, 28, 28) and normalize inside. Checkpoints are
`.safetensors` files (never pickles) with a JSON card beside them (`<stem>.json`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .files import follow_umask
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


class BasicBlock(nn.Module):
    """conv 3×3 → BN → ReLU → conv 3×3 → BN, plus the input (a 1×1 conv + BN when the shape changes), → ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet8(nn.Module):
    """A CIFAR-style ResNet for 1×28×28: conv 3×3 (16) + BN, three stages of one BasicBlock (16, 32, 64 channels,
    strides 1, 2, 2), global average pool, fc 64→10: BatchNorm and skip connections, 77,754 weights."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.norm = Normalize(0.5, 0.5)
        self.conv1 = nn.Conv2d(1, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = BasicBlock(widths[0], widths[0], 1)
        self.layer2 = BasicBlock(widths[0], widths[1], 2)
        self.layer3 = BasicBlock(widths[1], widths[2], 2)
        self.fc = nn.Linear(widths[2], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(self.norm(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


ZOO: dict[str, type[nn.Module]] = {"mlp": MLP, "lenet60": LeNet60, "resnet8": ResNet8}


def build(name: str, seed: int | None = None) -> nn.Module:
    """A fresh model of the zoo; `seed` fixes the initialization."""
    if name not in ZOO:
        raise ValueError(f"unknown model {name!r}; the zoo has {sorted(ZOO)}")
    if seed is not None:
        torch.manual_seed(seed)
    return ZOO[name]()


def filter_groups(model: nn.Module) -> list[Group]:
    """The prunable units of a model: coupled channel groups (groups.coupled_groups): a conv filter with its bias,
    the BatchNorm γ/β after it and the channels tied to it by residual additions. For mlp and lenet60 (no
    BatchNorm, no skips) these are exactly their hidden neurons / conv filters, in the same order and names."""
    from .groups import coupled_groups

    return coupled_groups(model)


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


# The card's known fields and their JSON types; other fields are kept as they are.
_NUMBER = (int, float)
CARD_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "dataset": (str,), "sha256": (str,), "optimizer": (str,), "test_set": (str,),
    "torch": (str,), "command": (str,), "seed": (int,), "epochs": (int,), "batch": (int,), "warmup": (int,),
    "lr": _NUMBER, "test_accuracy": _NUMBER, "test_loss": _NUMBER, "train_seconds": _NUMBER,
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number"}


def check_card(card: object, where: str | os.PathLike = "card") -> dict:
    """Return `card` if it is a JSON object whose known fields have the right types, else raise
    CheckpointError naming `where` and the field."""
    if not isinstance(card, dict):
        raise CheckpointError(f"{where}: a card must be a JSON object {{...}}, not {_json_kind(card)}")
    for key, types in CARD_FIELDS.items():
        if key not in card:
            continue
        v = card[key]
        if isinstance(v, bool) or not isinstance(v, types):  # JSON true/false is no number
            raise CheckpointError(f"{where}: field {key!r} must be {_TYPE_NAMES[types[-1]]}, not {_json_kind(v)}")
    acc = card.get("test_accuracy")
    if acc is not None and not 0 <= acc <= 1:  # also refuses NaN
        raise CheckpointError(f"{where}: field 'test_accuracy' must be a fraction in [0, 1], not {acc!r}")
    sha = card.get("sha256")
    if sha is not None and not (len(sha) == 64 and all(c in "0123456789abcdef" for c in sha.lower())):
        raise CheckpointError(f"{where}: field 'sha256' must be 64 hex digits, not {sha!r}")
    return card


def _json_kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"{str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) <= 40 else "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def read_card(path: str | os.PathLike) -> dict:
    """The card beside checkpoint `path` (`<stem>.json`), checked by check_card; {} when there is none.

    Raises CheckpointError, naming the card file, when it is not a readable UTF-8 JSON object with the
    right field types (a folder in its place, no permission, bad bytes, bad JSON, a list, a string seed...).
    """
    cpath = card_path(path)
    if not cpath.exists():
        return {}
    if not cpath.is_file():
        raise CheckpointError(f"{cpath}: the card is {'a folder' if cpath.is_dir() else 'not a regular file'}, "
                              "not a JSON file")
    try:
        text = cpath.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{cpath}: card is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CheckpointError(f"{cpath}: cannot read the card ({e.strerror or e})") from None
    try:
        card = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{cpath}: card is not valid JSON ({e})") from None
    return check_card(card, cpath)


def _check_path(path: Path) -> None:
    if path.suffix == ".json":
        raise CheckpointError(f"{path}: this is a card; give its .safetensors file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file" if path.is_dir()
                              else f"{path}: not a regular file")


def check_out(path: str | os.PathLike, force: bool = False) -> Path:
    """Check, before any training, that `save(model, path, card)` will be able to write: returns the Path.

    Raises ValueError when the name does not end in .safetensors or is a folder, when the checkpoint or its
    card exists (unless `force`), when a parent is a file, or the folder cannot be created or written in.
    Folders created for the check are removed again; nothing else is left behind.
    """
    path = Path(path)
    cpath = card_path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a checkpoint file name ending in .safetensors")
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: a checkpoint file name must end in .safetensors (its card goes beside it as .json)")
    if cpath.is_dir():
        raise ValueError(f"{cpath} is a folder, where the checkpoint's card would go")
    existing = [str(p) for p in (path, cpath) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ValueError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                         "choose another --out, or --force to replace it (nothing was overwritten)")
    from .runs import check_writable

    check_writable(path.parent, str(path))
    return path


def save(model: nn.Module, path: str | os.PathLike, card: dict) -> dict:
    """Write weights (.safetensors) and card (.json) atomically; the card gains the weights' sha256.

    The tensors are `model.state_dict()`: parameters and persistent buffers. Each file is written under
    a temporary name and renamed into place, so an interrupted save leaves the old files (or none),
    never half a file.
    """
    path = Path(path)
    cpath = card_path(path)
    if cpath == path:
        raise ValueError(f"{path}: a checkpoint file name must not end in .json (that is its card's name)")
    check_card(card, f"card for {path}")
    try:
        json.dumps(card)
    except (TypeError, ValueError) as e:
        raise ValueError(f"card for {path} cannot be written as JSON ({e})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    token = secrets.token_hex(4)
    tmp, ctmp = path.with_name(f"{path.name}.{token}.tmp"), cpath.with_name(f"{cpath.name}.{token}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"model": str(card.get("model", ""))})
        _fsync(tmp)
        card = {**card, "sha256": sha256_file(tmp)}
        with open(ctmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(card, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        follow_umask(tmp)  # save_file creates it 0600
        follow_umask(ctmp)
        os.replace(tmp, path)
        os.replace(ctmp, cpath)
    finally:
        tmp.unlink(missing_ok=True)
        ctmp.unlink(missing_ok=True)
    return card


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a .safetensors file, turning every failure into a CheckpointError with a clear message."""
    path = Path(path)
    _check_path(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from None


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def check_architecture(model: nn.Module, tensors: dict[str, torch.Tensor], name: str,
                       source: str | os.PathLike | None = None) -> None:
    """Raise CheckpointError listing every missing, unexpected, mis-shaped or wrongly typed tensor.

    Compares with `model.state_dict()`, so buffers count as well as parameters; a float entry needs a
    float tensor, an integer one (e.g. BatchNorm's num_batches_tracked) an integer tensor.
    """
    state = model.state_dict()
    want = {k: tuple(v.shape) for k, v in state.items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k} {want[k]}" for k in want if k not in got]
    problems += [f"unexpected {k} {got[k]}" for k in got if k not in want]
    problems += [f"{k}: file has {got[k]}, {name} needs {want[k]}" for k in want if k in got and got[k] != want[k]]
    problems += [f"{k}: not {'an' if _kind(state[k].dtype) == 'integer' else 'a'} {_kind(state[k].dtype)} tensor "
                 f"({tensors[k].dtype})"
                 for k in want if k in got and _kind(tensors[k].dtype) != _kind(state[k].dtype)]
    if problems:
        where = f"{source}: " if source is not None else ""
        raise CheckpointError(f"{where}weights do not match architecture {name!r}: " + "; ".join(problems))


def load(path: str | os.PathLike, model_name: str | None = None, arch: str | None = None) -> tuple[nn.Module, dict]:
    """Load a checkpoint and its card. `model_name` is needed only when the card is absent; `arch`
    ("FILE.py:FACTORY" or "package.module:FACTORY", see arch.py) builds a user's own architecture instead of a
    zoo model (its code runs).

    Refuses (CheckpointError) a missing or corrupt file, a malformed card, a card/file sha256 mismatch, an
    unknown model or one that differs from the card's, tensors that do not match the architecture
    (parameters and buffers), and NaN or inf weights, saying what is wrong.
    """
    path = Path(path)
    _check_path(path)
    card = read_card(path)
    if arch is not None:
        return _load_into(_build_arch(arch), str(card.get("model") or arch), card, path)
    cpath = card_path(path)
    if model_name is not None and "model" in card and card["model"] != model_name:
        raise CheckpointError(f"{path}: its card ({cpath.name}) says model {card['model']!r}, "
                              f"but {model_name!r} was asked for")
    name = model_name or card.get("model")
    if name is None:
        why = f"its card ({cpath.name}) names no model" if cpath.exists() else f"no card ({cpath.name})"
        raise CheckpointError(f"{path}: {why} and no model name given; use one of {sorted(ZOO)}")
    if not isinstance(name, str) or name not in ZOO:
        raise CheckpointError(f"{path}: unknown model {name!r}; the zoo has {sorted(ZOO)} (a net of your own: "
                              f"give its architecture, --arch FILE.py:FACTORY)")
    return _load_into(build(name), name, card, path)


def _build_arch(spec: str) -> nn.Module:
    from .arch import build as build_arch

    return build_arch(spec)


def _load_into(model: nn.Module, name: str, card: dict, path: Path) -> tuple[nn.Module, dict]:
    """Check the file against its card and `model`'s architecture, then load it into `model`."""
    tensors = read_tensors(path)
    if "sha256" in card and card["sha256"].lower() != sha256_file(path):
        raise CheckpointError(f"{path}: sha256 differs from its card; the file was changed or damaged")
    if "removed" in card:  # a compact net (export.py): the zoo model with the card's channels taken out
        from .export import shrink

        shrink(model, card["removed"], path)
    check_architecture(model, tensors, name, path)
    state = model.state_dict()
    tensors = {k: v.to(state[k].dtype) for k, v in tensors.items()}  # e.g. float64 or float16 files
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: weights contain NaN or inf ({', '.join(bad)})")
    model.load_state_dict(tensors)
    model.eval()
    check_outputs(model, path)
    return model, {"model": name, **card}


OUTPUT_LIMIT = 1e12  # logits beyond this are no trained net's: softmax saturates, the metric overflows


def check_outputs(model: nn.Module, path: Path) -> None:
    """CheckpointError when the net's logits on a fixed batch of images are NaN, infinite or beyond OUTPUT_LIMIT
    (weights scaled far out of range): no path, training or score can start from there."""
    from .groups import example_input

    with torch.no_grad():
        y = model(example_input(model, 2)).float()
    if torch.isfinite(y).all() and y.abs().max() <= OUTPUT_LIMIT:
        return
    worst = y.abs().nan_to_num(nan=math.inf).max().item()
    said = "not finite" if math.isinf(worst) else f"as large as {worst:.3g}"
    largest = max((v.abs().max().item() for v in model.state_dict().values() if v.is_floating_point() and v.numel()),
                  default=0.0)
    raise CheckpointError(f"{path}: the net's outputs are {said} on ordinary images (its weights are out of range, "
                          f"up to {largest:.3g}); this checkpoint cannot be used")


CHANCE_FACTOR = 2.0  # below this many times chance, a net with no accuracy on its card reads as the wrong data


def near_chance(acc: float, test_split, card: dict, name: str | None = None) -> str | None:
    """A warning when `acc` is less than CHANCE_FACTOR × chance (one over the classes of `test_split`), else None."""
    classes = max(2, int(test_split.y.max().item()) + 1) if len(test_split) else 10
    if acc >= CHANCE_FACTOR / classes:
        return None
    who = name or f"this {card.get('model', 'net')}"
    said = f" (its card says {card['dataset']})" if card.get("dataset") else ""
    return (f"{who} measures {acc:.1%} on {test_split.name} ({len(test_split)} {test_split.source} test images), near "
            f"chance ({1 / classes:.0%}): is the dataset right{said}?")


def check_accuracy(model: nn.Module, card: dict, test_split, tolerance: float = 0.05,
                   name: str | None = None) -> str | None:
    """A warning when `model` measures more than `tolerance` below its card's test_accuracy on `test_split`
    (a data.Split), e.g. because the card names the wrong dataset, or, when the card has no test_accuracy, near
    chance (`near_chance`); None otherwise. `name` (say, the checkpoint's file name) starts the message."""
    from .train import evaluate

    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    claimed = card.get("test_accuracy")
    _, acc = evaluate(model, test_split)
    if claimed is None:
        return near_chance(acc, test_split, card, name)
    if acc >= claimed - tolerance:
        return None
    who = name or f"this {card.get('model', 'net')}"
    said = card.get("dataset")
    msg = (f"{who} measures {acc:.1%} on {test_split.name} ({len(test_split)} {test_split.source} test images), "
           f"its card says {claimed:.1%}")
    if said is None or said == test_split.name:
        return msg + ": is the card's dataset right?"
    return msg + f" on {said}: is the dataset right?"
