"""Shared app state: the job registry (st.cache_resource), checkpoints, run folders, the live job panel.

Torch-free at import (as is geodesic.jobs): the first page draws while `warm_engine` imports the engine
in a background thread; functions that need the engine import it when called.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from geodesic import jobs

ENGINE_LOADED = threading.Event()  # set by warm_engine's thread once torch and the engine are imported
POLL_S = 0.25  # the browser asks every 0.25 s; measured ~2-3 refreshes/s on the loaded 2-core machine
OUTPUT_MAPS = ("sqrt_probs", "probs", "logits")
DATASETS = ("mnist", "fashion-mnist")


@st.cache_resource
def warm_engine() -> threading.Thread:
    """Import torch and the engine once per server, in the background, so the first page paints at once."""
    def body() -> None:
        import torch

        torch.set_num_threads(jobs.default_threads())
        import geodesic.embed  # noqa: F401
        import geodesic.experiments  # noqa: F401

        ENGINE_LOADED.set()
        jobs.warm_metric()  # first forward-mode call scripts torch's jvp decompositions (~2 s, GIL-heavy)

    t = threading.Thread(target=body, name="geodesic-warm-engine", daemon=True)
    t.start()
    return t


def engine_ready() -> None:
    """Make sure torch and the engine are imported. On a fresh server the page drawn so far (navigation,
    title, intro) is first let through to the browser: a torch import holds the GIL for long stretches."""
    if ENGINE_LOADED.is_set():
        return
    with st.spinner("Loading the engine (torch), once per server…"):
        time.sleep(0.2)
        warm_engine().join()


@st.cache_resource
def registry() -> jobs.Registry:
    """One registry per server process: every session and tab sees the same jobs."""
    import torch

    torch.set_num_threads(jobs.default_threads())
    return jobs.Registry()


def checkpoints() -> dict[str, Path]:
    """Shipped checkpoints by stem (those with a card, `<stem>.json`, as geodesic.models.card_path)."""
    return {p.stem: p for p in sorted(jobs.CHECKPOINTS.glob("*.safetensors")) if p.with_suffix(".json").is_file()}


@st.cache_data(show_spinner=False)
def card(path: str) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


@st.cache_data(show_spinner=False)
def group_names(model_name: str) -> list[str]:
    from geodesic import models

    return [g.name for g in models.filter_groups(models.build(model_name))]


def runs_root() -> Path:
    return jobs.runs_root()


def runs() -> list:
    from geodesic.runs import list_runs

    return list_runs(runs_root())


def active_dirs() -> set[str]:
    return {str(d) for j in registry().list() if j.active for d in j.run_dirs}


def checkpoint_picker(key: str, allow_upload: bool = False, only: Callable[[dict], bool] | None = None):
    """Select a shipped checkpoint (or a validated upload); returns (path, model name, card) or None."""
    shipped = {k: v for k, v in checkpoints().items() if only is None or only(card(str(v)))}
    options = list(shipped) + (["upload a .safetensors…"] if allow_upload else [])
    choice = st.selectbox("Checkpoint", options, key=f"{key}-ckpt",
                          help="Trained nets shipped in assets/checkpoints (a JSON card beside each).")
    if choice in shipped:
        c = card(str(shipped[choice]))
        st.caption(f"{c['model']} trained on {c.get('dataset')}: test accuracy {c.get('test_accuracy')} "
                   f"on {c.get('test_set', '?')} (from its card)")
        return str(shipped[choice]), c["model"], c
    return upload(key)


def upload(key: str):
    """A user's checkpoint for a zoo architecture (validated by geodesic.models.load; nothing is unpickled).

    A wrong or corrupt file gets st.error and changes nothing: the last good upload (if any) stays in use.
    """
    from geodesic import models

    arch = st.selectbox("Architecture of the file", sorted(models.ZOO), key=f"{key}-arch")
    f = st.file_uploader("Checkpoint (.safetensors)", type=["safetensors"], key=f"{key}-up")
    ok, bad = st.session_state.get(f"{key}-upload-ok"), st.session_state.get(f"{key}-upload-bad")
    if f is not None:
        ident = (f.name, f.size, arch)
        if (ok is None or ok[2] != ident) and (bad is None or bad[0] != ident):
            folder = runs_root() / "uploads"
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / f"{Path(f.name).stem}-{arch}.safetensors"
            tmp = dest.with_suffix(".part")
            tmp.write_bytes(f.getvalue())
            try:
                models.load(tmp, arch)
            except models.CheckpointError as e:
                bad = (ident, str(e).replace(str(tmp), f.name))
                st.session_state[f"{key}-upload-bad"] = bad
            else:
                os.replace(tmp, dest)
                ok, bad = (str(dest), arch, ident), None
                st.session_state[f"{key}-upload-ok"] = ok
                st.session_state[f"{key}-upload-bad"] = None
            finally:
                tmp.unlink(missing_ok=True)
        if bad is not None and bad[0] == ident:
            st.error(f"{f.name} cannot be used as a {arch} checkpoint: {bad[1]}")
    if ok is None:
        st.info("Upload a .safetensors file whose tensors match the chosen architecture.")
        return None
    st.success(f"Using uploaded {ok[2][0]} as {ok[1]}")
    return ok[0], ok[1], {"model": ok[1], "dataset": None}


def pick_job(kind: str, key: str):
    """The job this page shows: the one started here, else the newest of its kind (a reload or a new tab)."""
    all_jobs = registry().list(kind)
    if not all_jobs:
        return None
    ids = [j.id for j in all_jobs]
    current = st.session_state.get(key)
    index = ids.index(current) if current in ids else 0
    if len(ids) > 1:
        chosen = st.selectbox("Job", ids, index=index, key=f"{key}-select",
                              format_func=lambda i: f"{i} ({registry().get(i).status})")
    else:
        chosen = ids[0]
    return registry().get(chosen)


def controls(job: jobs.Job) -> None:
    """Status line, Pause / Resume / Stop, and the error of a failed job (all from one reading of its status)."""
    status, rows = job.status, len(job.rows)
    cols = st.columns([3, 1, 1, 1])
    where = f" → `{job.run_dir.name}`" if job.run_dir else ""
    extra = f" · {job.info['current']}" if "current" in job.info else ""
    cols[0].markdown(f"**{job.id}**: {status}, {rows} rows{extra}{where}")
    if status == "running":
        cols[1].button("Pause", key=f"pause-{job.id}", on_click=job.pause)
    elif status == "paused":
        cols[1].button("Resume", key=f"resume-{job.id}", on_click=job.resume)
    if status in jobs.ACTIVE:
        cols[2].button("Stop", key=f"stop-{job.id}", on_click=job.stop, type="primary")
    if status == "error":
        st.error(f"The job failed: {job.error.splitlines()[0]}")
        with st.expander("traceback"):
            st.code(job.error)


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


def live(job: jobs.Job, render: Callable[[jobs.Job, pd.DataFrame], None]) -> None:
    """Draw `render(job, rows)` now and, while the job is active, every POLL_S seconds (a fragment rerun)."""
    polling = job.active

    @st.fragment(run_every=POLL_S if polling else None)
    def panel() -> None:
        t0 = time.perf_counter()
        controls(job)
        render(job, job.frame())
        if polling and not job.active:
            st.rerun()  # the job ended: one full rerun turns polling off
        if polling:
            n = st.session_state[f"refresh-{job.id}"] = st.session_state.get(f"refresh-{job.id}", 0) + 1
            st.caption(f"live: refresh #{n}, every {POLL_S} s while the job runs; this redraw took "
                       f"{1000 * (time.perf_counter() - t0):.0f} ms on the server")

    panel()
