"""Sparsify: walk a trained net along tangent steps until whole filters are exactly zero, live."""

from dataclasses import replace

import numpy as np
import streamlit as st

from app import choices, engine, job_panel, page, picker

st.title("Sparsify a net along a geodesic")
st.markdown(
    "**Paper's claim:** stepping along short paths of the functional metric toward the hyperplane "
    "{w_T = 0} zeroes whole filters while the network's function (and accuracy) changes little. "
    "The curves below are what *this* run measures; compare its final accuracy with the checkpoint's card."
)

picked = picker.checkpoint_picker("sp", allow_upload=True)
if picked is not None:  # every widget from torch-free tables (app/choices.py); the engine loads meanwhile
    path, model_name, card = picked
    names = choices.group_names(model_name, card)
    presets = list(choices.PRESETS)
    preset = st.radio("Start from", presets, horizontal=True, key="sp-preset",
                      help="fills in the settings below: the literal algorithm of the paper, or the setting that "
                           "bench/bench_sparsify.py measured best on lenet60 (experiments.recommended)")
    base, k = choices.PRESETS[preset], f"sp-{presets.index(preset)}"  # a new key per preset: its values show
    c = st.columns(4)
    datasets = list(choices.DATASETS)
    dataset = c[0].selectbox("Dataset (metric + evaluation)", datasets,
                             index=datasets.index(card["dataset"]) if card.get("dataset") in datasets else 0)
    filters = choices.count_slider(c[1], "Filters to zero", len(names), min(len(names) - 2, 50 if len(names) == 60 else 8),
                                 help=page.md(f"{model_name} has {len(names)} prunable groups"))
    strategy = c[2].selectbox("Which filters", choices.STRATEGIES, index=choices.STRATEGIES.index(base["strategy"]),
                              key=f"{k}-strategy")
    phi = c[3].selectbox("Output map φ", choices.OUTPUT_MAPS, index=choices.OUTPUT_MAPS.index(base["phi"]), key=f"{k}-phi")
    c = st.columns(4)
    beta = c[0].number_input("β", 1e-5, 10.0, base["beta"], format="%.4g", key=f"{k}-beta")
    eps = c[1].number_input("ε (|θ|² ≤ ε)", 1e-6, 1.0, base["eps"], format="%.4g", key=f"{k}-eps",
                            help="the trust region of the first step and the most it grows to: each step measures "
                                 "its real change against the metric's prediction and shrinks ε when it left the "
                                 "linear regime")
    probe = c[2].number_input("Probe batch B", 1, 256, base["probe"], key=f"{k}-probe",
                              help="the largest: where a step would leave room for fewer than 50 walk steps in "
                                   "half the CPU seconds, it is halved with the pull batch (the run's settings "
                                   "record what it used)")
    seed = c[3].number_input("Seed", 0, 10_000, base["seed"], key=f"{k}-seed")
    c = st.columns(4)
    pull = c[0].number_input("Pull ρ toward the start's function", 0.0, 10.0, base["pull"], key=f"{k}-pull",
                             help="relative strength of the pull on the free weights (0: the literal algorithm)")
    relax = c[1].number_input("Relax steps (after arrival)", 0, 100_000, base["relax_steps"], key=f"{k}-relax",
                              placeholder="until the budget ends",
                              help=f"geodesic restore steps inside the hyperplane after arrival, at most (empty: "
                                   f"until the CPU seconds are spent; 0: none), ε decaying from "
                                   f"{base['relax_eps']:g} to {base['relax_eps_final']:g} over them")
    max_steps = c[2].number_input("Max steps", 1, choices.NO_STEP_CAP, base["max_steps"], key=f"{k}-max",
                                  help=f"the walk's step cap ({choices.NO_STEP_CAP:,}: none, the CPU seconds end "
                                       "it); a walk it stops short is projected and restored when the run relaxes, "
                                       "as one the budget cuts")
    eval_size = c[3].number_input("Test images for accuracy", 100, 2000, 500, step=100, key=f"{k}-eval")
    seconds = st.number_input("CPU seconds (walk + relaxation)", 1.0, 10**6 * 1.0, base["seconds"], step=60.0,
                              key=f"{k}-seconds", help="the walk must arrive within half of them (else it is projected and "
                                                       "restored by descent); the relaxation spends what the walk "
                                                       "leaves, so a run takes them all: give fewer for a quicker "
                                                       "demo (every step checks itself: ε above is where it starts "
                                                       "and the most it grows to)")

    if engine.start_button("Start", "sp-start"):  # a press before the engine is loaded waits for it here
        cfg = choices.preset_config(preset)
        try:
            cfg = replace(cfg, filters=int(filters), strategy=strategy, pull=float(pull),
                          relax_steps=None if relax is None else int(relax), seconds=float(seconds),
                          path=replace(cfg.path, phi=phi, beta=float(beta), eps=float(eps), probe=int(probe),
                                       seed=int(seed), max_steps=int(max_steps))).validate()
        except ValueError as e:
            st.error(page.md(e))
        else:
            from app import jobs

            source = jobs.Source(path, dataset, eval_size=int(eval_size),
                                 model=model_name if card.get("uploaded") else None, arch=card.get("arch"))
            job = job_panel.registry().start("sparsify", jobs.sparsify_job(source, cfg),
                                         {"checkpoint": path, "dataset": dataset, "model": model_name})
            st.session_state["sp-job"] = job.id

