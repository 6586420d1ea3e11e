"""Two tasks: walk from a net trained on task A toward learning task B while the metric watches task A."""

import streamlit as st

from app import choices, engine, job_panel, jobs, page, picker, run_folders

st.title("Two tasks: learn B while keeping A")
st.markdown("**Idea (the paper's mean network):** move with v = −∇L_B (cross-entropy on task B) while the metric's "
            "probe batch comes from task A, so steps that would change A's function are expensive; a pull of "
            "strength ρ (relative to |v|) toward A's function on fresh task-A images corrects the drift. "
            "**Paper's claim:** such a walk ends at a \"mean network\" that does well on both tasks, where plain "
            "fine-tuning on B forgets A. The baselines run in the same job: the straight line between the two "
            "trained nets (weight averaging) and Adam fine-tuning on B for the same number of steps.")
picked = picker.checkpoint_picker("tt", only=lambda c: c.get("dataset") in choices.DATASETS)
if picked is not None:
    path, model_name, card = picked
    task_a = card["dataset"]
    task_b = [d for d in choices.DATASETS if d != task_a][0]
    arch = card.get("arch")  # a user's own architecture: there is no shipped task-B net of it
    path_b = None if arch else jobs.CHECKPOINTS / f"{model_name}-{task_b}.safetensors"
    path_b = path_b if path_b is not None and path_b.is_file() else None
    st.caption(f"task A (metric, kept): **{page.md(task_a)}** · task B (learned): **{page.md(task_b)}**"
               + (f" · task-B net for the straight line: {page.md(path_b.name)}" if path_b else ""))
    c = st.columns(6)
    steps = c[0].number_input("Steps", 1, 2000, 60, key="tt-s")
    beta = c[1].number_input("β", 1e-5, 10.0, 0.01, format="%.4g", key="tt-b")
    eps = c[2].number_input("ε (start)", 1e-6, 1.0, 0.5, format="%.4g", key="tt-e",
                            help="trust region of the first step; it decays (cosine) over the walk to the final ε of "
                                 "merge.default_path() (shown under the chart)")
    probe = c[3].number_input("Probe batch B (task A)", 1, 128, 32, key="tt-B")
    pull = c[4].number_input("Pull ρ", 0.0, 20.0, 0.5, key="tt-pull", help="0: the naive walk, which forgets A")
    seed = c[5].number_input("Seed", 0, 1000, 0, key="tt-seed")
    baselines = {"straight line (weight averaging)": "line", "fine-tune A on B": "finetune"}
    if path_b is None:
        baselines.pop("straight line (weight averaging)")
    picked_baselines = st.multiselect("Baselines", list(baselines), default=list(baselines), key="tt-base")
    if engine.start_button("Start walk", "tt-start"):  # waits for the engine if it is still loading
        from app import jobs
        from geodesic.core.path import PathConfig
        from geodesic.experiments.merge import MergeConfig, default_path

        phases = ("walk", *(baselines[b] for b in picked_baselines))
        try:  # ε decays (cosine) to the engine's final ε over the walk; fine-tuning gets as many steps as the walk
            eps_final = min(default_path().eps_final, float(eps))
            walk = PathConfig(beta=float(beta), eps=float(eps), eps_final=eps_final, probe=int(probe),
                              seed=int(seed), max_steps=int(steps), eval_every=5)
            cfg = MergeConfig(phases=phases, pull=float(pull), eval_size=500, finetune_steps=int(steps),
                              path=walk).validate()
        except ValueError as e:
            st.error(page.md(e))
        else:
            body = jobs.two_tasks_job(jobs.Source(path, task_a, eval_size=500, arch=arch), task_b, cfg,
                                      checkpoint_b=str(path_b) if path_b else None)
            job = job_panel.registry().start("two-tasks", body, {"model": model_name, "task_a": task_a, "task_b": task_b})
            st.session_state["tt-job"] = job.id

job = job_panel.pick_job("two-tasks", "tt-job")


def walk(df, key, names, note, plane_note, cached):
    """A live walk or a saved one, drawn the same way: both accuracies along the walk, then each method in the
    plane (accuracy on A, accuracy on B)."""
    from app import figures  # after the controls: it loads pandas, the slowest import of a fresh server

    st.plotly_chart(cached("tt", lambda: figures.two_tasks(df, names, note)), key=f"tt-{key}")
    st.plotly_chart(cached("tt-plane", lambda: figures.two_task_plane(df, names, plane_note)), key=f"tt-plane-{key}")


def render(job, df):
    names = (job.params.get("task_a"), job.params.get("task_b"))
    info = job.info
    note = (f"{job.params.get('model')}: accuracy on {info.get('eval_images', '?')} {info.get('data_source', '?')} test "
            f"images of each task, every {info.get('eval_every', '?')} steps; ε decays to {info.get('eps_final', '?')}; "
            f"probe batch from {names[0]}")
    plane_note = (f"accuracy on {info.get('eval_images', '?')} {info.get('data_source', '?')} test images of each task; "
                  f"walk every {info.get('eval_every', '?')} steps, the straight line at {info.get('line_points', '?')} "
                  f"points t = 0 … 1, fine-tuning every {info.get('eval_every', '?')} steps")
    walk(df, job.id, names, note, plane_note, cached=lambda name, build: job_panel.figure(name, job, df, build))


def saved(run):
    """The newest saved two-task run (no job of this server yet), from its metrics and meta."""
    st.info(("No walk on this server yet: below is a shipped example, read-only" if run.readonly else
             "No walk on this server yet: below is the newest saved walk")
            + ". Choose a checkpoint and press Start walk to run one here.", icon=":material/history:")
    st.caption("Saved run: " + page.md(run.label))
    meta, cfg = run.meta, run.meta.get("config") or {}
    path = cfg.get("path") if isinstance(cfg.get("path"), dict) else {}
    points = cfg.get("points")
    names = (str(meta.get("dataset")), str(meta.get("task_b")))
    images = f"{meta.get('eval_images', '?')} {meta.get('data_source', '?')} test images of each task"
    note = (f"saved run: {meta.get('model')}: accuracy on {images}, every {path.get('eval_every', '?')} steps; "
            f"ε decays to {path.get('eps_final', '?')}; probe batch from {names[0]}")
    plane_note = (f"saved run: accuracy on {images}; walk every {path.get('eval_every', '?')} steps, the straight line "
                  f"at {points + 1 if isinstance(points, int) else '?'} points t = 0 … 1")
    stamp = run_folders.folder_stamp(run)
    walk(run.metrics, f"saved-{run.key}", names, note, plane_note,
         cached=lambda name, build: run_folders.saved_figure(("two-tasks", name, stamp, note, plane_note), build))


def newest_saved() -> None:
    """The newest saved two-task walk (the user's, else the shipped example), or a line saying there is none."""
    folders, _ = run_folders.scan_runs()  # torch-free: meta.json and metrics.parquet only
    merge = next((f for f in folders if f.meta.get("kind") == "merge"), None)
    if merge is not None:
        try:
            saved(merge)
        except (KeyError, TypeError, ValueError) as e:  # a folder of another version
            st.warning(page.md(f"cannot draw the saved run {merge.label}: {type(e).__name__}: {e}"))
    else:
        st.info("No walk yet.")


if job is not None:
    job_panel.live(job, render)
else:
    page.after_paint(newest_saved, "Reading the saved walk…")
