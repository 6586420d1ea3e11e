"""Candidate paths: several walks to the same number of zero filters; overlay, compare, pick the shortest."""

import pandas as pd
import streamlit as st

from app import figures, state
from geodesic import jobs

st.title("Candidate paths to the same sparsity")
st.markdown(
    "**Paper's recipe:** many paths lead to a sparse net (which filters, β, ε, seed); measure each path's length "
    "and pick the shortest. Candidates here vary the filter choice (norm, importance, balanced, random), then the seed."
)

state.engine_ready()  # the intro paints first on a fresh server; then torch and the engine load
from geodesic.experiments import SparsifyConfig  # noqa: E402
from geodesic.path import PathConfig  # noqa: E402
from geodesic.runs import load_run  # noqa: E402

with st.expander("Run new candidates", expanded=not state.runs()):
    picked = state.checkpoint_picker("cand")
    if picked is not None:
        path, model_name, card = picked
        n_groups = len(state.group_names(model_name))
        c = st.columns(4)
        count = c[0].slider("Candidates", 2, 8, 4)
        filters = c[1].slider("Filters to zero", 1, n_groups, min(n_groups - 2, 50 if n_groups == 60 else 8), key="cand-f")
        beta = c[2].number_input("β", 1e-5, 10.0, 0.01, format="%.4g", key="cand-b")
        eps = c[3].number_input("ε", 1e-6, 1.0, 0.01, format="%.4g", key="cand-e")
        c = st.columns(4)
        max_steps = c[0].number_input("Max steps", 1, 5000, 150, key="cand-s")
        pull = c[1].number_input("Pull ρ", 0.0, 10.0, 0.0, key="cand-p")
        probe = c[2].number_input("Probe batch B", 1, 256, 32, key="cand-B")
        eval_size = c[3].number_input("Test images", 100, 2000, 500, step=100, key="cand-n")
        if st.button("Start candidates", type="primary", key="cand-start"):
            base = SparsifyConfig(filters=int(filters), pull=float(pull),
                                  path=PathConfig(beta=float(beta), eps=float(eps), probe=int(probe),
                                                  max_steps=int(max_steps))).validate()
            job = state.registry().start("candidates", jobs.candidates_job(path, base, int(count), card["dataset"],
                                                                            eval_size=int(eval_size)),
                                         {"model": model_name, "dataset": card["dataset"]})
            st.session_state["cand-job"] = job.id

job = state.pick_job("candidates", "cand-job")
if job is not None:
    def progress(job, df):
        st.caption(f"candidate group `{job.info.get('group', '…')}`: runs appear below as they are written")
    state.live(job, progress)

sparsify_runs = [r for r in state.runs() if r.meta.get("kind") == "sparsify"]
groups = sorted({r.meta["group"] for r in sparsify_runs if r.meta.get("group")}, reverse=True)
mode = st.radio("Compare", ["a candidate group", "runs I pick"], horizontal=True,
                index=0 if groups else 1)
if mode == "a candidate group" and groups:
    default = job.info.get("group") if job is not None and job.info.get("group") in groups else groups[0]
    group = st.selectbox("Group", groups, index=groups.index(default))
    chosen = [r for r in sparsify_runs if r.meta.get("group") == group]
else:
    ids = [r.id for r in sparsify_runs]
    sel = st.multiselect("Runs", ids, default=ids[:3])
    chosen = [r for r in sparsify_runs if r.id in sel]

if not chosen:
    st.info("No sparsify runs to compare yet.")
else:
    chosen = [load_run(r.dir) for r in chosen]  # fresh read: candidates may still be writing
    metrics = {r.id: r.metrics for r in chosen if len(r.metrics)}
    table = figures.candidate_table(metrics, {r.id: r.meta for r in chosen})
    best = table.loc[table["shortest"], "run"].iloc[0] if table["shortest"].any() else None
    if best is not None:
        row = table[table["run"] == best].iloc[0]
        st.success(f"Shortest: **{best}** ({row['strategy']}), length {row['length']:.4f}, "
                   f"final D {row['final distance']:.4g}, accuracy {row['accuracy']:.4f}, status {row['status']}")
    st.dataframe(table.style.apply(lambda r: ["background-color: #d4f7d4" if r["shortest"] else "" for _ in r], axis=1),
                 hide_index=True)
    df = pd.concat([m.assign(run=k) for k, m in metrics.items()], ignore_index=True) if metrics else None
    models_ = {r.meta.get("model") for r in chosen}
    n_eval = {r.meta.get("eval_images") for r in chosen}
    note = (f"{', '.join(map(str, models_))} on {', '.join({str(r.meta.get('dataset')) for r in chosen})}; "
            f"accuracy on {', '.join(map(str, n_eval))} test images; {len(chosen)} paths (thick = shortest)")
    if df is not None:
        st.plotly_chart(figures.path_curves(df, note, highlight=best), key="cand-curves")
