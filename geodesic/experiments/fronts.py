"""What a sweep's results table says (pandas only; the app, the CLI and the benchmarks read it the same way).

- front: accuracy against sparsity per method, mean and sd over seeds (cells that failed left out);
- data budgets: the same per number of training images;
- recipe: over the geodesic paths to one sparsity (one per seed), does the shortest end most accurate?
  Pearson r of path length, and of the final functional distance D to the dense net, with accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..infra.lifecycle import Status
from .grid import RESULTS
from .sweep import COLUMNS

REQUIRED = ("method", "filters", "accuracy", "status")  # what a front needs; other columns may be missing
NUMBERS = ("filters", "fraction", "seed", "data", "accuracy", "loss", "distance", "seconds", "steps", "grads",
           "length", "probe", "pull_batch", "wall")


def read_results(folder: str | os.PathLike) -> pd.DataFrame:
    """A sweep folder's results table: results.parquet, or results.csv when the parquet file is missing or
    unreadable (the two hold the same rows). FileNotFoundError when it has none yet; ValueError naming the file
    when none can be read as a sweep's table. Numbers written as text are read as numbers; rows whose method,
    filters or data is not readable are left out, and counted in `table.attrs["unreadable"]`; other values that are
    not numbers read as missing, counted per column in `table.attrs["not_numbers"]`."""
    folder = Path(folder)
    paths = [p for p in (folder / RESULTS, folder / "results.csv") if p.is_file()]
    if not paths:
        raise FileNotFoundError(f"{folder} has no results table yet")
    problems = []
    for path in paths:
        try:
            return checked(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path), path)
        except Exception as e:  # noqa: BLE001 — pyarrow and pandas raise many types for a damaged file
            problems.append(str(e) if isinstance(e, ValueError) and str(e).startswith(str(path))
                            else f"{path}: not a readable table ({type(e).__name__})")
    raise ValueError("; ".join(problems))


def checked(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """`table` with the columns a sweep writes (absent optional ones empty), numbers as numbers, and only the rows
    a front can place; ValueError naming `path` when a required column is missing."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a sweep's results table (no {', '.join(missing)} column)")
    has_data = "data" in table.columns  # tables from before data budgets: the whole split
    table = table.reindex(columns=list(dict.fromkeys([*COLUMNS, *table.columns])))
    not_numbers = {}
    for col in NUMBERS:
        given = table[col].notna()
        table[col] = pd.to_numeric(table[col], errors="coerce")
        if (given & table[col].isna()).any():
            not_numbers[col] = int((given & table[col].isna()).sum())
    if not has_data:
        table["data"] = 0
    keep = table["method"].notna() & table["filters"].notna() & table["data"].notna()
    out = table[keep].reset_index(drop=True)
    out["method"] = out["method"].astype(str)
    out["status"] = out["status"].fillna("").astype(str)
    out.attrs["unreadable"] = int((~keep).sum())
    out.attrs["not_numbers"] = not_numbers
    return out


def version(folder: str | os.PathLike) -> tuple:
    """The modification times of a sweep folder's results tables (None where absent): a finished cell makes a
    new one, so readers cache the table per version."""
    folder = Path(folder)
    return tuple(f.stat().st_mtime_ns if f.is_file() else None for f in (folder / RESULTS, folder / "results.csv"))


def ok(table: pd.DataFrame) -> pd.DataFrame:
    """Cells that ended with a score (no error)."""
    return table[(table["status"] != Status.ERROR) & table["accuracy"].notna()]


def front(table: pd.DataFrame, by: tuple[str, ...] = ("method", "filters")) -> pd.DataFrame:
    """Per group: accuracy mean, sd (0 for one seed), seeds, and mean CPU seconds and steps."""
    g = ok(table).groupby(list(by))
    out = g.agg(mean=("accuracy", "mean"), sd=("accuracy", "std"), seeds=("accuracy", "size"),
                seconds=("seconds", "mean"), steps=("steps", "mean")).reset_index()
    out["sd"] = out["sd"].fillna(0.0)
    return out


def winners(table: pd.DataFrame) -> pd.DataFrame:
    """Per sparsity (and data budget): the method of highest mean accuracy (of tied ones, the first by name)
    and its margin over the next."""
    rows = []
    for key, part in front(table, ("data", "filters", "method")).groupby(["data", "filters"]):
        part = part.sort_values(["mean", "method"], ascending=[False, True], kind="stable")
        second = part["mean"].iloc[1] if len(part) > 1 else np.nan
        rows.append({"data": key[0], "filters": key[1], "best": part["method"].iloc[0],
                     "accuracy": part["mean"].iloc[0], "margin": part["mean"].iloc[0] - second})
    return pd.DataFrame(rows)


def recipe(table: pd.DataFrame) -> pd.DataFrame:
    """Per sparsity with ≥ 3 geodesic paths: is the shortest the most accurate, and r(length, accuracy),
    r(D, accuracy) over those paths (negative: shorter / closer is more accurate)."""
    geo = ok(table)
    geo = geo[(geo["method"] == "geodesic") & geo["length"].notna()]
    rows = []
    for (f, d), part in geo.groupby(["filters", "data"]):
        if len(part) < 3:
            continue
        shortest = part.loc[part["length"].idxmin()]
        rows.append({"filters": int(f), "data": int(d), "paths": len(part),
                     "shortest is most accurate": bool(shortest["accuracy"] >= part["accuracy"].max()),
                     "accuracy of shortest": float(shortest["accuracy"]), "best accuracy": float(part["accuracy"].max()),
                     "r(length, accuracy)": _r(part["length"], part["accuracy"]),
                     "r(D, accuracy)": _r(part["distance"], part["accuracy"])})
    return pd.DataFrame(rows)


def _r(x: pd.Series, y: pd.Series) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
