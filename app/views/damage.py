"""Damage & recovery: break a net, then race geodesic restore against SGD on the same chart."""

import streamlit as st

from app import choices, engine, job_panel, page, picker, run_folders

st.title("Damage & recovery")
st.markdown("**Paper's claim:** a net recovers from damage by walking back toward its original function along the "
            "functional metric (`restore`: v = −∇D(w, w_ref), damaged coordinates frozen), compared here with plain "
            "SGD or Adam on the task loss holding the same coordinates. Both run at the same time, one worker thread "
            "each, for the same number of steps.")

picked = picker.checkpoint_picker("dmg")
if picked is not None:
    path, model_name, card = picked
    c = st.columns(4)
    kind = c[0].selectbox("Damage", choices.DAMAGE_KINDS, index=1, help="zero: a random fraction of weights; ablate: whole "
                          "filters/neurons; noise: relative Gaussian noise (nothing frozen)")
    n_groups = len(choices.group_names(model_name, card))
    if kind == "zero":
        level = c[1].slider("Fraction zeroed", 0.0, 0.9, 0.5)
    elif kind == "ablate":
        level = choices.count_slider(c[1], "Filters ablated", n_groups, n_groups // 2)
    else:
        level = c[1].slider("Noise scale (× layer std)", 0.0, 3.0, 1.0)
    seed = c[2].number_input("Seed", 0, 1000, 0, key="dmg-seed")
    steps = c[3].number_input("Recovery steps (each method)", 1, 2000, 40)
    c = st.columns(4)
    beta = c[0].number_input("β", 1e-5, 10.0, 0.01, format="%.4g", key="dmg-b")
    eps = c[1].number_input("ε", 1e-6, 1.0, 0.01, format="%.4g", key="dmg-e")
    probe = c[2].number_input("Probe batch B", 1, 128, 16, key="dmg-B")
    baseline = c[3].selectbox("Baseline", ["sgd", "adam"], help="SGD with momentum, or Adam, on the task loss (momentum and batch: "
                              "the engine's RecoveryConfig, shown under the chart)")
    lr = st.number_input(f"{baseline} learning rate", 1e-5, 1.0, 0.01 if baseline == "sgd" else 1e-3, format="%.4g",
                         key=f"dmg-lr-{baseline}")
    if engine.start_button("Damage and race", "dmg-start"):  # waits for the engine if it is still loading
        from app import jobs
        from geodesic.core.path import PathConfig
        from geodesic.experiments.damage import DamageConfig
        from geodesic.experiments.recovery import RecoveryConfig

        try:
            damage = DamageConfig(kind, (float(level),), (int(seed),)).validate()
            cfg = RecoveryConfig(steps=int(steps), seed=int(seed), lr=float(lr),
                                 path=PathConfig(beta=float(beta), eps=float(eps), probe=int(probe), solver="gram")).validate()
        except ValueError as e:
            st.error(page.md(e))
        else:
            body = jobs.damage_job(jobs.Source(path, card["dataset"], arch=card.get("arch")), damage, cfg,
                                   methods=("geodesic", baseline))
            job = job_panel.registry().start("damage", body, {"model": model_name, "dataset": card["dataset"],
                                                          "kind": kind, "level": level})
            st.session_state["dmg-job"] = job.id

job = job_panel.pick_job("damage", "dmg-job")


def race(df, key, before, damaged, note, counts, cached):
    """The race of a live job or of a saved one, drawn the same way: accuracies before and after the damage, the
    chart against the chosen axis, and each method's first evaluation back within 1 point."""
    if before is not None:
        m = st.columns(3)
        m[0].metric("accuracy before", f"{before:.4f}")
        if damaged is not None:
            m[1].metric("after damage", f"{damaged:.4f}", delta=f"{damaged - before:+.4f}")
        if counts is not None:
            m[2].metric(*counts[:2], help=counts[2])
    axis = st.radio("x axis", ["step", "seconds", "grad_evals"], horizontal=True, key=f"axis-{key}",
                    help="seconds: wall time of the steps alone (evaluations excluded); grad_evals: per-image "
                         "backward passes (a geodesic step counts its restore batch and the rows of J)")
    import pandas as pd  # after the controls: pandas is the slowest import of a fresh server's first page

    from app import figures

    build = lambda: figures.race(df, axis, before, note)  # noqa: E731
    st.plotly_chart(cached(f"race-{axis}", build), key=f"race-{key}")
    if not df.empty and before is not None:
        engine.await_engine(hurry=False)  # a saved race's chart is drawn above while the engine loads
        from geodesic.experiments.recovery import first_within

        rows = [{"method": m, **first_within(d, before)} for m, d in df.groupby("method", sort=False)]
        st.caption("First evaluation within 1 point of the accuracy before damage (empty: not yet)")
        st.dataframe(pd.DataFrame(rows), hide_index=True)


def render(job, df):
    info = job.info
    counts = None
    if "acc_before" in info:
        counts = ("damaged / frozen coordinates", f"{info['damaged']:,} / {info['frozen']:,}", f"of {info['n']:,}")
    note = (f"{job.params.get('model')} on {job.params.get('dataset')}, {job.params.get('kind')} {job.params.get('level')}: "
            f"accuracy on {info.get('eval_images', '?')} {info.get('data_source', '?')} test images every "
            f"{info.get('eval_every', '?')} steps; the methods run at the same time, one thread each; baseline "
            f"batch {info.get('batch', '?')}, SGD momentum {info.get('momentum', '?')}")
    race(df, job.id, info.get("acc_before"), info.get("acc_damaged"), note, counts,
         cached=lambda name, build: job_panel.figure(name, job, df, build))


def saved(runs):
    """The newest saved race (no job of this server yet): its runs' metrics, drawn as a live race is."""
    first = runs[0]
    example = all(f.readonly for f in runs)
    methods = page.md(" vs ".join(run_folders.recover_method(f) for f in runs))
    st.info((f"No race on this server yet: below is a shipped example ({methods}), read-only" if example else
             f"No race on this server yet: below is the newest saved race ({methods})")
            + ". Choose a damage and press the button to run one here.", icon=":material/history:")
    st.caption("Saved runs: " + page.md("; ".join(f.label for f in runs)))
    meta, summary, cfg = first.meta, first.summary, first.meta.get("config") or {}
    damage = meta.get("damage") if isinstance(meta.get("damage"), dict) else {}
    frozen = meta.get("frozen")
    counts = ("frozen coordinates", f"{frozen:,}", "coordinates held at their damaged value") \
        if isinstance(frozen, int) else None
    note = (f"saved run: {meta.get('model')} on {meta.get('dataset')}, {damage.get('kind', '?')} "
            f"{(damage.get('levels') or ['?'])[0]}: accuracy on {meta.get('eval_images', '?')} "
            f"{meta.get('data_source', '?')} test images every {cfg.get('eval_every', '?')} steps; baseline batch "
            f"{cfg.get('batch', '?')}, SGD momentum {cfg.get('momentum', '?')}")
    number = lambda v: v if isinstance(v, (int, float)) and not isinstance(v, bool) else None  # noqa: E731
    stamps = tuple(run_folders.folder_stamp(f) for f in runs)
    race(run_folders.race_frame(runs), f"saved-{first.key}", number(summary.get("accuracy_before")),
         number(summary.get("accuracy_damaged")), note, counts,
         cached=lambda name, build: run_folders.saved_figure(("race", name, stamps, note), build))


def newest_saved() -> None:
    """The newest saved race (the user's, else the shipped example), or a line saying there is none."""
    folders, _ = run_folders.scan_runs()  # torch-free: meta.json and metrics.parquet only
    newest = run_folders.newest_race(folders)
    if newest:
        try:
            saved(newest)
        except (KeyError, TypeError, ValueError) as e:  # folders of another version
            st.warning(page.md(f"cannot draw the saved race {newest[0].label}: {type(e).__name__}: {e}"))
    else:
        st.info("Nothing damaged yet: choose a damage and press the button.")


if job is not None:
    job_panel.live(job, render)
else:
    page.after_paint(newest_saved, "Reading the saved races…")
