"""Two tasks: walk from a net trained on task A toward learning task B while the metric watches task A."""

import streamlit as st

from app import figures, state
from geodesic import jobs

st.title("Two tasks: learn B while keeping A")
st.markdown("**Idea (the paper's mean network):** move with v = −∇L_B (cross-entropy on task B) while the metric's "
            "probe batch comes from task A, so steps that would change A's function are expensive. "
            "**Paper's claim:** such a walk ends at a \"mean network\" that does well on both tasks, where plain "
            "fine-tuning on B forgets A. The chart shows what this run measures on both test sets.")
picked = state.checkpoint_picker("tt", only=lambda c: c.get("dataset") in state.DATASETS)
if picked is not None:
    path, model_name, card = picked
    task_a = card["dataset"]
    task_b = [d for d in state.DATASETS if d != task_a][0]
    st.caption(f"task A (metric, kept): **{task_a}** · task B (learned): **{task_b}**")
    c = st.columns(5)
    steps = c[0].number_input("Steps", 1, 2000, 60, key="tt-s")
    beta = c[1].number_input("β", 1e-5, 10.0, 0.01, format="%.4g", key="tt-b")
    eps = c[2].number_input("ε", 1e-6, 1.0, 0.01, format="%.4g", key="tt-e")
    probe = c[3].number_input("Probe batch B (task A)", 1, 128, 32, key="tt-B")
    seed = c[4].number_input("Seed", 0, 1000, 0, key="tt-seed")
    if st.button("Start walk", type="primary", key="tt-start"):
        job = state.registry().start("two-tasks", jobs.two_tasks_job(path, task_a, task_b, int(steps), float(beta),
                                                                      float(eps), int(probe), int(seed)),
                                     {"model": model_name, "task_a": task_a, "task_b": task_b})
        st.session_state["tt-job"] = job.id

job = state.pick_job("two-tasks", "tt-job")


def render(job, df):
    names = (job.params.get("task_a"), job.params.get("task_b"))
    note = (f"{job.params.get('model')}: accuracy on {job.info.get('eval_images', '?')} bundled test images of each task, "
            f"every 5 steps; probe batch from {names[0]}")
    st.plotly_chart(state.figure("tt", job, df, lambda: figures.two_tasks(df, names, note)), key=f"tt-{job.id}")


if job is None:
    st.info("No walk yet.")
else:
    state.live(job, render)
