"""Checkpoints: `.safetensors` files (never pickles) with a JSON card beside them (cards.py); saved atomically, checked
against their card and architecture on load.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..infra.files import follow_umask, sha256_file
from .cards import CheckpointError, card_path, check_card, read_card
from .zoo import ZOO, build


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
    from ..infra.files import check_writable

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
        from .compact import shrink

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
    from ..core.groups import example_input

    with torch.no_grad():
        y = model(example_input(model, 2)).float()
    if torch.isfinite(y).all() and y.abs().max() <= OUTPUT_LIMIT:
        return
    worst = y.abs().nan_to_num(nan=math.inf, posinf=math.inf).max().item()  # nan_to_num would map inf to 3.4e38
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
    from ..core.train import evaluate

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
