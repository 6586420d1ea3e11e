"""The engine (torch and geodesic/), imported once per server in a background thread, so that pages draw at once.

What needs the engine (starting a job, validating an upload, an embedding) calls `await_engine()` first, which
shows "Loading the engine…" until it is there; `start_button` keeps a press made meanwhile.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback

import streamlit as st

ENGINE_LOADED = threading.Event()  # set by warm_engine's thread once torch and the engine are imported
ENGINE_ERROR: list[str] = []  # the traceback, when importing the engine failed
ENGINE_HURRY = threading.Event()  # set by await_engine: a press is waiting, import now
WARM_DELAY_S = 3.0  # the torch import holds the GIL for long stretches: let the first page reach the browser first


@st.cache_resource(show_spinner=False)
def warm_engine() -> threading.Thread:
    """Import torch and the engine once per server, in the background, so pages draw at once. The import starts
    WARM_DELAY_S after the first page's script (its widgets are then sent and drawn), or at once on a press."""
    def body() -> None:
        ENGINE_HURRY.wait(WARM_DELAY_S)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.001))  # the server's threads get the GIL more often meanwhile
        try:
            import pandas  # noqa: F401 — before torch, in one thread (see app/main.py)
            import torch  # noqa: F401 — the engine's largest import, here in the background

            from app import playground
            from geodesic.infra import threads

            threads.configure()  # the engine's policy: $GEODESIC_THREADS, else 1 (and its allocator's)
            import geodesic.experiments.embed  # noqa: F401
            import geodesic.experiments.sparsify  # noqa: F401
            import geodesic.store.inputs  # noqa: F401
        except BaseException:  # noqa: BLE001 — shown by await_engine, never swallowed
            ENGINE_ERROR.append(traceback.format_exc())
            return
        finally:
            sys.setswitchinterval(interval)
        ENGINE_LOADED.set()
        playground.warm_metric()  # first forward-mode call scripts torch's jvp decompositions (~2 s, GIL-heavy)

    t = threading.Thread(target=body, name="geodesic-warm-engine", daemon=True)
    t.start()
    return t


def engine_loaded() -> bool:
    return ENGINE_LOADED.is_set()


def await_engine(label: str = "Loading the engine (torch), once per server…", hurry: bool = True) -> None:
    """Return once torch and the engine are imported; meanwhile show a status line. The wait touches the page
    every 0.25 s, so a widget changed meanwhile reruns the script at once instead of queueing behind it.
    `hurry`: start the import now (a press is waiting); else keep warm_engine's delay, so that the controls
    drawn above reach the browser before the import takes the server's time (a page that merely shows a
    figure)."""
    if ENGINE_LOADED.is_set():
        return
    if hurry:
        ENGINE_HURRY.set()
    thread = warm_engine()
    holder = st.empty()
    with holder.container():
        status = st.status(label, expanded=False)
    t0 = time.monotonic()
    while not ENGINE_LOADED.wait(0.25):
        if ENGINE_ERROR or not thread.is_alive():
            holder.empty()
            raise RuntimeError("the engine failed to load:\n" + (ENGINE_ERROR[0] if ENGINE_ERROR else "?"))
        status.update(label=f"{label} {time.monotonic() - t0:.0f} s")
    holder.empty()


def start_button(label: str, key: str, keep_s: float = 300) -> bool:
    """A primary button whose press survives the engine's loading: pressed before the engine is there, it
    waits under a "Loading the engine…" status (a rerun meanwhile keeps the press, for up to `keep_s`), then
    returns True."""
    pending = f"{key}-pending"
    if st.button(label, type="primary", key=key):
        st.session_state[pending] = time.monotonic()
    pressed = st.session_state.get(pending)
    if pressed is None or time.monotonic() - pressed > keep_s:
        st.session_state.pop(pending, None)
        return False
    await_engine()
    st.session_state.pop(pending, None)
    return True
