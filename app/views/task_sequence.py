"""Task sequence: learn tasks one after another and watch what each method keeps of the earlier ones."""

import streamlit as st

from app import engine, job_panel, page, run_folders
from geodesic.core.scenario import SCENARIOS
from geodesic.experiments.choices import SEQUENCE_METHODS as METHODS
from geodesic.experiments.choices import SEQUENCES, memory_for

st.title("Task sequence: learn tasks one after another")
st.markdown("**Idea (the paper's first motivation):** learn task after task without forgetting the earlier ones. "
            "The geodesic walks along v = −∇L of the new task while the metric's probe batch comes from a small "
            "memory of **unlabelled** images of the earlier tasks, so steps that would change what the net computes "
            "on them are expensive. The field's methods learn the same tasks with the same CPU seconds and steps per "
            "task and the same memory: EWC, SI and LwF (regularizers), replay and A-GEM (the memory **with labels**), "
            "fine-tuning (forgets) and joint training (the upper bound). **R[i, j]** is the accuracy on task j after "
            "learning task i (van de Ven & Tolias's three scenarios: the task given, one shared head, or every class "
            "seen competing).")
c = st.columns(4)
sequence = c[0].selectbox("Sequence", SEQUENCES, key="seq-tasks",
                          help="split-mnist: digit pairs 0/1 … 8/9; permuted-mnist:10: ten pixel orders of MNIST; "
                               "two datasets, one after the other")
shared = not sequence.startswith("split")
scenario = c[1].selectbox("Scenario", ("domain",) if shared else SCENARIOS, key="seq-scenario",
                          help="the tasks of this sequence share their ten classes: only the domain scenario applies"
                          if shared else "task: the task is given; domain: one shared head; class: all seen compete")
model = c[2].selectbox("Net", ("mlp100", "mlp"), key="seq-model", help="fresh from the seed: 784-100-100-10 or 784-32-10")
seed = c[3].number_input("Seed", 0, 1000, 0, key="seq-seed")
c = st.columns(4)
methods = c[0].multiselect("Methods", METHODS, default=["finetune", "ewc", "replay", "geodesic"], key="seq-methods")
memory = c[1].number_input("Memory (images per earlier task)", 1, 5000, memory_for(sequence),
                           key=f"seq-memory-{sequence}", help="the same for every method that keeps images; the "
                                                              "default is the benchmark's, chosen by measurement")
seconds = c[2].number_input("CPU seconds per task", 0.5, 600.0, 5.0, key="seq-seconds")
steps = c[3].number_input("Steps per task (at most)", 1, 20000, 500, key="seq-steps")
if engine.start_button("Learn the sequence", "seq-start"):
    from app import jobs
    from geodesic.experiments.continual import config_for
    from geodesic.experiments.sequence_cells import SequenceSpec

    try:
        learn = config_for(sequence, memory=int(memory), seconds=float(seconds), steps=int(steps))
        spec = SequenceSpec(sequence, scenario, tuple(methods), (int(seed),), model, learn=learn).validate()
    except ValueError as e:
        st.error(page.md(e))
    else:
        job = job_panel.registry().start("sequence", jobs.sequence_job(spec, int(seed)),
                                         {"tasks": sequence, "scenario": scenario, "model": model})
        st.session_state["seq-job"] = job.id

job = job_panel.pick_job("sequence", "seq-job")


def draw(df, scores, names, note, cached):
    """Every method's accuracy matrix and per-task curves, then ACC and BWT per method (what has ended)."""
    import pandas as pd

    from app import figures  # after the controls: it loads pandas

    if scores:
        table = pd.DataFrame(scores)
        st.dataframe(table, hide_index=True)
        st.plotly_chart(cached("seq-scores", lambda: figures.sequence_scores(table, note)), key="seq-scores")
    for method in dict.fromkeys(df["method"]) if "method" in df.columns else ():
        rows = df[df["method"] == method]
        left, right = st.columns(2)
        left.plotly_chart(cached(f"seq-R-{method}", lambda: figures.accuracy_matrix(rows, names, method, note)),
                          key=f"seq-R-{method}")
        right.plotly_chart(cached(f"seq-c-{method}", lambda: figures.task_curves(rows, names, method, note)),
                           key=f"seq-c-{method}")


def render(job, df):
    info = job.info
    names = info.get("names") or []
    note = (f"{job.params.get('model')} on {job.params.get('tasks')}, {info.get('scenario')} scenario; full test set "
            f"of each task; learning: {info.get('method', '…')}")
    draw(df, info.get("scores") or [], names, note, lambda name, build: job_panel.figure(name, job, df, build))


def saved(group):
    """The newest saved sequence (one run folder per method), from its metrics and meta."""
    import pandas as pd

    first = group[0]
    st.info(("No sequence on this server yet: below is a shipped example, read-only" if first.readonly else
             "No sequence on this server yet: below is the newest saved one")
            + ". Choose the sequence and methods and press Learn the sequence.", icon=":material/history:")
    meta = first.meta
    names = list(meta.get("task_names") or [])
    frames, scores = [], []
    for f in group:
        m = f.meta
        frames.append(f.metrics.assign(method=m.get("method")))
        s = m.get("summary") or {}
        scores.append({k: s.get(k) for k in ("ACC", "BWT", "FWT", "forgetting", "seconds", "steps")}
                      | {"method": m.get("method")})
    df = pd.concat(frames, ignore_index=True)
    note = (f"saved: {meta.get('model')} on {meta.get('tasks')}, {meta.get('scenario')} scenario, memory "
            f"{(meta.get('config') or {}).get('learn', {}).get('memory', '?')} per task; full test set of each task")
    stamp = tuple(run_folders.folder_stamp(f) for f in group)
    draw(df, [{"method": s.pop("method"), **s} for s in scores], names, note,
         lambda name, build: run_folders.saved_figure(("sequence", name, stamp), build))


def newest_saved() -> None:
    folders, _ = run_folders.scan_runs()
    sequences = [f for f in folders if f.meta.get("kind") == "sequence" and f.meta.get("task_names")]
    if not sequences:
        st.info("No sequence yet.")
        return
    key = sequences[0].meta.get("group") or str(sequences[0].dir.parent)
    group = [f for f in sequences if (f.meta.get("group") or str(f.dir.parent)) == key]
    try:
        saved(group)
    except (KeyError, TypeError, ValueError) as e:  # a folder of another version
        st.warning(page.md(f"cannot draw the saved sequence {sequences[0].label}: {type(e).__name__}: {e}"))


if job is not None:
    job_panel.live(job, render)
else:
    page.after_paint(newest_saved, "Reading the saved sequence…")
