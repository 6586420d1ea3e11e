"""Figures of a sweep's results (geodesic.experiments.fronts in, plotly out; no streamlit, no engine calls)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.figures import PALETTE, _figure, plain

COLORS = {"geodesic": PALETTE[0], "magnitude": PALETTE[7], "finetune": PALETTE[1], "distill": PALETTE[2],
          "fip": PALETTE[3]}


def _color(method: str, i: int) -> str:
    """A method's colour; a variant "base+what" (e.g. magnitude+recal) takes its base method's."""
    return COLORS.get(method.split("+")[0], PALETTE[i % len(PALETTE)])


def _dash(method: str) -> str:
    """Variants ("base+what") draw dashed beside their base method's solid line."""
    return "dash" if "+" in method else "solid"


def front(stats: pd.DataFrame, x: str = "filters", note: str = "") -> go.Figure:
    """Accuracy against sparsity, one line per method, error bars ±1 sd over seeds (geodesic.experiments.fronts.front rows);
    each point carries (method, x value) as customdata, for the page to open its cells."""
    data = []
    for i, (method, part) in enumerate(stats.groupby("method", sort=False)):
        part = part.sort_values(x)
        xs = part[x].to_numpy(float)
        data.append(go.Scatter(
            x=xs, y=part["mean"].to_numpy(float), mode="lines+markers", name=plain(method),
            error_y=dict(type="data", array=part["sd"].to_numpy(float), visible=True),
            line=dict(color=_color(method, i), width=3 if method == "geodesic" else 2, dash=_dash(method)),
            customdata=np.stack([np.full(len(xs), method, dtype=object), xs], axis=1),
            hovertemplate=f"{plain(method)}<br>{x} %{{x}}<br>accuracy %{{y:.4f}} ± %{{error_y.array:.4f}}"
                          "<br>(%{meta} seeds)<extra></extra>", meta=int(part["seeds"].max())))
    return _figure(data, "Accuracy against sparsity, per method", note, height=460,
                   xaxis=dict(title="groups zeroed" if x == "filters" else x),
                   yaxis=dict(title="test accuracy (mean ± sd over seeds)"))


def data_budgets(stats: pd.DataFrame, note: str = "") -> go.Figure:
    """Accuracy against the number of training images (log axis; 0 = the whole split drawn at the right)."""
    data = []
    top = max(float(stats["data"].max()) * 10, 10.0)
    for i, (method, part) in enumerate(stats.groupby("method", sort=False)):
        part = part.sort_values("data")
        xs = np.where(part["data"].to_numpy(float) == 0, top, part["data"].to_numpy(float))
        data.append(go.Scatter(x=xs, y=part["mean"].to_numpy(float), mode="lines+markers", name=plain(method),
                               error_y=dict(type="data", array=part["sd"].to_numpy(float), visible=True),
                               line=dict(color=_color(method, i), dash=_dash(method))))
    return _figure(data, "Who keeps more with little data", note, height=360,
                   xaxis=dict(title="training images (the rightmost point: the whole split)", type="log"),
                   yaxis=dict(title="test accuracy"))


def recipe(cells: pd.DataFrame, note: str = "") -> go.Figure:
    """Geodesic cells: final accuracy against path length, one colour per sparsity (the recipe keeps the
    shortest path of each colour)."""
    data = []
    for i, (filters, part) in enumerate(cells.groupby("filters")):
        data.append(go.Scatter(x=part["length"].to_numpy(float), y=part["accuracy"].to_numpy(float), mode="markers",
                               name=f"{filters} zeroed", marker=dict(size=10, color=PALETTE[i % len(PALETTE)]),
                               text=[plain(c) for c in part["cell"]],
                               hovertemplate="%{text}<br>length %{x:.4f}<br>accuracy %{y:.4f}<extra></extra>"))
    return _figure(data, "Does the shortest path end most accurate?", note, height=360,
                   xaxis=dict(title="path length Σ|Jθ|"), yaxis=dict(title="test accuracy"))
