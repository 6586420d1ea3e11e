"""What a user runs, each a list of lifecycle phases over the core: sparsify (sparsify.py), damage and recovery,
merge, the baselines and the sweep methods, sweeps and fronts, trajectory embeddings."""


def __getattr__(name: str):
    """`geodesic.experiments.<name>` of versions up to 0.1 (the sparsify module was called experiments)."""
    import importlib
    import importlib.util

    from .._moved import warn_moved

    missing = AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise missing  # a submodule: the import system loads it
    sparsify = importlib.import_module(f"{__name__}.sparsify")
    if not hasattr(sparsify, name):
        raise missing
    warn_moved(f"experiments.{name}", f"experiments.sparsify.{name}")
    return getattr(sparsify, name)
