"""Playground: a two-weight net, its functional-distance landscape, metric ellipses and the path to w2 = 0."""

import streamlit as st

from app import engine, page, run_folders


@st.cache_data(show_spinner="Walking the two-weight path…", max_entries=32)
def landscape(w1: float, w2: float, beta: float, eps: float, points: int) -> dict:
    from app import playground

    return playground.landscape((w1, w2), beta, eps, count=points)


st.title("Playground: two weights")
st.markdown("f(x, w) = tanh(w1·x + w2·x²) on fixed inputs x ∈ [−1.5, 1.5]. Contours: the real functional distance "
            "√D(w, w₀) from the start w₀. Ellipses: the metric G = JᵀJ at grid points (long axis = directions that "
            "change the function little). Red: the geodesic walk toward the sparse axis w2 = 0 (v = (0, −w2)), "
            "each step the tangent problem's θ*. Try a small β (follows the metric) against a large β (straight down).")
c = st.columns(5)
w1 = c[0].slider("start w1", -2.0, 2.0, 1.5, 0.1)
w2 = c[1].slider("start w2", -2.0, 2.0, 1.2, 0.1)
beta = c[2].select_slider("β", [0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 50.0], value=0.5)
eps = c[3].select_slider("ε", [0.0004, 0.001, 0.0025, 0.01, 0.04], value=0.0025)
points = c[4].slider("inputs x", 2, 32, 8)


def landscape_chart() -> None:
    """The landscape of the chosen start, β, ε and inputs (computed once per setting on this server)."""
    engine.await_engine(hurry=False)  # the sliders above are usable meanwhile
    from app import figures  # after the controls: it loads pandas, the slowest import of a fresh server

    out = landscape(w1, w2, beta, eps, points)
    path, status = out["path"], out["status"].iloc[0]

    def build():
        return figures.playground(out["contours"], out["ellipses"], path,
                                  f"D measured on the {points} fixed inputs, φ = identity; {status['status']} after "
                                  f"{status['steps']} steps, path length {path['length'].iloc[-1]:.3f}, "
                                  f"final √D {path['distance'].iloc[-1] ** 0.5:.3f}")

    st.plotly_chart(run_folders.saved_figure(("playground", w1, w2, beta, eps, points), build), key="pg")


page.after_paint(landscape_chart, "Walking the two-weight path…")
