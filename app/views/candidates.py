"""Candidate paths: several walks to the same number of zero filters; overlay, compare, pick the shortest."""

import streamlit as st

from app import choices, engine, job_panel, page, picker, run_folders

st.title("Candidate paths to the same sparsity")
st.markdown(
    "**Paper's recipe:** many paths lead to a sparse net (which filters, β, ε, seed); measure each path's length "
    "and pick the shortest. Candidates here vary the filter choice (norm, importance, balanced, random), then the seed."
)

with st.expander("Run new candidates", expanded=not run_folders.any_runs()):  # drawn without torch or pandas
    picked = picker.checkpoint_picker("cand")
    if picked is not None:
        path, model_name, card = picked
        n_groups = len(choices.group_names(model_name, card))
        c = st.columns(4)
        count = c[0].slider("Candidates", 2, 8, 4)
        filters = choices.count_slider(c[1], "Filters to zero", n_groups, min(n_groups - 2, 50 if n_groups == 60 else 8),
                                     key="cand-f")
        beta = c[2].number_input("β", 1e-5, 10.0, 0.01, format="%.4g", key="cand-b")
        eps = c[3].number_input("ε", 1e-6, 1.0, 0.01, format="%.4g", key="cand-e")
        c = st.columns(4)
        max_steps = c[0].number_input("Max steps", 1, 5000, 150, key="cand-s")
        pull = c[1].number_input("Pull ρ", 0.0, 10.0, 0.0, key="cand-p")
        probe = c[2].number_input("Probe batch B", 1, 256, 32, key="cand-B")
        eval_size = c[3].number_input("Test images", 100, 2000, 500, step=100, key="cand-n")
        if engine.start_button("Start candidates", "cand-start"):  # waits for the engine if it is still loading
            from dataclasses import replace

            from app import jobs
            from geodesic.core.path import PathConfig
            from geodesic.experiments.sparsify import PRESETS

            try:  # the literal algorithm, varied per candidate (experiments.candidate_configs)
                base = replace(PRESETS["literal"], filters=int(filters), pull=float(pull),
                               path=PathConfig(beta=float(beta), eps=float(eps), probe=int(probe),
                                               max_steps=int(max_steps))).validate()
            except ValueError as e:
                st.error(page.md(e))
            else:
                source = jobs.Source(path, card["dataset"], eval_size=int(eval_size), arch=card.get("arch"))
                job = job_panel.registry().start("candidates", jobs.candidates_job(source, base, int(count)),
                                             {"model": model_name, "dataset": card["dataset"]})
                st.session_state["cand-job"] = job.id

job = job_panel.pick_job("candidates", "cand-job")
if job is not None:
    def progress(job, df):
        st.caption(f"candidate group {page.md(job.info.get('group', '…'))}: runs appear below as they are written")
    job_panel.live(job, progress)


def group_of(f: run_folders.Folder) -> str:
    """The candidate group as the picker shows it (a shipped example's as "example · <group>")."""
    return f"example · {f.meta['group']}" if f.readonly else str(f.meta["group"])


def compare() -> None:
    """Saved candidate runs: a group, or runs picked by hand; their table, the shortest, their curves."""
    import pandas as pd  # after the controls: pandas is the slowest import of a fresh server's first page

    from app import figures

    folders, problems = run_folders.scan_runs()
    run_folders.show_problems(problems)
    sparsify_runs = [f for f in folders if f.meta.get("kind") == "sparsify"]
    grouped = [f for f in sparsify_runs if f.meta.get("group")]
    groups = sorted({group_of(f) for f in grouped if not f.readonly}, reverse=True)
    groups += sorted({group_of(f) for f in grouped if f.readonly} - set(groups))  # the user's first, then the examples
    mode = st.radio("Compare", ["a candidate group", "runs I pick"], horizontal=True, index=0 if groups else 1)
    if mode == "a candidate group" and groups:
        current = str(job.info.get("group")) if job is not None else None
        group = st.selectbox("Group", groups, index=groups.index(current) if current in groups else 0)
        chosen = [f for f in grouped if group_of(f) == group]
    else:
        labels = [f.label for f in sparsify_runs]  # a user's folder by its name, an example as "example · <title>"
        sel = st.multiselect("Runs", labels, default=labels[:3])
        chosen = [f for f in sparsify_runs if f.label in sel]

    now = []
    for f in chosen:  # as on disk now: candidates may still be writing (read again only when a file changed)
        try:
            now.append(run_folders.fresh(f))
        except (ValueError, OSError) as e:
            run_folders.show_problems([f"{f.label}: {e}"])
    if not now:
        st.info("No sparsify runs to compare yet.")
        return
    metrics = {f.label: f.metrics for f in now if len(f.metrics)}
    table = figures.candidate_table(metrics, {f.label: {**f.meta, "status": f.status.value} for f in now})
    best = table.loc[table["shortest"], "run"].iloc[0] if table["shortest"].any() else None
    if best is not None:
        row = table[table["run"] == best].iloc[0]
        st.success(f"Shortest: **{page.md(best)}** ({page.md(row['strategy'])}), length {row['length']:.4f}, "
                   f"final D {row['final distance']:.4g}, accuracy {row['accuracy']:.4f}, status {page.md(row['status'])}")
    st.dataframe(table.style.apply(lambda r: ["background-color: #d4f7d4" if r["shortest"] else "" for _ in r], axis=1),
                 hide_index=True)
    if not metrics:
        return
    models_ = {str(f.meta.get("model")) for f in now}
    n_eval = {str(f.meta.get("eval_images")) for f in now}
    note = (f"{', '.join(sorted(models_))} on {', '.join(sorted({str(f.meta.get('dataset')) for f in now}))}; "
            f"accuracy on {', '.join(sorted(n_eval))} test images; {len(now)} paths (thick = shortest)")

    def curves():
        return figures.path_curves(pd.concat([m.assign(run=k) for k, m in metrics.items()], ignore_index=True),
                                   note, highlight=best)

    key = ("candidates", tuple((f.label, run_folders.folder_stamp(f)) for f in now), note, best)
    st.plotly_chart(run_folders.saved_figure(key, curves), key="cand-curves")


page.after_paint(compare, "Reading the saved runs…")
