"""Runs: every run folder on disk; reopen, compare, export, delete."""

import io

import pandas as pd
import streamlit as st

from app import figures, state


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


st.title("Runs on disk")
st.caption(f"Run folders under `{state.runs_root()}` (written by the app, the CLI and the benchmarks alike).")

state.engine_ready()  # the intro paints first on a fresh server; then torch and the engine load
from geodesic.runs import delete_run  # noqa: E402
all_runs = state.runs()
if not all_runs:
    st.info("No runs yet.")
    st.stop()

table = pd.DataFrame([{
    "run": r.id, "kind": r.meta.get("kind"), "model": r.meta.get("model"), "dataset": r.meta.get("dataset"),
    "status": r.meta.get("status"), "steps": int(r.metrics["step"].max()) if len(r.metrics) else 0,
    "accuracy": (r.meta.get("summary") or {}).get("accuracy"), "length": (r.meta.get("summary") or {}).get("length"),
    "created": r.meta.get("created")} for r in all_runs])
st.dataframe(table, hide_index=True)

ids = [r.id for r in all_runs]
chosen = st.multiselect("Open / compare", ids, default=ids[:1])
sel = [r for r in all_runs if r.id in chosen]
if sel:
    frames = [r.metrics.assign(run=r.id) for r in sel if len(r.metrics)]
    if frames:
        df = pd.concat(frames, ignore_index=True)
        note = "; ".join(f"{r.id}: {r.meta.get('model')} on {r.meta.get('dataset')}, {r.meta.get('eval_images', '?')} test images"
                         for r in sel)
        st.plotly_chart(figures.path_curves(df, note), key="runs-curves")
    for r in sel:
        with st.expander(f"{r.id}: {r.meta.get('status')}", expanded=len(sel) == 1):
            if len(sel) == 1 and "group_norms" in r.metrics.columns:
                st.plotly_chart(figures.filter_heatmap(r.metrics, None, f"{r.meta.get('model')}, run {r.id}"),
                                key=f"runs-heat-{r.id}")
            st.json(r.meta, expanded=False)
            c = st.columns(5)
            c[0].download_button("metrics.csv", lambda r=r: r.metrics.to_csv(index=False), f"{r.id}-metrics.csv",
                                 "text/csv", key=f"csv-{r.id}", on_click="ignore")
            c[1].download_button("metrics.parquet", lambda r=r: parquet_bytes(r.metrics), f"{r.id}-metrics.parquet",
                                 key=f"pq-{r.id}", on_click="ignore")
            for i, name in enumerate(("final.safetensors", "snapshots.safetensors")):
                p = r.dir / name
                if p.is_file():  # read only when clicked: snapshot files reach tens of MB
                    c[2 + i].download_button(name, lambda p=p: p.read_bytes(), f"{r.id}-{name}", key=f"{name}-{r.id}",
                                             on_click="ignore")
            busy = str(r.dir) in state.active_dirs()
            confirm = c[4].checkbox("confirm delete", key=f"confirm-{r.id}", disabled=busy,
                                    help="a running job's folder cannot be deleted" if busy else None)
            if c[4].button("Delete", key=f"del-{r.id}", disabled=busy or not confirm):
                delete_run(r)
                st.toast(f"deleted {r.id}")
                st.rerun()
