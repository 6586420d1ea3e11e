"""The Task sequence page and its job: a sequence learned in the app fills each method's accuracy matrix, the
saved runs are drawn on a later visit, and the figures read R from the rows the engine writes."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import open_page

from app import figures, jobs
from geodesic.experiments.continual import LearnConfig
from geodesic.experiments.sequence_cells import SequenceSpec
from geodesic.infra.lifecycle import Status
from geodesic.store import runs

SPEC = SequenceSpec("split-mnist", "domain", ("finetune", "geodesic"), (0,), "mlp", data_source="bundled",
                    learn=replace(LearnConfig(), steps=15, memory=10))


def test_figures_read_the_matrix_from_the_rows():
    rows = pd.DataFrame([{"task": -1, "acc.0": 0.5, "acc.1": 0.4}, {"task": 0, "acc.0": 0.9, "acc.1": 0.45},
                         {"task": 1, "acc.0": 0.7, "acc.1": 0.95}])
    assert np.array_equal(figures.sequence_matrix(rows), [[0.9, 0.45], [0.7, 0.95]])
    heat = figures.accuracy_matrix(rows.iloc[:2], ["a", "b"], "m")
    z = np.asarray(heat.data[0].z, dtype=float)
    assert z[0].tolist() == [0.9, 0.45] and np.isnan(z[1]).all()  # the second task not learned yet
    curves = figures.task_curves(rows, ["a", "b"], "m")
    assert [list(t.y) for t in curves.data] == [[0.5, 0.9, 0.7], [0.4, 0.45, 0.95]] and list(curves.data[0].x) == [0, 1, 2]
    scores = figures.sequence_scores(pd.DataFrame({"method": ["x"], "ACC": [0.8], "BWT": [-0.1]}))
    assert list(scores.data[0].y) == [0.8] and list(scores.data[1].y) == [-0.1]


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    return root


def test_a_sequence_job_and_the_page_that_shows_it_saved(runs_root):
    job = jobs.wait(jobs.Registry().start("sequence", jobs.sequence_job(SPEC, 0, root=runs_root)), 120)
    assert job.status is Status.DONE, job.error
    df = job.frame()
    assert list(dict.fromkeys(df["method"])) == ["finetune", "geodesic"] and len(df) == 2 * 6  # b and 5 tasks each
    assert [s["method"] for s in job.info["scores"]] == ["finetune", "geodesic"]
    for folder, score in zip(job.run_dirs, job.info["scores"]):
        run = runs.load_run(folder)
        assert run.meta["kind"] == "sequence" and run.meta["group"] == job.info["group"]
        R = figures.sequence_matrix(run.metrics)
        assert R.shape == (5, 5) and score["ACC"] == pytest.approx(R[-1].mean())
    at = open_page("task_sequence")
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    shown = " ".join(titles)
    for method in ("finetune", "geodesic"):
        assert f"Accuracy matrix: {method}" in shown and f"Accuracy on each task as tasks are learned: {method}" in shown
    assert "ACC and BWT per method" in shown
    assert any("No sequence on this server yet" in i.value for i in at.info)


def test_a_first_visit_shows_the_shipped_sequence(runs_root):
    at = open_page("task_sequence")
    shown = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "shipped example" in " ".join(i.value for i in at.info)
    for method in ("finetune", "replay", "geodesic"):
        assert f"Accuracy matrix: {method}" in shown


def test_the_trajectories_page_can_embed_a_sequence(runs_root):
    """The path through weight space task after task: the shipped sequences' snapshots are offered there."""
    from app import run_folders

    offered = [f for f in run_folders.list_runs() if f.meta.get("kind") == "sequence"]
    assert len(offered) == 3 and all(f.has_snapshots() and runs.snapshot_problem(f.run) is None for f in offered)
    at = open_page("trajectories")
    at.selectbox[0].set_value("mlp").run()
    assert sum("split-MNIST" in o for o in at.multiselect[0].options) == 3, at.multiselect[0].options