from app import figures  # noqa: E402 — after the controls: it loads pandas, the slowest import of a fresh server

job = job_panel.pick_job("sparsify", "sp-job")


def render(job, df):
    n_eval = job.info.get("eval_images", "?")
    src = job.info.get("data_source", "bundled")
    note = (f"{job.params.get('model')} on {job.params.get('dataset')}: D and accuracy on {n_eval} {src} test images "
            f"(D on the first ≤{job.info.get('distance_batch', '?')}), accuracy every {job.info.get('eval_every', '?')} steps")
    if len(df):
        last = df.iloc[-1]
        acc = df["accuracy"].dropna()
        m = st.columns(5)
        m[0].metric("step", int(last["step"]))
        m[1].metric("filters at zero", int(last["groups_zero"]))
        m[2].metric("|w_T|", f"{last['target_norm']:.4f}")
        dist = df["distance"].dropna()  # under a budget D is measured every few steps only
        m[3].metric("D(w, w₀)", f"{dist.iloc[-1]:.4g}" if len(dist) else "–")
        m[4].metric("accuracy", f"{acc.iloc[-1]:.4f}" if len(acc) else "–",
                    delta=f"{acc.iloc[-1] - acc.iloc[0]:+.4f}" if len(acc) > 1 else None)
        if len(df) > 2:
            secs = np.nansum(df[["t_jacobian", "t_solve", "t_other"]].to_numpy(dtype=float), axis=1)
            secs = secs[secs > 0][-20:]
            if len(secs):
                st.caption(f"{1 / max(secs.mean(), 1e-9):.1f} steps/s (metric + solve + evaluation, last {len(secs)} steps)")
        hit, of = figures.rejections(df)
        if hit:
            st.warning(f"Steps are being rejected: {hit} of the last {of} steps left the linear regime at first and "
                       f"were solved again at a smaller trust region (ε now {last['eps']:.3g}).")
    left, right = st.columns([3, 2])
    curves = job_panel.figure("curves", job, df, lambda: figures.path_curves(df, note))
    heat = job_panel.figure("heat", job, df, lambda: figures.filter_heatmap(df, job.info.get("groups"),
                                                                         f"norms of every prunable group, {note.split(':')[0]}"),
                        every=5)  # the heatmap is the costliest chart to redraw: every 5 steps
    left.plotly_chart(curves, key=f"curves-{job.id}")
    right.plotly_chart(heat, key=f"heat-{job.id}")
    if figures.has_linearity(df):
        lin = job_panel.figure("linearity", job, df, lambda: figures.linearity(
            df, f"each step's measured change of its probe's outputs over |Jθ|² and its trust region ε, "
                f"{note.split(':')[0]}"), every=5)
        st.plotly_chart(lin, key=f"linearity-{job.id}")


if job is None:
    st.info("No sparsify run yet: choose the settings and press Start.")
else:
    job_panel.live(job, render)
