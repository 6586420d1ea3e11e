"""A user's own architecture: `FILE.py:FACTORY` or `package.module:FACTORY`, a callable with no arguments that
returns the `nn.Module`. Its weights come from a plain state dict (`safetensors.torch.save_file(model.state_dict())`).

Loading an architecture file runs that file's Python code, as `python FILE.py` would: only use files you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

from torch import nn


class ArchError(ValueError):
    """An architecture spec that cannot give a model: bad spec, missing file or factory, a factory that fails."""


def split_spec(spec: str) -> tuple[str, str]:
    """("FILE.py" or "package.module", "FACTORY") from "WHERE:FACTORY"."""
    where, sep, factory = str(spec).rpartition(":")
    if not sep or not where or not factory.isidentifier():
        raise ArchError(f"--arch {spec!r}: give FILE.py:FACTORY or package.module:FACTORY")
    return where, factory


def normalize(spec: str) -> str:
    """The spec with its file made absolute, so that a run folder can rebuild the net from anywhere."""
    where, name = split_spec(spec)
    return f"{Path(where).resolve()}:{name}" if where.endswith(".py") else spec


def _module_from_file(path: Path):
    if not path.is_file():
        raise ArchError(f"{path}: no such architecture file")
    name = f"geodesic_arch_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ArchError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as e:  # the file ended the program as it was loaded: not an architecture file
        sys.modules.pop(name, None)
        raise ArchError(f"{path}: running the file called sys.exit({e.code!r}); an architecture file must only "
                        "define its factory (guard a script's code with if __name__ == '__main__')") from None
    except Exception as e:  # noqa: BLE001 — the user's file failed: say where and why
        sys.modules.pop(name, None)
        raise ArchError(f"{path}: running the file failed ({type(e).__name__}: {e})") from None
    return module


def _module_by_name(name: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        raise ArchError(f"cannot import {name!r} ({type(e).__name__}: {e})") from None


def factory(spec: str) -> Callable[[], nn.Module]:
    """The factory named by spec (the file is run, or the module imported)."""
    where, name = split_spec(spec)
    module = _module_from_file(Path(where)) if where.endswith(".py") else _module_by_name(where)
    fn = getattr(module, name, None)
    if fn is None:
        have = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))[:12]
        raise ArchError(f"{where} has no {name!r}; it defines {have}")
    if not callable(fn):
        raise ArchError(f"{where}:{name} is a {type(fn).__name__}, not a callable")
    return fn


def build(spec: str) -> nn.Module:
    """Call the factory; the model in eval mode, checked on a batch of images (`check_forward`)."""
    fn = factory(spec)
    try:
        model = fn()
    except SystemExit as e:
        raise ArchError(f"{spec}: calling {split_spec(spec)[1]}() called sys.exit({e.code!r})") from None
    except Exception as e:  # noqa: BLE001
        raise ArchError(f"{spec}: calling {split_spec(spec)[1]}() failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise ArchError(f"{spec}: {split_spec(spec)[1]}() returned a {type(model).__name__}, not a torch nn.Module")
    if not any(True for _ in model.parameters()):
        raise ArchError(f"{spec}: the model has no parameters")
    check_forward(model.eval(), spec)
    return model


def check_forward(model: nn.Module, spec: str) -> None:
    """ArchError unless `model` (in eval mode) maps a batch of two (1, 28, 28) images in [0, 1] to logits (2, classes);
    also for a BatchNorm without running statistics, whose output for an image depends on the rest of its batch."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    for name, mod in model.named_modules():
        if isinstance(mod, _BatchNorm) and mod.running_mean is None:
            raise ArchError(f"{spec}: BatchNorm {name!r} keeps no running statistics (track_running_stats=False), so "
                            "each image's output depends on the rest of its batch; build it with "
                            "track_running_stats=True")
    shape = tuple(getattr(model, "input_shape", (1, 28, 28)))
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            y = model(x)
    except SystemExit as e:
        raise ArchError(f"{spec}: the model's forward called sys.exit({e.code!r})") from None
    except Exception as e:  # noqa: BLE001 — the user's forward failed: say on what
        raise ArchError(f"{spec}: the model's forward fails on a batch of {'×'.join(map(str, shape))} images "
                        f"({type(e).__name__}: {e}); it must take (B, {', '.join(map(str, shape))}) images in [0, 1] "
                        f"and return (B, classes) logits{channel_hint(e, shape)}") from None
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != 2:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ArchError(f"{spec}: the model returns {got} for 2 images; it must return (B, classes) logits")


def channel_hint(error: Exception, shape: tuple[int, ...]) -> str:
    """A hint when a net built for colour images (torchvision's, 3 channels) meets the grey ones."""
    if "channels" not in str(error) or shape[0] != 1:
        return ""
    return ("; a net made for 3-channel images (torchvision's models) needs its first convolution to take 1 channel, "
            "e.g. in the factory: m = resnet18(num_classes=10); m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)")
