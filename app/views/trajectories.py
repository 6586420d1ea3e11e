"""Trajectories: the weight snapshots of one or more runs in one joint 2-D embedding (PCA or UMAP)."""

import streamlit as st

from app import figures, state


@st.cache_resource
def umap_warmer():
    """Compile UMAP's kernels once per server, in the background, when this page is first opened."""
    return embed.warm_umap()


st.title("Weight trajectories")
st.markdown("Every k-th weight vector of each run (its snapshots), embedded **jointly** so that paths can be "
            "compared in one picture. PCA is exact and fast; UMAP keeps local neighbourhoods (first call compiles).")

state.engine_ready()  # the intro paints first on a fresh server; then torch and the engine load
from geodesic import embed  # noqa: E402
warmer = umap_warmer()

with_snaps = [r for r in state.runs() if (r.dir / "snapshots.safetensors").is_file()]
if not with_snaps:
    st.info("No run with snapshots yet: start one on the Sparsify page.")
    st.stop()
by_model: dict[str, list] = {}
for r in with_snaps:
    by_model.setdefault(str(r.meta.get("model")), []).append(r)
c = st.columns([1, 3])
model = c[0].selectbox("Architecture", list(by_model))
ids = [r.id for r in by_model[model]]
chosen = c[1].multiselect("Runs", ids, default=ids[:3])
c = st.columns(3)
method = c[0].radio("Method", ["PCA", "UMAP"], horizontal=True)
color = c[1].radio("Colour by", ["step", "accuracy", "distance"], horizontal=True)
seed = c[2].number_input("UMAP seed", 0, 1000, 0)

if chosen:
    dirs = [r.dir for r in by_model[model] if r.id in chosen]
    if method == "UMAP":
        with st.status("Fitting UMAP on the snapshots…", expanded=False) as status:
            if warmer.is_alive():
                status.update(label="Waiting for UMAP's first-call compilation (about 20 s, once per server)…")
                warmer.join()
            status.update(label="Fitting UMAP…")
            emb = embed.embed_runs(dirs, "umap", int(seed))
            status.update(label=f"UMAP done: {len(emb)} snapshots", state="complete")
    else:
        emb = embed.embed_runs(dirs, "pca")
    note = (f"{len(emb)} snapshots of {len(dirs)} {model} runs; colour: {color} "
            f"(accuracy carried from the last evaluated step, on each run's test images)")
    st.plotly_chart(figures.trajectory(emb, color, method, note), key="traj")
else:
    st.info("Pick at least one run.")
