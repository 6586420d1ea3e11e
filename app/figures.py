"""Pure figure builders: DataFrame in, plotly Figure out (no streamlit, no engine calls).

Every figure carries a subtitle saying what is measured, on which data, and how many samples.
Inputs are the rows the engine writes (`geodesic.core.path.Step.row()`, metrics.parquet) or frames from
`geodesic.experiments.embed` / `app.jobs` / `app.playground`.

Each figure is built in one go, `go.Figure(data=[dict(type=…), …], layout={…})`, from numpy arrays: plotly
validates a whole layout given to the constructor in well under a millisecond, where update_layout / add_hline /
update_xaxes each cost ~10 ms; a trace given as a dict is validated once (a go.Scatter is built, then copied by the
figure), and a pandas column costs it more than its array. The live pages rebuild a figure several times a second.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
CURVES = (("distance", "functional distance D(w, w₀)"), ("length", "path length Σ|Jθ|"),
          ("accuracy", "test accuracy"), ("loss", "test loss (cross-entropy)"))


def plain(text: object) -> str:
    """`text` as plotly shows it literally: plotly reads a subset of HTML (<a href>, <b>, <br>) in titles, legend
    entries and hover labels, so run names and notes (from run folders, uploads) have <, > and & escaped."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _figure(data: list, title: str, note: str, height: int = 420, **layout) -> go.Figure:
    # no template: streamlit applies its theme, and a template deep-copy costs ~50 ms per figure
    return go.Figure(data=data, layout=dict(title=dict(text=title, subtitle=dict(text=plain(note))), height=height,
                                            margin=dict(t=80, b=40, l=50, r=20), legend=dict(orientation="h", y=-0.15),
                                            **layout))


def _layout(fig: go.Figure, title: str, note: str, height: int = 420) -> go.Figure:
    """Title, subtitle and frame of a figure built elsewhere (update_layout: ~10 ms; the builders use _figure)."""
    fig.update_layout(title=dict(text=title, subtitle=dict(text=plain(note))), height=height,
                      margin=dict(t=80, b=40, l=50, r=20), legend=dict(orientation="h", y=-0.15))
    return fig


def empty(title: str, note: str = "no data yet") -> go.Figure:
    return _figure([], title, note, height=250)


def _runs(df: pd.DataFrame) -> list:
    return list(dict.fromkeys(df["run"])) if "run" in df.columns else [None]


def _values(d: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats (anything not a number reads NaN)."""
    v = d[col].to_numpy()
    if v.dtype.kind in "fiub":
        return v.astype(float, copy=False)
    return pd.to_numeric(d[col], errors="coerce").to_numpy(dtype=float)


def _pairs(d: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the rows where both are numbers (rows not evaluated hold NaN)."""
    xs, ys = _values(d, x), _values(d, y)
    keep = ~(np.isnan(xs) | np.isnan(ys))
    return xs[keep], ys[keep]


def _hline(y: float, text: str) -> dict:
    """A dashed horizontal line across the plot with its label at the right end (add_hline, without its cost)."""
    return {"shapes": [dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=y, y1=y,
                            line=dict(color="black", dash="dash"))],
            "annotations": [dict(text=text, xref="x domain", yref="y", x=1, y=y, showarrow=False,
                                 xanchor="right", yanchor="bottom")]}


def path_curves(df: pd.DataFrame, note: str = "", highlight: str | None = None) -> go.Figure:
    """2×2 panels against step: functional distance, path length, accuracy, loss; one trace per `run`.

    Accuracy and loss are plotted only at evaluated steps (the other rows hold NaN). `highlight` thickens one run.
    """
    if df.empty:
        return empty("Path curves", note or "no steps yet")
    data = []
    runs = _runs(df)
    names = df["run"].to_numpy() if runs != [None] else None
    for i, run in enumerate(runs):
        d = df if run is None else df[names == run]
        colour = PALETTE[i % len(PALETTE)]
        width = 4 if highlight is not None and run == highlight else 2
        for j, (col, _) in enumerate(CURVES):
            if col not in d.columns:
                continue
            x, y = _pairs(d, "step", col)
            sfx = str(j + 1) if j else ""
            data.append(dict(type="scatter", x=x, y=y, mode="lines+markers" if col in ("accuracy", "loss") else "lines",
                                   name=plain(run) if run is not None else col, legendgroup=str(run),
                                   showlegend=run is not None and j == 0, line=dict(color=colour, width=width),
                                   marker=dict(size=4), xaxis=f"x{sfx}", yaxis=f"y{sfx}"))
    return _figure(data, "Along the path", note, height=520, **grid_2x2_layout([t for _, t in CURVES]))


