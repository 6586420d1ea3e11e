"""Figure builders on small hand-made DataFrames: traces, marked zero cells, the shortest candidate."""

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app import figures


def steps_frame(run="r", n=5, groups=3, zero_from=3):
    rows = []
    for s in range(n):
        norms = [1.0 - 0.2 * s, 2.0, 0.0 if s >= zero_from else 0.5]
        rows.append({"step": s, "run": run, "distance": 0.01 * s, "length": 0.1 * s,
                     "accuracy": 0.9 - 0.01 * s if s % 2 == 0 else math.nan, "loss": 0.3 if s % 2 == 0 else math.nan,
                     "groups_zero": sum(v == 0 for v in norms), "group_norms": norms[:groups]})
    return pd.DataFrame(rows)


def test_path_curves_one_trace_per_run_and_panel():
    df = pd.concat([steps_frame("a"), steps_frame("b")])
    fig = figures.path_curves(df, "note: 200 test images", highlight="b")
    assert isinstance(fig, go.Figure) and len(fig.data) == 8
    acc = [t for t in fig.data if t.xaxis == "x3"]
    assert [list(t.x) for t in acc] == [[0, 2, 4], [0, 2, 4]]  # NaN rows (not evaluated) dropped
    assert max(t.line.width for t in fig.data if t.name == "b") == 4
    assert "200 test images" in fig.layout.title.subtitle.text


def test_path_curves_empty():
    assert len(figures.path_curves(pd.DataFrame()).data) == 0


def test_filter_heatmap_marks_exact_zeros():
    df = steps_frame()
    fig = figures.filter_heatmap(df, ["f0", "f1", "f2"], "note")
    main, zeros = fig.data
    rel = np.asarray(main.z)
    np.testing.assert_allclose(rel[:, 0], 1.0)
    np.testing.assert_allclose(rel[0], [1.0, 0.8, 0.6, 0.4, 0.2])
    z = np.asarray(zeros.z, dtype=float)
    assert np.isnan(z[:2]).all() and (z[2, 3:] == 1).all() and np.isnan(z[2, :3]).all()
    assert "1 of 3 exactly zero at step 4" in fig.layout.title.text and "black" in fig.layout.title.subtitle.text


def test_group_norm_matrix_subsamples_columns():
    df = steps_frame(n=50)
    M, steps = figures.group_norm_matrix(df, max_columns=10)
    assert M.shape == (3, 10) and steps[0] == 0 and steps[-1] == 49


def test_candidate_table_picks_shortest_arrived():
    m = {"a": steps_frame("a"), "b": steps_frame("b").assign(length=lambda d: d["length"] * 0.5),
         "c": steps_frame("c").assign(length=0.0)}
    meta = {"a": {"status": "arrived"}, "b": {"status": "arrived, relaxed"}, "c": {"status": "max steps"}}
    t = figures.candidate_table(m, meta)
    assert list(t["shortest"]) == [False, True, False]  # c is shorter but never arrived
    assert t.loc[1, "length"] == 0.2 and t.loc[0, "accuracy"] == 0.86 and t.loc[0, "filters at zero"] == 1
    none = figures.candidate_table(m, {})
    assert list(none["shortest"]) == [False, False, True]


def test_candidate_table_reads_a_missing_column_as_missing():
    """A run that did not record a column (or whose status is not text) still gets its row."""
    m = {"a": steps_frame("a").drop(columns=["distance", "groups_zero", "accuracy"]), "b": steps_frame("b")}
    t = figures.candidate_table(m, {"a": {"status": 3}, "b": {"status": "arrived"}})
    assert list(t["run"]) == ["a", "b"] and math.isnan(t.loc[0, "final distance"]) and t.loc[0, "filters at zero"] == 0
    assert math.isnan(t.loc[0, "accuracy"]) and t.loc[0, "steps"] == 4 and list(t["shortest"]) == [False, True]


def test_run_names_and_notes_show_as_plain_text():
    """Plotly reads <a href>, <b>, <br> in legends, titles and hover labels: names from run folders are escaped."""
    name = '<a href="http://example.com">x</a><br>&'
    fig = figures.path_curves(steps_frame(name), f"note {name}")
    assert {t.name for t in fig.data if t.showlegend} == {figures.plain(name)}
    assert "<a" not in fig.layout.title.subtitle.text and "&lt;a href" in fig.layout.title.subtitle.text
    emb = pd.DataFrame({"run": [name] * 2, "step": [0, 5], "x": [0.0, 1.0], "y": [0.0, 1.0]})
    traj = figures.trajectory(emb, "step", "PCA", name)
    assert "<a" not in traj.data[0].name and "<a" not in traj.data[0].hovertemplate
    assert figures.plain(name) == '&lt;a href="http://example.com"&gt;x&lt;/a&gt;&lt;br&gt;&amp;'


