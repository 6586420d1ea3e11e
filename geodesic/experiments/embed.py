"""2-D pictures of weight trajectories: PCA and UMAP of the snapshots of several runs, fitted jointly.

All snapshots W: (N, n) of the chosen runs are stacked and embedded together, so paths share one picture.
PCA: centre W, thin SVD W_c = U S Vᵀ (cost O(N²n), never an n×n matrix), coordinates U[:, :2]·S[:2], each
axis' sign fixed so its largest-|·| loading is positive. UMAP (umap-learn): on the first ≤ 50 principal
coordinates (same SVD), seeded. Results are cached per (runs, snapshot files' mtimes, method, seed).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

METHODS = ("pca", "umap")
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 16
_LOCK = threading.Lock()


def _stack(runs_snapshots: dict[str, tuple]) -> tuple[torch.Tensor, pd.DataFrame]:
    """W: (N, n) float64 and the (run, step) of each row; runs without snapshots are skipped."""
    blocks, index = [], []
    n = None
    for run, (steps, W) in runs_snapshots.items():
        W = torch.as_tensor(W)
        if W.ndim != 2 or W.shape[0] == 0:
            continue
        if n is not None and W.shape[1] != n:
            raise ValueError(f"run {run}: {W.shape[1]} weights, other runs have {n}; embed runs of one architecture")
        n = W.shape[1]
        blocks.append(W.double())
        index.append(pd.DataFrame({"run": run, "step": torch.as_tensor(steps).long().numpy()}))
    if not blocks:
        raise ValueError("no snapshots to embed")
    return torch.cat(blocks), pd.concat(index, ignore_index=True)


def principal_coordinates(W: torch.Tensor, dims: int) -> torch.Tensor:
    """(N, dims) coordinates of the centred rows of W on their top principal axes (sign-fixed)."""
    Wc = W - W.mean(0, keepdim=True)
    U, S, Vh = torch.linalg.svd(Wc, full_matrices=False)
    dims = min(dims, S.numel())
    sign = torch.sign(Vh[:dims].gather(1, Vh[:dims].abs().argmax(1, keepdim=True))).squeeze(1)
    sign[sign == 0] = 1
    coords = U[:, :dims] * S[:dims] * sign
    if coords.shape[1] < 2:  # a single snapshot or a rank-1 cloud: pad with zeros
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1], dtype=coords.dtype)], 1)
    return coords


def umap_coordinates(X: np.ndarray, seed: int) -> np.ndarray:
    """UMAP of the rows of X to 2-D (umap-learn, seeded); tiny sets fall back to their first 2 coordinates."""
    if X.shape[0] < 4:
        return X[:, :2]
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, X.shape[0] - 1), random_state=seed,
                        init="random" if X.shape[0] < 30 else "spectral", n_jobs=1)
    return reducer.fit_transform(X)


def embed(runs_snapshots: dict[str, tuple], method: str = "pca", seed: int = 0) -> pd.DataFrame:
    """One joint 2-D embedding of every run's snapshots: DataFrame[run, step, x, y], rows in input order."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    W, index = _stack(runs_snapshots)
    if method == "pca":
        xy = principal_coordinates(W, 2).numpy()
    else:
        xy = umap_coordinates(principal_coordinates(W, 50).numpy(), seed)
    return index.assign(x=xy[:, 0].astype(float), y=xy[:, 1].astype(float))


def _key(run_dirs: list[Path], method: str, seed: int) -> tuple:
    stamps = []
    for d in run_dirs:
        p = Path(d) / "snapshots.safetensors"
        stamps.append((str(d), p.stat().st_mtime_ns if p.is_file() else 0))
    return tuple(sorted(stamps)), method, seed


def embed_runs(run_dirs: list[str | Path], method: str = "pca", seed: int = 0) -> pd.DataFrame:
    """embed() of run folders' snapshots with each row's metrics (accuracy/loss carried forward from the
    last evaluated step); cached on the folders, their snapshot files' mtimes, method and seed."""
    from ..store.runs import load_run

    key = _key([Path(d) for d in run_dirs], method, seed)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key].copy()
    runs = [load_run(d) for d in run_dirs]
    out = embed({r.id: r.snapshots() for r in runs}, method, seed)
    out = out.merge(pd.concat([_metrics_by_step(r.id, r.metrics) for r in runs], ignore_index=True),
                    on=["run", "step"], how="left")
    with _LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out.copy()


def _metrics_by_step(run: str, m: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("length", "distance", "target_norm", "groups_zero", "accuracy", "loss") if c in m.columns]
    if m.empty or "step" not in m.columns:
        return pd.DataFrame({"run": pd.Series(dtype=str), "step": pd.Series(dtype="int64")})
    m = m[["step", *cols]].copy()
    for c in ("distance", "accuracy", "loss"):  # measured every few steps: a snapshot has its last measured value
        if c in m.columns:
            m[c] = m[c].ffill()
    m = m.drop_duplicates("step", keep="last")
    return m.assign(run=run)


def warm_umap() -> threading.Thread:
    """Compile umap-learn's numba kernels in a background thread (the first fit takes ~20 s otherwise)."""
    def body() -> None:
        try:
            umap_coordinates(np.random.default_rng(0).normal(size=(40, 5)), 0)
        except Exception:  # noqa: BLE001 — warming is best effort; the real call reports errors
            pass

    t = threading.Thread(target=body, name="geodesic-umap-warm", daemon=True)
    t.start()
    return t
