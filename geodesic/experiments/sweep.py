"""A sweep: every cell method × sparsity × seed × data budget, each a run folder, on a backend (Ray by default).

    spec = SweepSpec(Source("assets/checkpoints/lenet60-fashion-mnist.safetensors"), filters=(30, 50),
                     methods=("geodesic", "finetune"), seeds=(0, 1), seconds=60)
    table = run_sweep(spec, "sweeps/x")          # DIR/cells/<cell>/ run folders, DIR/results.csv and .parquet

Each cell gets the same budget of CPU seconds on one thread (geodesic.experiments.methods). Rerunning the same sweep into
the same folder resumes it: cells whose run folder ended are kept, the others (interrupted, failed) run again.
Running it with more sparsities, methods, seeds or data budgets (the same checkpoint, data and seconds) grows
it: the new cells run, the finished ones are kept, and sweep.json records the grown grid.
A cell that raises records its error in its folder and row; the others go on.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..infra.backend import node
from ..infra.lifecycle import Status, Stop
from ..store.source import Source
from .choices import SWEEP_METHODS
from .grid import CELLS, keep_finished, run_cells, write_table

if TYPE_CHECKING:
    import pandas as pd

SPEC = "sweep.json"
COLUMNS = ["method", "filters", "fraction", "seed", "data", "accuracy", "loss", "distance", "seconds", "steps",
           "grads", "length", "probe", "pull_batch", "status", "error", "cell", "node", "host", "wall"]
# probe, pull_batch: the batches a geodesic cell ran with, fitted to its budget (sparsify.fit_batches); empty for
# the other methods. Its meta.json holds the whole config.
MAX_SEED = 2**32  # what every random generator of a cell accepts


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs. Sparsity as `filters` (groups to zero) and/or `fractions` of the model's groups;
    `data`: training images per cell (0: the whole training split), the same images for every method
    (labels used by finetune only); `methods` may name "+recal" variants (geodesic.experiments.methods); `seconds`: each
    cell's CPU budget; the source's test images score each cell."""

    source: Source
    filters: tuple[int, ...] = ()
    fractions: tuple[float, ...] = ()
    methods: tuple[str, ...] = SWEEP_METHODS
    seeds: tuple[int, ...] = (0,)
    data: tuple[int, ...] = (0,)
    seconds: float = 60.0

    def validate(self) -> "SweepSpec":
        from ..core.path import require
        from .methods import METHODS, RECAL, VARIANTS

        require([
            (bool(self.filters or self.fractions), "give the sparsity: filters and/or fractions"),
            (all(f >= 1 for f in self.filters), f"filters must be >= 1, got {list(self.filters)}"),
            (all(0 < f <= 1 for f in self.fractions), f"fractions must be in (0, 1], got {list(self.fractions)}"),
            (bool(self.methods) and all(m in METHODS + VARIANTS for m in self.methods),
             f"methods must be among {', '.join(METHODS)}, each also with {RECAL}, got {list(self.methods)}"),
            (bool(self.seeds) and all(0 <= s < MAX_SEED for s in self.seeds),
             f"seeds must be in [0, 2**32), got {list(self.seeds)}"),
            (bool(self.data) and all(d >= 0 for d in self.data), f"data must be >= 0 images, got {list(self.data)}"),
            (0 < self.seconds <= 86_400, f"seconds must be in (0, 86400], got {self.seconds}"),
            (not self.source.eval_size or self.source.eval_size > 0, "eval_size must be >= 0 (0: all)"),
            (len(set(self.methods)) == len(self.methods), "a method is listed twice"),
        ])
        return self

    def grown(self, other: "SweepSpec") -> "SweepSpec":
        """This sweep with `other`'s grid values added (same source and budget): the folder's record when a
        sweep grows by more sparsities, methods, seeds or data budgets."""
        add = lambda a, b: a + tuple(x for x in b if x not in a)  # noqa: E731
        return replace(self, **{f: add(getattr(self, f), getattr(other, f))
                                for f in ("filters", "fractions", "methods", "seeds", "data")})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        names = {f.name for f in fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**{**kw, "source": Source(**d["source"])})


