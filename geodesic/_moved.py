"""The flat module names of versions up to 0.1 (`geodesic.metric`, `geodesic.models`, …), kept working with a
DeprecationWarning that names the new place. Each old name is an alias of its module in the layered package; the
old `geodesic.models` (zoo and checkpoints in one file) reads from `store.zoo`, `store.checkpoints`, `store.cards`."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    **{m: f"infra.{m}" for m in ("files", "threads", "allocator", "progress", "options", "lifecycle", "backend")},
    **{m: f"core.{m}" for m in ("params", "groups", "metric", "tangent", "trust", "objectives", "targets", "path",
                                "train")},
    **{m: f"store.{m}" for m in ("data", "runs", "export", "inputs", "source", "arch")},
    **{m: f"experiments.{m}" for m in ("damage", "recovery", "merge", "baselines", "fip", "recalibrate", "methods",
                                       "sweep", "fronts", "embed")},
    "models": "store.zoo, store.checkpoints, store.cards",
}
MODELS_PARTS = ("store.zoo", "store.checkpoints", "store.cards")


def warn_moved(old: str, new: str) -> None:
    warnings.warn(f"geodesic.{old} has moved to geodesic.{new}; import it from there", DeprecationWarning,
                  stacklevel=3)


def _models() -> types.ModuleType:
    """The old geodesic.models: zoo, checkpoint IO and cards read through one module."""
    parts = [importlib.import_module(f"geodesic.{p}") for p in MODELS_PARTS]
    module = types.ModuleType("geodesic.models", "deprecated: geodesic.store.zoo, .checkpoints and .cards")

    def __getattr__(name: str):
        for part in parts:
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(f"module 'geodesic.models' has no attribute {name!r}")

    module.__getattr__ = __getattr__
    return module


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `import geodesic.<old>` with the module's new home (after the normal finders found nothing)."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.partition(".")
        if head == "geodesic" and old in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        old = spec.name.partition(".")[2]
        warn_moved(old, MOVED[old])
        return _models() if old == "models" else importlib.import_module(f"geodesic.{MOVED[old]}")

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
