"""Sweeps: the sparsity–accuracy front of every method, updated as cells finish; a point opens its runs."""

from pathlib import Path

import streamlit as st

from app import jobs, page
from geodesic.infra.lifecycle import Status

st.title("Sweeps: accuracy against sparsity, per method")
st.markdown(
    "A sweep runs every cell (method × sparsity × seed × training images) with **the same CPU budget** on one "
    "thread, as Ray tasks: `geodesic sweep --checkpoint CKPT --filters 30,40,50 --seeds 0,1,2 --seconds 120 "
    "--out runs/sweeps/NAME` (add `--address HOST:PORT` for a cluster). Methods: **geodesic** (the recommended "
    "path), **magnitude** pruning alone, magnitude + **finetune** on labels, magnitude + **distill** toward the "
    "dense outputs (no labels), and **fip**, the authors' published method (no labels); each also as a "
    "**+recal** variant (`--methods magnitude+recal,…`, drawn dashed), whose BatchNorm statistics are re-estimated "
    "on unlabeled training images before scoring. Every net is scored with its zeroed groups exactly zero, on the "
    "test set.")

def sweep_folders() -> dict[str, Path]:
    """Sweeps under the runs folder (and its sweeps/), newest first, then the shipped examples
    (assets/gallery/sweeps) by name (file times differ from clone to clone), by the name the picker shows."""
    from geodesic.experiments.sweep import find_sweeps
    from geodesic.store.runs import gallery_root

    root, gallery = jobs.runs_root(), gallery_root() / "sweeps"
    mine = {str(p.relative_to(root)): p for r in (root, root / "sweeps") for p in find_sweeps(r)}
    return mine | {f"example · {p.name}": p for p in sorted(find_sweeps(gallery), key=lambda p: p.name)}


found = sweep_folders()
c = st.columns([3, 2])
names = list(found)
picked = c[0].selectbox("Sweep", names, key="sw-pick") if names else None
typed = c[1].text_input("…or a sweep folder", key="sw-path", placeholder="path/to/sweep")
folder = Path(typed).expanduser() if typed else (found[picked] if picked else None)
if folder is None:
    st.info("No sweep yet: run `geodesic sweep … --out runs/sweeps/NAME` and it appears here as cells finish.")
    st.stop()

import pandas as pd  # noqa: E402 — after the controls

from app import figures, sweep_figures  # noqa: E402
from geodesic.experiments import fronts  # noqa: E402


@st.cache_data(max_entries=16, show_spinner=False)
def results(path: str, version: tuple) -> pd.DataFrame:
    """The table, cached per `version` (its files' modification times: a finished cell makes a new one)."""
    return fronts.read_results(path)


def cells_of(table: pd.DataFrame, method: str, x: str, value: float) -> pd.DataFrame:
    return table[(table["method"] == method) & (table[x].astype(float) == float(value))]


def open_cells(table: pd.DataFrame, sel: tuple[str, str, float]) -> None:
    """The cells behind a point of the front: their rows, and the curves of their run folders when present."""
    method, x, value = sel
    part = cells_of(table, method, x, value)
    st.subheader(f"{page.md(method)} at {x} {value:g}: {len(part)} cells")
    st.dataframe(part[["cell", "seed", "data", "accuracy", "loss", "distance", "seconds", "steps", "length",
                       "status", "error"]], hide_index=True)
    from geodesic.store.runs import load_run

    frames, unreadable, present = [], [], 0
    for cell in part["cell"]:
        d = folder / "cells" / str(cell)
        if not d.is_dir():
            continue
        present += 1
        try:
            run = load_run(d, readonly=True)
        except (OSError, ValueError) as e:
            unreadable.append(f"{cell}: {e}")
            continue
        if len(run.metrics):
            frames.append(run.metrics.assign(run=str(cell)))
    if frames:
        df = pd.concat(frames, ignore_index=True)
        st.plotly_chart(figures.path_curves(df, f"the run folders of {len(frames)} cells"), key="sw-cell-curves")
    for line in unreadable[:6]:
        st.warning(page.md(f"cannot read the run folder of {line}"), icon=":material/folder_off:")
    if not present:
        st.caption("No run folders beside this table (a shipped example keeps its results only).")


DRAWN = "sw-drawn"  # session_state: (folder, fronts.version) of the table the page last drew


@st.fragment(run_every=5)
def watch() -> None:
    """Every 5 s, a look at the table's modification time; the page is drawn again only when it changed (a cell
    finished). Redrawing the charts every 5 s instead held back every other tab of this server."""
    drawn = st.session_state.get(DRAWN)
    if drawn is not None and drawn[0] == str(folder) and drawn[1] != fronts.version(folder):
        st.rerun()


def show() -> None:
    st.session_state[DRAWN] = (str(folder), fronts.version(folder))
    try:
        table = results(str(folder), st.session_state[DRAWN][1])
    except (OSError, ValueError) as e:
        st.warning(page.md(f"{folder}: {e}"))
        return
    if table.attrs.get("unreadable"):
        st.warning(page.md(f"{folder}: {table.attrs['unreadable']} rows of the results table left out (their "
                            "method, filters or data is not readable)"))
    if table.attrs.get("not_numbers"):
        cols = ", ".join(f"{c} ({n} rows)" for c, n in table.attrs["not_numbers"].items())
        st.warning(page.md(f"{folder}: values of the results table that are not numbers read as missing: {cols}"))
    if table.empty:
        st.info("No cell has finished yet.")
        return
    done, failed = fronts.ok(table), table[table["status"] == Status.ERROR]
    st.caption(f"{page.md(folder)}: {len(table)} cells finished, {len(failed)} failed; drawn again when a cell finishes. "
               f"CPU seconds per cell: {done['seconds'].max():.0f} at most.")
    budgets = sorted(table["data"].unique())
    data = st.radio("Training images per cell", budgets, horizontal=True, key="sw-data",
                    format_func=lambda d: "the whole split" if d == 0 else f"{d:,}") if len(budgets) > 1 else budgets[0]
    part = table[table["data"] == data]
    x = "fraction" if part["filters"].nunique() < part["fraction"].nunique() else "filters"
    stats = fronts.front(part, ("method", x))
    event = st.plotly_chart(sweep_figures.front(stats, x, f"{len(fronts.ok(part))} cells; click a point to open its "
                                                          "cells"), key="sw-front", on_select="rerun",
                            selection_mode="points")
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    if points:
        method, value = points[0]["customdata"]
        open_cells(part, (method, x, float(value)))
    best = fronts.winners(part)
    if len(best):
        st.dataframe(best.rename(columns={"margin": "ahead of the next by"}), hide_index=True)
    c = st.columns(2)
    if len(budgets) > 1:
        c[0].plotly_chart(sweep_figures.data_budgets(fronts.front(table, ("method", "data")),
                                                     "labels: finetune only"), key="sw-data-fig")
    rec = fronts.recipe(part)
    geo = fronts.ok(part)
    geo = geo[(geo["method"] == "geodesic") & geo["length"].notna()]
    if len(geo):
        c[1].plotly_chart(sweep_figures.recipe(geo, "geodesic cells, one path per seed"), key="sw-recipe")
        if len(rec):
            c[1].dataframe(rec, hide_index=True)
    if len(failed):
        with st.expander(f"{len(failed)} failed cells"):
            st.dataframe(failed[["cell", "error"]], hide_index=True)


page.after_paint(show, "Reading the sweep…")  # the picker first, usable before the charts arrive
watch()