@dataclass(frozen=True)
class Cell:
    method: str
    filters: int
    seed: int
    data: int
    fraction: float | None = None

    @property
    def id(self) -> str:
        return f"{self.method}-f{self.filters}-d{self.data or 'all'}-s{self.seed}"


def cells(spec: SweepSpec, n_groups: int) -> list[Cell]:
    """Every cell once, sparsity-major (a value given twice, or a fraction that names the same number of groups
    as --filters, is one cell: the first); ValueError when a sparsity is not possible for a model with n_groups."""
    levels = [(f, None) for f in spec.filters] + [(max(1, round(q * n_groups)), q) for q in spec.fractions]
    for f, _ in levels:
        if f > n_groups:
            raise ValueError(f"cannot zero {f} groups: the model has {n_groups}")
    every = [Cell(m, f, s, d, q) for f, q in levels for d in spec.data for m in spec.methods for s in spec.seeds]
    unique: dict[str, Cell] = {}
    for c in every:
        unique.setdefault(c.id, c)
    return list(unique.values())


# --- one cell (runs on a worker) ------------------------------------------------------------------------


def training_images(train, count: int):
    """The first `count` images of a fixed permutation of the training split (all of it for 0): every method,
    seed and sparsity of a sweep sees the same images."""
    import torch

    from ..store.data import Split

    if not count or count >= len(train):
        return train
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]
    return Split(train.x[keep], train.y[keep], train.name, train.split, train.source)


def run_cell(spec: SweepSpec, cell: Cell, root: str) -> dict:
    """Run one cell into root/<cell id>/ and return its results row (status "error" with the message when it
    raised). One torch thread; the budget starts once the inputs are loaded."""
    from ..infra import threads
    from ..store.runs import RunWriter

    t0 = time.perf_counter()
    threads.configure(1)
    writer = RunWriter({"kind": "sweep-cell", "cell": asdict(cell), "sweep": spec.as_dict()}, root=root,
                       run_id=cell.id)
    base = {**asdict(cell), "cell": cell.id, "node": node(), "host": platform.node()}
    writer.update(node=base["node"])  # where it ran, kept for a resumed sweep's table
    try:
        return {**base, **_run(spec, cell, writer), "wall": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 — recorded in the row and the folder; the sweep goes on
        error = f"{type(e).__name__}: {e}"
        writer.update(status=Status.INTERRUPTED, error=error, trace=traceback.format_exc()[-4000:],
                      summary={**base, "status": Status.ERROR.value, "error": error})
        return {**base, "status": Status.ERROR.value, "error": error, "wall": time.perf_counter() - t0}


def _run(spec: SweepSpec, cell: Cell, writer) -> dict:
    from ..core.path import Evaluation
    from ..infra.lifecycle import execute
    from ..store.runs import run_meta
    from .methods import Budget, Counter, Task, method_phases

    ckpt, dataset, train, test = spec.source.open()
    task = Task(ckpt.model, ckpt.w, ckpt.groups, cell.filters, training_images(train, cell.data),
                Evaluation(test.x, test.y), cell.seed)
    writer.update(**run_meta("sweep-cell", ckpt, dataset, train.source, len(test)))  # kind, cell, sweep were set
    budget, counter = Budget(spec.seconds), Counter()
    chosen, phases = method_phases(cell.method, task, budget, counter)
    ran, config = {}, {}  # a geodesic cell's config as it ran: whole in meta.json, its batches in the table
    if counter.config is not None:
        config = {"config": counter.config}
        ran = {"probe": counter.config["path"]["probe"], "pull_batch": counter.config["pull_batch"]}
    writer.begin(ckpt.model, ckpt.w, target_groups=[g.name for g in chosen], **config)

    def summary(rec) -> dict:
        last = rec.rows[-1] if rec.rows else {}
        lengths = [r["length"] for r in rec.rows if isinstance(r.get("length"), float)]
        return {**asdict(cell), "cell": cell.id, "status": rec.status, "accuracy": last.get("accuracy", math.nan),
                "loss": last.get("loss", math.nan), "distance": last.get("distance", math.nan),
                "seconds": counter.seconds, "steps": counter.steps, "grads": counter.grads,
                "length": lengths[-1] if lengths else math.nan, "error": None, **ran}

    rec = execute(phases, writer, None, None, summary)
    return summary(rec) | {"status": rec.status.value}


# --- the driver -----------------------------------------------------------------------------------------


def find_sweeps(root: str | os.PathLike) -> list[Path]:
    """Sweep folders (holding sweep.json) at root or one level below, newest first."""
    root = Path(root)
    found = [p.parent for p in [root / SPEC, *root.glob(f"*/{SPEC}")] if p.is_file()]
    return sorted(found, key=lambda p: (p / SPEC).stat().st_mtime, reverse=True)


def write_results(out: Path, rows: list[dict]) -> "pd.DataFrame":
    """DIR/results.csv and DIR/results.parquet, one row per cell in COLUMNS order (written atomically)."""
    return write_table(out, rows, COLUMNS, ["method", "filters", "data", "seed"],
                       ("accuracy", "loss", "distance", "seconds", "length", "wall", "fraction", "probe", "pull_batch"))


def read_spec(path: Path) -> SweepSpec:
    """The sweep recorded in `path` (sweep.json); ValueError naming the file when it does not hold one."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or not isinstance(d.get("source"), dict):
            raise ValueError(f"a JSON {type(d).__name__} without a source")
        return SweepSpec.from_dict(d)
    except (ValueError, TypeError, KeyError, RecursionError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a sweep record ({type(e).__name__}: {str(e)[:200]}); give a new --out, or "
                         "restore that file (nothing was changed)") from None


def plan(spec: SweepSpec, out: str | Path) -> tuple[Path, list[Cell], SweepSpec | None]:
    """Check the spec and the folder without writing anything: (out, every cell, the spec recorded there or
    None). ValueError when the folder holds another sweep, or files of the user's that are not a sweep."""
    spec.validate()
    out = Path(out).resolve()
    ckpt = spec.source.open()[0]
    todo = cells(spec, len(ckpt.groups))
    saved = out / SPEC
    if saved.is_file():
        old = read_spec(saved)
        if (old.source, old.seconds) != (spec.source, spec.seconds):
            raise ValueError(f"{out} holds another sweep ({saved}: another checkpoint, data or budget per cell); "
                             "give a new --out, or the same checkpoint, data and --seconds to resume or grow it")
        return out, todo, old
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder for the sweep (nothing was changed)")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} holds files but no sweep ({SPEC}); give a new or empty folder for the sweep "
                         "(nothing was changed)")
    return out, todo, None