def has_linearity(df: pd.DataFrame) -> bool:
    """Whether rows carry the self-checking step's record (runs made before it do not)."""
    return "linearity" in df.columns and "eps" in df.columns and bool(np.isfinite(_values(df, "linearity")).any())


def linearity(df: pd.DataFrame, note: str = "") -> go.Figure:
    """Two panels against step, one trace per `run`: the measured change of the probe's outputs over the metric's
    prediction |Jθ|² (log scale; 1 = the net is linear over the step), and the trust region ε of each taken step
    (log scale), with the steps whose first tries were rejected marked ×."""
    if df.empty or not has_linearity(df):
        return empty("Linearity of the steps", note or "no checked steps yet")
    data, runs = [], _runs(df)
    names = df["run"].to_numpy() if runs != [None] else None
    for i, run in enumerate(runs):
        d = df if run is None else df[names == run]
        d = d[_values(d, "step_length") > 0] if "step_length" in d.columns else d
        colour, label = PALETTE[i % len(PALETTE)], plain(run) if run is not None else None
        x, y = _pairs(d, "step", "linearity")
        data.append(dict(type="scatter", x=x, y=y, mode="lines", name=label or "real / predicted",
                         legendgroup=str(run), showlegend=run is not None, line=dict(color=colour, width=1.5),
                         xaxis="x", yaxis="y"))
        x, y = _pairs(d, "step", "eps")
        data.append(dict(type="scatter", x=x, y=y, mode="lines", name=label or "ε", legendgroup=str(run),
                         showlegend=False, line=dict(color=colour, width=1.5, shape="hv"), xaxis="x2", yaxis="y2"))
        if "rejected" in d.columns:
            hit = d[_values(d, "rejected") > 0]
            x, y = _pairs(hit, "step", "eps")
            data.append(dict(type="scatter", x=x, y=y, mode="markers", name="rejected first", legendgroup="rejected",
                             showlegend=i == 0 and len(x) > 0, marker=dict(symbol="x", size=7, color=colour),
                             xaxis="x2", yaxis="y2"))
    layout = dict(xaxis=dict(domain=[0, 1], anchor="y", matches="x2", showticklabels=False),
                  yaxis=dict(domain=[0.55, 1], type="log", title=dict(text="real / predicted")),
                  xaxis2=dict(domain=[0, 1], anchor="y2", title=dict(text="step")),
                  yaxis2=dict(domain=[0, 0.45], type="log", title=dict(text="ε of the step")),
                  shapes=[dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=1, y1=1,
                               line=dict(color="black", dash="dash"))])
    return _figure(data, "Linearity of the steps", note, height=420, **layout)


def rejections(df: pd.DataFrame, last: int = 20) -> tuple[int, int]:
    """(steps among the last `last` taken whose first tries were rejected, how many steps that is)."""
    if "rejected" not in df.columns or "step_length" not in df.columns:
        return 0, 0
    taken = df[_values(df, "step_length") > 0].tail(last)
    return int((_values(taken, "rejected") > 0).sum()), len(taken)


