"""Shared helpers for the benchmarks: markdown tables and result files under bench/results/."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub markdown table of df (no extra dependency)."""
    def fmt(x):
        if isinstance(x, float):
            return format(x, floatfmt)
        return str(x)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def save(name: str, df: pd.DataFrame, note: str = "", floatfmt: str = ".4g") -> str:
    """Write bench/results/<name>.csv and .md; return the markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / f"{name}.csv", index=False)
    md = markdown(df, floatfmt) + (f"\n\n{note}\n" if note else "\n")
    (RESULTS / f"{name}.md").write_text(md)
    return md
