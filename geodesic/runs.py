"""Run folders, the unit of persistence shared by the CLI, the app and the benchmarks.

    runs/<id>/meta.json              what was run: model, data, objective, hyperparameters, status, summary
    runs/<id>/metrics.parquet        one row per Step
    runs/<id>/final.safetensors      the last weight vector ("w") and the start ("w_start")
    runs/<id>/snapshots.safetensors  every k-th weight vector ("w") with its step number ("step")

Every file is written to a temporary name and renamed, so a reader never sees half a file; metrics are
flushed every step, so an interrupted run keeps every step it finished.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from . import __version__

def default_root() -> Path:
    """`$GEODESIC_RUNS`, read at each call, or `<repo>/runs`."""
    return Path(os.environ.get("GEODESIC_RUNS", Path(__file__).resolve().parent.parent / "runs"))


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: dict) -> None:
    _atomic_write_bytes(path, lambda t: t.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def new_run_id(kind: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"


class RunWriter:
    """Creates a run folder and keeps it up to date while a path runs."""

    def __init__(self, meta: dict, root: str | os.PathLike | None = None, run_id: str | None = None):
        self.root = Path(root or default_root())
        self.id = run_id or new_run_id(meta.get("kind", "run"))
        self.dir = self.root / self.id
        self.dir.mkdir(parents=True, exist_ok=False)
        self.meta = {"id": self.id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "running",
                     "versions": {"geodesic": __version__, "torch": torch.__version__, "python": platform.python_version()},
                     **meta}
        self.rows: list[dict] = []
        self.snapshots: list[tuple[int, torch.Tensor]] = []
        write_json(self.dir / "meta.json", self.meta)

    def add(self, row: dict) -> None:
        """Append one step's row and flush metrics.parquet."""
        self.rows.append(row)
        self.flush_metrics()

    def flush_metrics(self) -> None:
        df = pd.DataFrame(self.rows)
        _atomic_write_bytes(self.dir / "metrics.parquet", lambda t: df.to_parquet(t, index=False))

    def set_snapshots(self, snapshots: list[tuple[int, torch.Tensor]]) -> None:
        self.snapshots = snapshots
        if not snapshots:
            return
        tensors = {"step": torch.tensor([s for s, _ in snapshots]), "w": torch.stack([w for _, w in snapshots]).float()}
        _atomic_write_bytes(self.dir / "snapshots.safetensors", lambda t: save_file(tensors, str(t)))

    def finish(self, w: torch.Tensor, w_start: torch.Tensor, status: str, summary: dict | None = None) -> None:
        tensors = {"w": w.detach().float().contiguous(), "w_start": w_start.detach().float().contiguous()}
        _atomic_write_bytes(self.dir / "final.safetensors", lambda t: save_file(tensors, str(t)))
        self.update(status=status, summary=summary or {})

    def update(self, **fields) -> None:
        self.meta.update(fields)
        write_json(self.dir / "meta.json", self.meta)


@dataclass
class Run:
    dir: Path
    meta: dict
    metrics: pd.DataFrame

    @property
    def id(self) -> str:
        return self.meta.get("id", self.dir.name)

    def snapshots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps (S,), weights (S, n)); empty when the run kept none."""
        p = self.dir / "snapshots.safetensors"
        if not p.is_file():
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0)
        t = load_file(str(p))
        return t["step"], t["w"]

    def final(self) -> dict[str, torch.Tensor]:
        p = self.dir / "final.safetensors"
        if not p.is_file():
            raise FileNotFoundError(f"run {self.id} has no final weights (status: {self.meta.get('status')})")
        return load_file(str(p))


def load_run(path: str | os.PathLike) -> Run:
    """Open a run folder; a missing metrics file gives an empty table (the run died before its first step)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    mp = path / "metrics.parquet"
    metrics = pd.read_parquet(mp) if mp.is_file() else pd.DataFrame()
    return Run(path, meta, metrics)


def list_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Every readable run under root, newest first (unreadable folders are skipped)."""
    root = Path(root or default_root())
    runs = []
    for d in sorted(root.glob("*/meta.json"), reverse=True):
        try:
            runs.append(load_run(d.parent))
        except (ValueError, OSError):
            continue
    return runs


def delete_run(run: Run) -> None:
    shutil.rmtree(run.dir)