def grid_2x2_layout(titles: list[str]) -> dict:
    """The layout of a 2×2 panel figure (axes x, x2, x3, x4), laid out by hand: make_subplots costs ~70 ms."""
    cols, rows = ((0, 0.45), (0.55, 1)), ((0.6, 0.93), (0, 0.4))
    layout, notes = {}, []
    for j, title in enumerate(titles):
        sfx = str(j + 1) if j else ""
        (x0, x1), (y0, y1) = cols[j % 2], rows[j // 2]
        layout[f"xaxis{sfx}"] = dict(domain=[x0, x1], anchor=f"y{sfx}", title=dict(text="step") if j >= 2 else None)
        layout[f"yaxis{sfx}"] = dict(domain=[y0, y1], anchor=f"x{sfx}")
        notes.append(dict(text=title, x=(x0 + x1) / 2, y=y1, xref="paper", yref="paper", showarrow=False,
                          xanchor="center", yanchor="bottom"))
    return dict(**layout, annotations=notes)


def grid_2x2(titles: list[str]) -> go.Figure:
    """An empty 2×2 panel figure (axes x, x2, x3, x4)."""
    return go.Figure(layout=grid_2x2_layout(titles))


def group_norm_matrix(df: pd.DataFrame, max_columns: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(norms (groups, S), steps (S,)) from the `group_norms` lists, at most `max_columns` evenly spaced steps."""
    d = df[df["group_norms"].map(lambda g: g is not None and len(g) > 0)].drop_duplicates("step", keep="last")
    if d.empty:
        return np.zeros((0, 0)), np.zeros(0, dtype=int)
    if len(d) > max_columns:
        d = d.iloc[np.unique(np.linspace(0, len(d) - 1, max_columns).round().astype(int))]
    return np.stack([np.asarray(g, dtype=float) for g in d["group_norms"]], 1), d["step"].to_numpy()


def filter_heatmap(df: pd.DataFrame, names: list[str] | None = None, note: str = "") -> go.Figure:
    """Filters × steps: each filter's norm |w_g| relative to its start; cells exactly zero marked in black."""
    if df.empty or "group_norms" not in df.columns:
        return empty("Per-filter norms", note or "no steps yet")
    M, steps = group_norm_matrix(df)
    if M.size == 0:
        return empty("Per-filter norms", note or "no group norms recorded")
    rel = M / np.where(M[:, :1] > 0, M[:, :1], 1.0)
    names = names if names is not None and len(names) == M.shape[0] else [f"group {i}" for i in range(M.shape[0])]
    zero = np.where(M == 0, 1.0, np.nan)
    data = [dict(type="heatmap", z=rel.astype(np.float32), x=steps, y=names, colorscale="Viridis", zmin=0,  # float32: half the bytes sent
                       zmax=max(1.0, float(rel.max())), colorbar=dict(title="|w_g| / |w_g(0)|"),
                       hovertemplate="%{y} step %{x}<br>relative norm %{z:.3f}<extra></extra>"),
            dict(type="heatmap", z=zero.astype(np.float32), x=steps, y=names, colorscale=[[0, "black"], [1, "black"]],
                       showscale=False, hovertemplate="%{y} step %{x}: exactly zero<extra></extra>", name="zero")]
    n_zero = int((M[:, -1] == 0).sum())
    title = f"Per-filter norms: {n_zero} of {M.shape[0]} exactly zero at step {int(steps[-1])}"
    note = f"{note}; black = exactly zero" if note else "black = exactly zero"
    return _figure(data, title, note, height=max(360, 9 * M.shape[0] + 140),
                   yaxis=dict(autorange="reversed", tickfont=dict(size=8)), xaxis=dict(title=dict(text="step")))


def candidate_table(metrics: dict[str, pd.DataFrame], meta: dict[str, dict]) -> pd.DataFrame:
    """One row per run: status, strategy, length, final distance, final accuracy, zero filters, and `shortest`
    (the smallest length among runs that arrived, or among all when none did: as experiments.shortest).
    A column a run did not record reads NaN (0 steps, 0 filters)."""
    def last(m: pd.DataFrame, col: str) -> float:
        v = m[col].dropna() if col in m.columns else ()
        return float(v.iloc[-1]) if len(v) else math.nan

    rows = []
    for run, m in metrics.items():
        info = meta.get(run, {})
        steps, zero = last(m, "step"), last(m, "groups_zero")
        rows.append({"run": run, "status": str(info.get("status", "?")),
                     "strategy": (info.get("config") or {}).get("strategy"),
                     "steps": 0 if math.isnan(steps) else int(steps), "length": last(m, "length"),
                     "final distance": last(m, "distance"), "accuracy": last(m, "accuracy"),
                     "filters at zero": 0 if math.isnan(zero) else int(zero)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table.assign(shortest=pd.Series(dtype=bool))
    arrived = table["status"].str.startswith("arrived")
    pool = table[arrived] if arrived.any() else table
    best = pool["length"].idxmin() if pool["length"].notna().any() else None
    table["shortest"] = [i == best for i in table.index]
    return table


def trajectory(emb: pd.DataFrame, color: str = "step", method: str = "PCA", note: str = "") -> go.Figure:
    """Snapshots in the joint 2-D embedding: one line per run, markers coloured by `color`, hover shows metrics."""
    if emb.empty:
        return empty(f"Trajectories ({method})", note or "no snapshots")
    data = []
    hover_cols = [c for c in ("step", "accuracy", "distance", "length", "groups_zero") if c in emb.columns]
    cmin, cmax = (float(emb[color].min()), float(emb[color].max())) if color in emb.columns else (0, 1)
    for i, run in enumerate(_runs(emb)):
        d = emb[emb["run"] == run].sort_values("step")
        custom = d[hover_cols].to_numpy()
        tmpl = "<br>".join(f"{c}: %{{customdata[{k}]:.4g}}" for k, c in enumerate(hover_cols))
        x, y = d["x"].to_numpy(), d["y"].to_numpy()
        data.append(dict(type="scatter", x=x, y=y, mode="lines+markers", name=plain(run),
                               line=dict(color=PALETTE[i % len(PALETTE)], width=1),
                               marker=dict(size=8, color=d[color].to_numpy() if color in d.columns else None,
                                           colorscale="Plasma", cmin=cmin, cmax=cmax, showscale=i == 0,
                                           colorbar=dict(title=color, x=1.02)),
                               customdata=custom, hovertemplate=f"<b>{plain(run)}</b><br>{tmpl}<extra></extra>"))
        data.append(dict(type="scatter", x=x[-1:], y=y[-1:], mode="markers", showlegend=False,
                               marker=dict(symbol="x", size=12, color=PALETTE[i % len(PALETTE)]), hoverinfo="skip"))
    return _figure(data, f"Weight trajectories, {method}, fitted jointly on {len(emb)} snapshots (× = end)", note, 560,
                   xaxis=dict(title=dict(text=f"{method} 1")), yaxis=dict(title=dict(text=f"{method} 2")))


def ellipse_xy(row: pd.Series, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Points of {θ : θᵀGθ = c} drawn with semi-axes ∝ 1/√λ, normalized so the longest is `scale`."""
    t = np.linspace(0, 2 * np.pi, 40)
    r1, r2 = 1 / np.sqrt(max(row["lam1"], 1e-12)), 1 / np.sqrt(max(row["lam2"], 1e-12))
    k = scale / max(r1, r2)
    a, b = k * r1 * np.cos(t), k * r2 * np.sin(t)
    return row["w1"] + a * row["u1x"] + b * row["u2x"], row["w2"] + a * row["u1y"] + b * row["u2y"]


def playground(contours: pd.DataFrame, ellipses: pd.DataFrame, path: pd.DataFrame, note: str = "") -> go.Figure:
    """Contours of D(w, w_start) over (w1, w2), metric ellipses at grid points (long axis = cheap direction),
    the tangent steps and the path to the sparse axis w2 = 0. The ellipses are one trace (NaN between them)."""
    w1s, w2s = np.sort(contours["w1"].unique()), np.sort(contours["w2"].unique())
    Z = contours.pivot(index="w2", columns="w1", values="distance").loc[w2s, w1s].to_numpy()
    data = [dict(type="contour", x=w1s, y=w2s, z=np.sqrt(Z), colorscale="Blues", ncontours=18, colorbar=dict(title="√D"),
                       hovertemplate="w1 %{x:.2f}, w2 %{y:.2f}<br>√D %{z:.3f}<extra></extra>", name="√D(w, w₀)")]
    spacing = float(np.diff(np.sort(ellipses["w1"].unique()))[0]) if ellipses["w1"].nunique() > 1 else 0.5
    if len(ellipses):
        xy = [ellipse_xy(row, 0.4 * spacing) for _, row in ellipses.iterrows()]
        gap = np.array([np.nan])
        data.append(dict(type="scatter", x=np.concatenate([np.concatenate([x, gap]) for x, _ in xy]),
                               y=np.concatenate([np.concatenate([y, gap]) for _, y in xy]), mode="lines",
                               line=dict(color="#555", width=1), hoverinfo="skip", name="metric ellipse (θᵀGθ = c)",
                               legendgroup="ell"))
    w1, w2 = path["w1"].to_numpy(dtype=float), path["w2"].to_numpy(dtype=float)
    data.append(dict(type="scatter", x=w1, y=w2, mode="lines+markers", name="geodesic path (tangent steps)",
                           line=dict(color="#d62728", width=2), marker=dict(size=5),
                           customdata=path[["step", "length", "distance"]].to_numpy(),
                           hovertemplate="step %{customdata[0]}<br>length %{customdata[1]:.3f}<br>D %{customdata[2]:.4f}<extra></extra>"))
    if len(path) > 1:
        d1, d2 = np.diff(w1), np.diff(w2)
        nan = np.full(len(d1), np.nan)
        data.append(dict(type="scatter", x=np.ravel(np.column_stack([w1[:-1], w1[:-1] + 3 * d1, nan])),
                               y=np.ravel(np.column_stack([w2[:-1], w2[:-1] + 3 * d2, nan])),
                               mode="lines", line=dict(color="#ff7f0e", width=1), name="tangent θ (×3)", hoverinfo="skip"))
    data.append(dict(type="scatter", x=w1[:1], y=w2[:1], mode="markers", name="start w₀",
                           marker=dict(size=12, color="#2ca02c", symbol="star")))
    return _figure(data, "Two-weight landscape: f(x, w) = tanh(w1·x + w2·x²)", note, height=620,
                   xaxis=dict(title=dict(text="w1"), range=[w1s[0], w1s[-1]]),
                   yaxis=dict(title=dict(text="w2"), range=[w2s[0], w2s[-1]], scaleanchor="x", scaleratio=1),
                   **_hline(0, "sparse axis w2 = 0"))


def race(df: pd.DataFrame, x: str = "step", before: float | None = None, note: str = "") -> go.Figure:
    """Accuracy of each recovery method against `x` ("step", "seconds" or "grad_evals"); the pre-damage accuracy dashed."""
    if df.empty:
        return empty("Recovery race", note or "no steps yet")
    data = []
    for i, (method, d) in enumerate(df.groupby("method", sort=False)):
        data.append(dict(type="scatter", x=_values(d, x), y=_values(d, "accuracy"), mode="lines+markers" if len(d) > 1 else "markers",
                               name=str(method), line=dict(color=PALETTE[i % len(PALETTE)]),
                               marker=dict(size=9 if len(d) == 1 else 5)))
    xtitle = {"seconds": "wall seconds (steps only)", "grad_evals": "per-image gradient evaluations"}.get(x, "step")
    return _figure(data, "Recovery after damage: " + " vs ".join(map(str, df["method"].unique())), note,
                   xaxis=dict(title=dict(text=xtitle)), yaxis=dict(title=dict(text="test accuracy")),
                   **(_hline(before, f"before damage {before:.3f}") if before is not None else {}))


def two_tasks(df: pd.DataFrame, names: tuple[str, str], note: str = "") -> go.Figure:
    """Accuracy on task A (the metric's data) and task B (the learned task) along the path."""
    if df.empty:
        return empty("Two tasks", note or "no steps yet")
    d = df.dropna(subset=["accuracy"])
    if "phase" in d.columns:
        d = d[d["phase"] == "walk"]
    steps = _values(d, "step")
    data = [dict(type="scatter", x=steps, y=_values(d, "accuracy"), mode="lines+markers", name=f"task A: {names[0]} (kept)")]
    if "accuracy_b" in d.columns:
        data.append(dict(type="scatter", x=steps, y=_values(d, "accuracy_b"), mode="lines+markers",
                               name=f"task B: {names[1]} (learned)"))
    return _figure(data, "Two tasks along the walk", note, xaxis=dict(title=dict(text="step")),
                   yaxis=dict(title=dict(text="test accuracy"), range=[0, 1]))


PHASE_NAMES = {"walk": "geodesic walk", "line": "straight line A→B (weight averaging)", "relax-path": "relaxed path A→B",
               "finetune": "fine-tune A on B"}


def two_task_plane(df: pd.DataFrame, names: tuple[str, str], note: str = "") -> go.Figure:
    """Each method's points in the plane (accuracy on A, accuracy on B), in order along its path or training;
    a net good on both tasks sits in the top-right corner. Start and end of each trace are marked."""
    if df.empty or "phase" not in df.columns:
        return empty("Both tasks at once", note or "no points yet")
    d = df.dropna(subset=["accuracy", "accuracy_b"])
    data = []
    for i, (phase, g) in enumerate((p, g) for p, g in d.groupby("phase", sort=False) if p in PHASE_NAMES):
        color = PALETTE[i % len(PALETTE)]
        sizes = [11 if j in (0, len(g) - 1) else 5 for j in range(len(g))]
        data.append(dict(type="scatter", x=_values(g, "accuracy"), y=_values(g, "accuracy_b"), mode="lines+markers",
                               name=PHASE_NAMES[phase], line=dict(color=color), marker=dict(size=sizes),
                               customdata=g["step"].to_numpy(),
                               hovertemplate="step %{customdata}<br>A %{x:.4f}<br>B %{y:.4f}<extra></extra>"))
    return _figure(data, "Both tasks at once: each method's path", note,
                   xaxis=dict(title=dict(text=f"accuracy on task A: {names[0]}"), range=[0, 1.02]),
                   yaxis=dict(title=dict(text=f"accuracy on task B: {names[1]}"), range=[0, 1.02]))


# --- task sequences ----------------------------------------------------------------------------------------


def sequence_matrix(rows: pd.DataFrame) -> np.ndarray:
    """R (learned, T) of one sequence run from its rows (geodesic.experiments.sequence.run_sequence: a row per task
    learned with acc.<j>); rows of tasks not learned yet are left out."""
    cols = sorted((c for c in rows.columns if str(c).startswith("acc.")), key=lambda c: int(str(c)[4:]))
    learned = rows[_values(rows, "task") >= 0] if "task" in rows.columns else rows.iloc[:0]
    return learned[cols].to_numpy(dtype=float) if cols else np.zeros((0, 0))


def accuracy_matrix(rows: pd.DataFrame, names: list[str], method: str, note: str = "") -> go.Figure:
    """The accuracy matrix R[i, j] (accuracy on task j after learning task i) of one method as a heatmap; the
    rows fill in as tasks are learned."""
    R = sequence_matrix(rows)
    T = len(names)
    full = np.full((T, T), np.nan)
    full[:R.shape[0], :R.shape[1]] = R[:, :T]
    text = [["" if math.isnan(v) else f"{v:.2f}" for v in r] for r in full]
    after = [f"after {plain(n)}" for n in names]
    data = [dict(type="heatmap", z=full, x=[plain(n) for n in names], y=after, text=text, texttemplate="%{text}",
                 zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="accuracy"),
                 hovertemplate="%{y}, on %{x}: %{z:.4f}<extra></extra>")]
    return _figure(data, f"Accuracy matrix: {plain(method)}", note, height=360,
                   yaxis=dict(autorange="reversed", title="learned so far"), xaxis=dict(title="test set of task"))


def task_curves(rows: pd.DataFrame, names: list[str], method: str, note: str = "") -> go.Figure:
    """Accuracy on each task (one line each) against the number of tasks learned: a line that falls after its own
    task is forgetting."""
    R = sequence_matrix(rows)
    b = rows[_values(rows, "task") < 0] if "task" in rows.columns else rows.iloc[:0]
    start = b[[f"acc.{j}" for j in range(R.shape[1])]].to_numpy(dtype=float)[:1] if len(b) and R.size else None
    full = np.vstack([start, R]) if start is not None else R
    x = np.arange(len(full)) if start is not None else np.arange(1, len(full) + 1)
    data = [dict(type="scatter", mode="lines+markers", x=x, y=full[:, j], name=plain(names[j]),
                 line=dict(color=PALETTE[j % len(PALETTE)])) for j in range(min(full.shape[1], len(names)))]
    return _figure(data, f"Accuracy on each task as tasks are learned: {plain(method)}", note, height=360,
                   xaxis=dict(title="tasks learned", dtick=1), yaxis=dict(title="test accuracy", range=[0, 1.02]))


def sequence_scores(table: pd.DataFrame, note: str = "") -> go.Figure:
    """ACC (bars) and BWT (markers) per method: one row per method of `table` (method, ACC, BWT)."""
    methods = [plain(m) for m in table["method"]]
    data = [dict(type="bar", x=methods, y=_values(table, "ACC"), name="ACC (mean accuracy after the last task)",
                 marker=dict(color=PALETTE[0])),
            dict(type="scatter", mode="markers", x=methods, y=_values(table, "BWT"), name="BWT (< 0: forgetting)",
                 marker=dict(color=PALETTE[1], size=11, symbol="diamond"))]
    return _figure(data, "ACC and BWT per method", note, height=360, yaxis=dict(title="accuracy", range=[-1, 1]))
