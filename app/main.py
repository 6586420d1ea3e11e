"""Geodesic Explorer: `streamlit run app/main.py`. Navigation over app/views; every number comes from geodesic/."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import engine, jobs, page  # noqa: E402

# an emoji icon: the browser draws it from a data: URL (a :material/…: page icon is fetched from fonts.gstatic.com)
st.set_page_config(page_title="Geodesic Explorer", page_icon="🧭", layout="wide")

# not app/pages: a `pages/` folder beside main.py puts Streamlit in v1 multipage mode until st.navigation
# first runs, so on a fresh server a direct URL (/damage) would run that file alone, without navigation
PAGES = ROOT / "app" / "views"
nav = st.navigation({
    "Walk": [st.Page(PAGES / "sparsify.py", title="Sparsify", icon=":material/content_cut:", default=True),
             st.Page(PAGES / "candidates.py", title="Candidate paths", icon=":material/alt_route:"),
             st.Page(PAGES / "trajectories.py", title="Trajectories", icon=":material/scatter_plot:"),
             st.Page(PAGES / "damage.py", title="Damage & recovery", icon=":material/healing:"),
             st.Page(PAGES / "two_tasks.py", title="Two tasks", icon=":material/balance:"),
             st.Page(PAGES / "task_sequence.py", title="Task sequence", icon=":material/stacks:")],
    "Learn": [st.Page(PAGES / "playground.py", title="Playground", icon=":material/science:"),
              st.Page(PAGES / "theory.py", title="Theory", icon=":material/functions:")],
    "Data": [st.Page(PAGES / "runs.py", title="Runs", icon=":material/folder_open:"),
             st.Page(PAGES / "sweeps.py", title="Sweeps", icon=":material/grid_view:")],
})
st.sidebar.caption("Raghavan & Thomson, *Sparsifying networks by traversing geodesics*. "
                   f"Run folders: {page.md(jobs.runs_root())}")
page.begin_page(nav.url_path)  # the first run of a visit to a page draws its controls first (page.after_paint)
try:
    nav.run()  # every page draws its controls without torch, and most without pandas (app/run_folders.py)
finally:  # also after st.stop() or a rerun request
    # pandas after the page (its import is the longest part of a fresh server's first page), but here, in this
    # thread, before the engine's thread starts: two threads importing pandas at once can fail with "partially
    # initialized module 'pandas'" on the first page load after the server starts.
    import pandas  # noqa: F401

    engine.warm_engine()  # torch and the engine load in the background; a press before then waits for them
