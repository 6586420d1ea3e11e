"""A grid of cells on a backend, resumable: what a sweep (sweep.py) and a task sequence's method × seed grid
(sequence_cells.py) share. Each cell is a run folder DIR/cells/<id>/; a cell whose run ended is kept when the same
grid runs again, the others are cleared and run again; the results table DIR/results.csv/.parquet is rewritten as
each cell ends.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..infra.lifecycle import Status, Stop

if TYPE_CHECKING:
    import pandas as pd

CELLS = "cells"
RESULTS = "results.parquet"  # and results.csv beside it
FINISHED = (Status.ARRIVED, Status.MISSED, Status.DONE, Status.DIVERGED)  # kept on resume


def finished_rows(root: Path) -> dict[str, dict]:
    """Cell id → row of every cell folder under root that ended (kept on resume)."""
    from ..store.runs import load_run

    out = {}
    for meta in sorted(root.glob("*/meta.json")):
        try:
            run = load_run(meta.parent)
        except (ValueError, OSError):
            continue
        row = run.meta.get("summary") or {}
        if run.status in FINISHED and row.get("cell") == meta.parent.name:
            out[row["cell"]] = {**row, "status": run.status.value, "node": run.meta.get("node", row.get("node")),
                                "host": run.meta.get("host")}
    return out


def keep_finished(out: Path, ids: list[str], what: str) -> dict[str, dict]:
    """The rows of the cells under DIR/cells that ended; the folders of the other cells in `ids` are cleared so
    they run again. ValueError, before anything is removed, when one of them is being written by a running
    process (another command on the same folder)."""
    from ..store.runs import load_run

    root = out / CELLS
    root.mkdir(exist_ok=True)
    kept = finished_rows(root)
    stale = [root / i for i in ids if i not in kept and (root / i).exists()]
    for folder in stale:
        try:
            live = load_run(folder).live
        except (FileNotFoundError, ValueError):
            live = False
        if live:
            raise ValueError(f"{folder} is being written by a running process; stop that {what} first")
    for folder in stale:
        shutil.rmtree(folder)
    return kept


def run_cells(pool, fn: Callable[..., dict], pending: list[tuple[str, tuple]], rows: dict[str, dict],
              write: Callable[[list[dict]], "pd.DataFrame"], failed: Callable[[str, BaseException], dict],
              on_cell: Callable[[dict, int, int], None] | None, total: int, stop: Stop | None) -> "pd.DataFrame":
    """Run fn(*args) for each pending (id, args) on the pool; each row joins `rows` (by its "cell") and the table
    is rewritten as it ends. A cell whose task raised (a worker lost) gets failed(id, error) as its row.
    on_cell(row, done, total) after each; `stop` (or Ctrl-C) cancels the rest, keeping every finished cell."""
    write(list(rows.values()))
    for i, row in pool.map(fn, [a for _, a in pending], stop=stop):
        if isinstance(row, BaseException):
            row = failed(pending[i][0], row)
        rows[row["cell"]] = row
        write(list(rows.values()))
        if on_cell is not None:
            on_cell(row, len(rows), total)
    return write(list(rows.values()))


def write_table(out: Path, rows: list[dict], columns: list[str], order: list[str],
                numeric: tuple[str, ...]) -> "pd.DataFrame":
    """A grid's results table: `rows` as `columns`, sorted by `order`, the `numeric` columns as numbers (NaN for
    a cell that has none), written atomically to DIR/results.csv and DIR/results.parquet."""
    import pandas as pd

    from ..store.runs import _atomic_write_bytes, plain

    df = pd.DataFrame([plain(r) for r in rows]).reindex(columns=columns)
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    for col in numeric:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    _atomic_write_bytes(out / "results.csv", lambda t: df.to_csv(t, index=False))
    _atomic_write_bytes(out / RESULTS, lambda t: df.to_parquet(t, index=False))
    return df