def test_trajectory_hover_and_colour():
    emb = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 2, "step": [0, 5, 10, 0, 5], "x": [0, 1, 2, 0, -1.0],
                        "y": [0, 1, 0, 0, 1.0], "accuracy": [0.9, 0.8, 0.7, 0.9, 0.85]})
    fig = figures.trajectory(emb, "accuracy", "PCA", "5 snapshots")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 2 and list(lines[0].marker.color) == [0.9, 0.8, 0.7]
    assert "accuracy" in lines[0].hovertemplate and lines[0].customdata.shape == (3, 2)


def test_ellipse_axes_follow_the_metric():
    row = pd.Series({"w1": 0.0, "w2": 0.0, "lam1": 1.0, "lam2": 4.0, "u1x": 1.0, "u1y": 0.0, "u2x": 0.0, "u2y": 1.0})
    x, y = figures.ellipse_xy(row, 1.0)
    assert math.isclose(x.max(), 1.0, rel_tol=1e-3) and math.isclose(y.max(), 0.5, rel_tol=1e-2)  # 1/√λ ratio


def test_playground_race_two_tasks_build():
    g = np.linspace(-1, 1, 3)
    contours = pd.DataFrame([{"w1": a, "w2": b, "distance": a * a + b * b} for b in g for a in g])
    ell = pd.DataFrame([{"w1": 0.0, "w2": 0.0, "lam1": 1.0, "lam2": 2.0, "u1x": 1.0, "u1y": 0.0, "u2x": 0.0, "u2y": 1.0}])
    path = pd.DataFrame({"step": [0, 1, 2], "w1": [0.5, 0.5, 0.4], "w2": [0.8, 0.4, 0.0], "length": [0, 0.1, 0.2],
                         "distance": [0, 0.01, 0.02]})
    fig = figures.playground(contours, ell, path)
    assert isinstance(fig.data[0], go.Contour) and np.allclose(np.asarray(fig.data[0].z) ** 2, [[2, 1, 2], [1, 0, 1], [2, 1, 2]])
    race = pd.DataFrame({"method": ["geodesic", "geodesic", "geodesic", "sgd", "sgd", "sgd"], "step": [0, 5, 10, 0, 5, 10],
                         "seconds": [0, 1, 2, 0, 0.1, 0.2], "accuracy": [0.2, 0.5, 0.8, 0.2, 0.4, 0.6]})
    fig = figures.race(race, "seconds", 0.9)
    assert [t.name for t in fig.data] == ["geodesic", "sgd"] and list(fig.data[1].x) == [0, 0.1, 0.2]
    assert fig.layout.xaxis.title.text.startswith("wall seconds") and "geodesic vs sgd" in fig.layout.title.text
    tt = pd.DataFrame({"step": [0, 1, 2], "accuracy": [0.97, math.nan, 0.9], "accuracy_b": [0.1, math.nan, 0.5]})
    fig = figures.two_tasks(tt, ("mnist", "fashion-mnist"))
    assert len(fig.data) == 2 and list(fig.data[1].y) == [0.1, 0.5]


def test_two_task_plane_one_trace_per_method_with_ends_marked():
    df = pd.DataFrame({"phase": ["walk", "walk", "walk", "line", "line", "relax"],
                       "step": [0, 5, 10, 0, 1, 3], "accuracy": [0.99, math.nan, 0.97, 0.99, 0.1, 0.5],
                       "accuracy_b": [0.1, math.nan, 0.8, 0.1, 0.9, 0.5]})
    fig = figures.two_task_plane(df, ("mnist", "fashion-mnist"))
    assert [t.name for t in fig.data] == ["geodesic walk", "straight line A→B (weight averaging)"]  # relax rows: energy
    assert list(fig.data[0].x) == [0.99, 0.97] and list(fig.data[0].y) == [0.1, 0.8]  # rows without scores dropped
    assert list(fig.data[0].marker.size) == [11, 11] and "mnist" in fig.layout.xaxis.title.text


def checked_frame(run="r"):
    return pd.DataFrame([
        {"step": 0, "run": run, "step_length": 0.0, "linearity": math.nan, "eps": 0.1, "rejected": 0},
        {"step": 1, "run": run, "step_length": 0.2, "linearity": 30.0, "eps": 0.025, "rejected": 1},
        {"step": 2, "run": run, "step_length": 0.1, "linearity": 2.0, "eps": 0.05, "rejected": 0},
        {"step": 3, "run": run, "step_length": 0.1, "linearity": 1.5, "eps": 0.1, "rejected": 0}])


def test_linearity_draws_ratio_eps_and_rejected_steps():
    fig = figures.linearity(pd.concat([checked_frame("a"), checked_frame("b")]), "note")
    ratio = [t for t in fig.data if t.yaxis == "y"]
    assert [list(t.y) for t in ratio] == [[30.0, 2.0, 1.5]] * 2  # the start row (no step) is not drawn
    marks = [t for t in fig.data if t.mode == "markers"]
    assert [list(t.x) for t in marks] == [[1], [1]] and list(marks[0].y) == [0.025]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"
    assert figures.rejections(checked_frame()) == (1, 3)


def test_linearity_of_runs_made_before_the_check_is_empty():
    old = steps_frame()
    assert not figures.has_linearity(old) and len(figures.linearity(old).data) == 0
    assert figures.rejections(old) == (0, 0)
