"""The package's plan, checked: each layer imports only the layers below it, no module imports itself back through
a circle, and the flat names of earlier versions still import (with a DeprecationWarning naming the new place)."""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "geodesic"
LAYERS = ["infra", "core", "store", "experiments", "cli"]  # bottom to top


def modules() -> dict[str, Path]:
    """{dotted name relative to geodesic: file} for every module of the package."""
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        out[".".join(parts)] = p
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """The geodesic modules `name` imports anywhere in its file (inside functions too), relative to geodesic."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    known, found = modules(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from ..x.y import z, resolved against this module's package
                mod = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("geodesic"):
                rest = node.module.removeprefix("geodesic").lstrip(".")
                mod = rest.split(".") if rest else []
            else:
                continue
            for alias in node.names:  # `from . import x` names a module when x is one
                sub = ".".join(mod + [alias.name])
                found.add(sub if sub in known else ".".join(mod))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("geodesic."):
                    found.add(alias.name.removeprefix("geodesic."))
    return {m for m in found if m in known and m != name}


def layer(name: str) -> int | None:
    head = name.split(".")[0]
    return LAYERS.index(head) if head in LAYERS else None


def test_every_module_sits_in_a_layer():
    loose = [m for m in modules() if m and layer(m) is None and m not in ("__main__", "_moved")]
    assert loose == []


def test_no_import_runs_up_a_layer():
    up = []
    for name, path in modules().items():
        here = layer(name)
        if here is None:
            continue
        up += [f"{name} -> {m}" for m in imports_of(name, path) if (layer(m) or 0) > here]
    assert up == []


def test_no_import_circle():
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    graph = {k: {m for m in v if m} for k, v in graph.items() if k}  # the package's __init__ imports nothing heavy
    state: dict[str, int] = {}
    circle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circle.extend(trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, trail + [node]):
                return True
        state[node] = 2
        return False

    assert not any(visit(n, []) for n in sorted(graph) if state.get(n) is None), " -> ".join(circle)


def test_the_checker_reads_imports_as_python_resolves_them():
    """Known edges, one per import form (a checker that saw no imports would pass the two tests above)."""
    assert "core.params" in imports_of("store.zoo", PKG / "store" / "zoo.py")
    assert "infra.lifecycle" in imports_of("core.path", PKG / "core" / "path.py")
    assert "core.metric" in imports_of("experiments.sparsify", PKG / "experiments" / "sparsify.py")


@pytest.mark.parametrize("old, new", [("metric", "geodesic.core.metric"), ("runs", "geodesic.store.runs"),
                                      ("sweep", "geodesic.experiments.sweep"), ("lifecycle", "geodesic.infra.lifecycle")])
def test_old_flat_names_still_import_with_a_deprecation(old, new):
    with pytest.warns(DeprecationWarning, match=rf"geodesic\.{old} has moved to {new}"):
        module = importlib.import_module(f"geodesic.{old}")
    assert module is importlib.import_module(new)


def test_old_models_and_experiments_names_read_through():
    from geodesic.store import checkpoints, zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        models = importlib.import_module("geodesic.models")
        import geodesic.experiments as experiments

        assert models.build is zoo.build and models.load is checkpoints.load
        from geodesic.experiments.sparsify import run_sparsify

        assert experiments.run_sparsify is run_sparsify
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        models.nothing_here