def prepare(spec: SweepSpec, out: Path, todo: list[Cell], old: SweepSpec | None) -> dict[str, dict]:
    """Write the folder's record (the grown grid when resuming), clear the cells that did not end; the rows
    kept (cell id → row)."""
    from ..infra.files import check_writable
    from ..store.runs import write_json

    saved = out / SPEC
    if old is not None:
        grown = old.grown(spec)
        if grown != old:
            write_json(saved, grown.as_dict())
    else:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out, "sweep folder")
        write_json(saved, spec.as_dict())
    return keep_finished(out, [c.id for c in todo], "sweep")


def run_sweep(spec: SweepSpec, out: str | Path, backend: str = "ray", address: str | None = None,
              workers: int | None = None, on_cell: Callable[[dict, int, int], None] | None = None,
              stop: Stop | None = None) -> "pd.DataFrame":
    """Run every cell not yet finished and return the results table (also in DIR/results.csv/.parquet, rewritten
    as each cell ends). on_cell(row, done, total) after each cell; `stop` (or Ctrl-C) cancels the rest, keeping
    every finished cell."""
    from ..infra.backend import check_backend, open_backend

    spec = replace(spec, source=spec.source.absolute())
    check_backend(backend, address, workers)
    out, todo, old = plan(spec, out)
    with open_backend(backend, address, workers) as pool:  # a cluster that refuses us: nothing written yet
        kept = prepare(spec, out, todo, old)
        by_id = {c.id: c for c in todo}
        pending = [(c.id, (spec, c, str(out / CELLS))) for c in todo if c.id not in kept]
        failed = lambda cid, e: {**asdict(by_id[cid]), "cell": cid, "status": Status.ERROR.value,  # noqa: E731
                                 "error": repr(e)}
        return run_cells(pool, run_cell, pending, dict(kept), lambda rows: write_results(out, rows), failed,
                         on_cell, len(todo), stop)
