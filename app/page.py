"""What every page shares: text made safe for markdown (`md`), and its first paint (`begin_page`, `after_paint`):
a page's controls reach the browser before its saved runs are read and charted.

On the first run of a visit only a caption stands in for what a page shows of saved runs (read with pandas, drawn
with plotly); the browser asks for the rest once it has drawn the controls.
"""

from __future__ import annotations

import re
from typing import Callable

import streamlit as st

# after the controls of a visit's first run reach the browser, it asks for the rest this much later: a new tab
# takes about a second to draw a page on the loaded 2-core machine, and charts arriving meanwhile (plotly's code is
# loaded and run when the first one is drawn) held back its controls (bench/bench_app.py: 0.3 s was not enough)
PAINT_S = 1.0
VISIT = "page-visit"  # session_state: (the page of the last full run, whether that run was its visit's first)


def begin_page(name: str) -> None:
    """Called by app/main.py on every full run, `name` the page's: marks the first run of a visit to it (a new
    tab, a reload, a page chosen in the sidebar), where `after_paint` leaves the saved runs' charts for later."""
    last = st.session_state.get(VISIT)
    st.session_state[VISIT] = (name, last is None or last[0] != name)


def after_paint(draw: Callable[[], None], note: str) -> None:
    """`draw()` here, except in the first run of a visit to the page (begin_page): there only a caption `note`
    stands in, and the browser asks for a rerun PAINT_S after it has drawn what came before (a fragment's timer,
    which runs once the browser has handled the controls), which draws it. So the controls of a page are drawn
    and usable before reading run folders and building charts takes the server's time, and before drawing those
    charts takes the browser's. Any other run (a widget changed, the rerun) draws in place at once."""
    visit = st.session_state.get(VISIT)
    if visit is None or not visit[1]:
        draw()
        return
    inline = [True]

    @st.fragment(run_every=PAINT_S)
    def rest() -> None:
        if inline[0]:  # the call below, in this run
            inline[0] = False
            st.caption(md(note))
            return
        st.rerun()  # the browser's first request: a full rerun (not the visit's first) draws the rest and ends the timer

    rest()


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=^\"'])")


def md(text: object) -> str:
    """`text` for a markdown context (st.markdown, captions, alerts, toasts, expander labels): every markdown
    character backslash-escaped and newlines flattened, so a run id or a file name shows as the plain text it is
    (a folder named `![x](http://…)` must not make the browser fetch anything)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split("\n")))
