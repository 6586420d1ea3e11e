"""This server's jobs (one registry, shared by every session and tab) and a page's live panel of one of them:
its status line and buttons, its rows as a frame, its figures, redrawn every POLL_S seconds while it runs.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable

import streamlit as st

from app import jobs
from app.page import md
from geodesic.infra.lifecycle import DIVERGED_HINT, Status

if TYPE_CHECKING:
    import pandas as pd

POLL_S = 0.25  # the browser asks every 0.25 s; measured ~2-3 refreshes/s on the loaded 2-core machine
# While a job runs, its worker thread and the server's threads share the GIL: a thread that gets it back after a
# torch op waits up to the switch interval (5 ms by default) while a page is being drawn, many times per step.
LIVE_SWITCH_S = 0.001


@st.cache_resource(show_spinner=False)
def registry() -> jobs.Registry:
    """One registry per server process: every session and tab sees the same jobs (torch threads: app.engine)."""
    return jobs.Registry()


def pick_job(kind: str, key: str):
    """The job this page shows: the one started here (a new one replaces the picker's choice), else the one picked,
    else the newest of its kind (a reload or a new tab)."""
    all_jobs = registry().list(kind)
    if not all_jobs:
        return None
    ids = [j.id for j in all_jobs]
    current, select, shown = st.session_state.get(key), f"{key}-select", f"{key}-shown"
    if current in ids and st.session_state.get(shown) != current:  # a job started here since: show it
        st.session_state[select] = current
        st.session_state[shown] = current
    if st.session_state.get(select) not in ids:
        st.session_state[select] = current if current in ids else ids[0]
    if len(ids) > 1:  # labels that do not change while a job runs (a selectbox's value is its label)
        started = lambda i: time.strftime("%H:%M:%S", time.localtime(registry().get(i).started))  # noqa: E731
        chosen = st.selectbox("Job", ids, key=select, format_func=lambda i: f"{i} (started {started(i)})")
    else:
        chosen = ids[0]
    return registry().get(chosen)


def controls(job: jobs.Job) -> None:
    """Status line, Pause / Resume / Stop, and the error of a failed job (all from one reading of its status)."""
    status, rows = job.status, len(job.rows)
    cols = st.columns([3, 1, 1, 1])
    where = f" → {md(job.run_dir.name)}" if job.run_dir else ""
    extra = f" · {md(job.info['current'])}" if "current" in job.info else ""
    cols[0].markdown(f"**{md(job.id)}**: {status.value}, {rows} rows{extra}{where}")
    if status is Status.RUNNING:
        cols[1].button("Pause", key=f"pause-{job.id}", on_click=job.pause)
    elif status is Status.PAUSED:
        cols[1].button("Resume", key=f"resume-{job.id}", on_click=job.resume)
    if status in jobs.ACTIVE:
        cols[2].button("Stop", key=f"stop-{job.id}", on_click=job.stop, type="primary")
    if status is Status.DIVERGED:  # the job ran to its end, but its path did not: say so, and what to try
        st.warning(md(f"The path diverged: {DIVERGED_HINT} (the ε setting)."))
    if isinstance(job.result, dict) and job.result.get("restore_steps"):  # a sparsify run whose walk was cut
        st.info(md(restored_note(job.result)))
    if status is Status.ERROR:
        st.error(md(f"The job failed: {job.error.splitlines()[0]}"))
        with st.expander("traceback"):
            st.code(job.error)


def restored_note(summary: dict) -> str:
    """What a sparsify run whose walk could not arrive in time did instead, and the budget that would let it."""
    need = summary.get("budget_to_arrive")
    more = (f"By its steps so far, about {need:,} CPU seconds would let it arrive." if need
            else "More CPU seconds let it walk further.")
    return (f"The walk could not arrive within half of the CPU seconds in the linear regime: it was projected onto "
            f"the zero groups and restored by descent toward the dense function (no labels, "
            f"{summary['restore_steps']} steps). {more}")


def figure(name: str, job: jobs.Job, df: pd.DataFrame, build: Callable[[], object], every: int = 1):
    """build() once per (job, rows // every, status): a refresh that brings no new step reuses the figure
    (and the browser skips redrawing an unchanged chart)."""
    key, stamp = f"fig-{name}-{job.id}", (len(df) // every, job.status)
    hit = st.session_state.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    fig = build()
    st.session_state[key] = (stamp, fig)
    return fig


def extend_frame(held: tuple[int, pd.DataFrame] | None, rows: list[dict]) -> tuple[int, pd.DataFrame]:
    """(len(rows), pd.DataFrame(rows)), from `held` = (n, the frame of rows[:n]) when rows only grew since: the
    rows after n are converted and appended (building the frame of every row again costs more each step of a
    long run); built anew when the new rows' columns or types differ from the held frame's."""
    import pandas as pd

    n = len(rows)
    if held is not None and held[0] == n:
        return held
    if held is not None and 0 < held[0] < n:
        new, old = pd.DataFrame(rows[held[0]:n]), held[1]
        if list(new.columns) == list(old.columns) and (new.dtypes == old.dtypes).all():
            return n, pd.concat([old, new], ignore_index=True)
    return n, pd.DataFrame(rows[:n])


def rows_frame(job: jobs.Job) -> pd.DataFrame:
    """job.frame(), kept per session and extended at each refresh by the rows added since (extend_frame)."""
    key = f"frame-{job.id}"
    held = st.session_state[key] = extend_frame(st.session_state.get(key), job.rows)  # rows are only appended
    return held[1]


def live(job: jobs.Job, render: Callable[[jobs.Job, pd.DataFrame], None]) -> None:
    """Draw `render(job, rows)` now and, while the job is active, every POLL_S seconds (a fragment rerun)."""
    polling = job.active
    if polling and sys.getswitchinterval() > LIVE_SWITCH_S:
        sys.setswitchinterval(LIVE_SWITCH_S)  # for the rest of the server's life: jobs come and go

    @st.fragment(run_every=POLL_S if polling else None)
    def panel() -> None:
        t0 = time.perf_counter()
        controls(job)
        render(job, rows_frame(job))
        if polling and not job.active:
            st.rerun()  # the job ended: one full rerun turns polling off
        if polling:
            n = st.session_state[f"refresh-{job.id}"] = st.session_state.get(f"refresh-{job.id}", 0) + 1
            st.caption(f"live: refresh #{n}, every {POLL_S} s while the job runs; this redraw took "
                       f"{1000 * (time.perf_counter() - t0):.0f} ms on the server")

    panel()
