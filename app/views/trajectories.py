"""Trajectories: the weight snapshots of one or more runs in one joint 2-D embedding (PCA or UMAP)."""

import streamlit as st

from app import engine, page, run_folders
from geodesic.store import runs


@st.cache_resource(show_spinner=False)
def umap_warmer():
    """Compile UMAP's kernels once per server, when UMAP is first asked for (not on opening the page: numba's
    compilation holds the GIL for tens of seconds, and every page of the server would wait behind it)."""
    from geodesic.experiments import embed

    return embed.warm_umap()


st.title("Weight trajectories")
st.markdown("Every k-th weight vector of each run (its snapshots), embedded **jointly** so that paths can be "
            "compared in one picture. PCA is exact and fast; UMAP keeps local neighbourhoods (first call compiles).")

folders = run_folders.list_runs()  # torch- and pandas-free: the controls draw while the engine loads; the examples last
with_snaps, snapshot_problems = [], []
for f in folders:
    if f.has_snapshots():
        why = runs.snapshot_problem(f.run)  # header checks only: a damaged file costs one line, not the page
        if why:
            snapshot_problems.append(f"{f.label}: {why}")
        else:
            with_snaps.append(f)
if not with_snaps:
    run_folders.show_problems(snapshot_problems + run_folders.scan_runs()[1])
    st.info("No run with snapshots yet: start one on the Sparsify page.")
    st.stop()
by_model: dict[str, list] = {}
for f in with_snaps:
    by_model.setdefault(str(f.meta.get("model")), []).append(f)
c = st.columns([1, 3])
model = c[0].selectbox("Architecture", list(by_model))
labels = [f.label for f in by_model[model]]  # a user's folder by its name, an example as "example · <title>"
chosen = c[1].multiselect("Runs", labels, default=labels[:3])
c = st.columns(3)
method = c[0].radio("Method", ["PCA", "UMAP"], horizontal=True)
color = c[1].radio("Colour by", ["step", "accuracy", "distance"], horizontal=True)
seed = c[2].number_input("UMAP seed", 0, 1000, 0)


def embedded() -> None:
    """The chosen runs' snapshots in one joint embedding (PCA, or UMAP on request)."""
    from app import figures  # after the controls: it loads pandas, the slowest import of a fresh server

    readable, problems = run_folders.scan_runs()  # the folders that cannot be read at all, named once each
    run_folders.show_problems(snapshot_problems + problems)
    readable = {f.key for f in readable}
    if not chosen:
        st.info("Pick at least one run.")
        return
    # the engine names each run's points by meta["id"]: of several folders with one id (copies), embed the first
    picked, ids = [], {}
    for f in by_model[model]:
        if f.label not in chosen or f.key not in readable:
            continue
        ident = str(f.meta.get("id", f.name))
        if ident in ids:
            st.warning(page.md(f"{f.label} has the same id as {ids[ident]} (a copy?): shown once"))
            continue
        ids[ident] = f.label
        picked.append(f)
    if not picked:
        return
    dirs = [f.dir for f in picked]
    engine.await_engine(hurry=False)  # the embedding needs torch; the controls above are usable meanwhile
    from geodesic.experiments import (
        embed,  # embed_runs keeps its embeddings per folder, snapshot files, method and seed
    )

    try:
        if method == "UMAP":
            warmer = umap_warmer()
            with st.status("Fitting UMAP on the snapshots…", expanded=False) as status:
                if warmer.is_alive():
                    status.update(label="Waiting for UMAP's first-call compilation (about 20 s, once per server)…")
                    warmer.join()
                status.update(label="Fitting UMAP…")
                emb = embed.embed_runs(dirs, "umap", int(seed))
                status.update(label=f"UMAP done: {len(emb)} snapshots", state="complete")
        else:
            emb = embed.embed_runs(dirs, "pca")
    except (ValueError, OSError, KeyError) as e:  # a folder changed or broke since it was checked above
        st.warning(page.md(f"cannot embed these runs: {e}"))
        return
    note = (f"{len(emb)} snapshots of {len(dirs)} {model} runs; colour: {color} "
            f"(accuracy carried from the last evaluated step, on each run's test images)")
    key = ("trajectories", tuple((str(f.dir), run_folders.folder_stamp(f)) for f in picked), method, int(seed), color, note)
    st.plotly_chart(run_folders.saved_figure(key, lambda: figures.trajectory(emb, color, method, note)), key="traj")


page.after_paint(embedded, "Embedding the snapshots…")
