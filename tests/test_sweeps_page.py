"""The Sweeps page on a real (tiny) sweep: the front with error bars, the winners, the recipe; a point opens its
cells; a sweep still being written shows what has finished; the shipped example on a first visit."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import CKPT
from streamlit.testing.v1 import AppTest

from app import jobs
from geodesic.experiments import fronts
from geodesic.experiments.sweep import SweepSpec, run_sweep
from geodesic.store.source import Source

MAIN = str(jobs.REPO / "app" / "main.py")


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    """runs/sweeps/tiny: mlp, 2 sparsities × 3 methods × 3 seeds, a fraction of a second each."""
    root = tmp_path_factory.mktemp("sweep-runs")
    spec = SweepSpec(Source(str(CKPT / "mlp-mnist.safetensors"), "mnist", "bundled", 300), filters=(5, 10),
                     methods=("geodesic", "magnitude", "fip"), seeds=(0, 1, 2), data=(300,), seconds=0.4)
    run_sweep(spec, root / "sweeps" / "tiny", backend="loop")
    return root


def open_page(root, monkeypatch) -> AppTest:
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    at = AppTest.from_file(MAIN, default_timeout=90)
    at.run()
    at.switch_page("views/sweeps.py")
    at.run()  # the visit's first run: the picker (page.after_paint)
    assert at.selectbox(key="sw-pick") is not None and not at.get("plotly_chart")
    at.run()  # the rerun the browser asks for once it has drawn it: the front
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith("Sweeps")
    return at


def test_the_page_draws_the_front_and_the_recipe(sweep_root, monkeypatch):
    at = open_page(sweep_root, monkeypatch)
    assert at.selectbox(key="sw-pick").value == "sweeps/tiny"
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert "Accuracy against sparsity" in specs[0] and "Does the shortest path end most accurate" in specs[1]
    table = fronts.read_results(sweep_root / "sweeps" / "tiny")
    winners = at.dataframe[0].value
    assert list(winners["filters"]) == [5, 10]
    means = fronts.front(table).set_index(["filters", "method"])["mean"]
    top = means.groupby("filters").max()
    best = means[means == top.reindex(means.index, level="filters")].reset_index().groupby("filters")["method"].min()
    assert list(winners["best"]) == [best[5], best[10]]  # the page's winners are the table's (ties: first by name)


def test_a_point_opens_its_cells(sweep_root, monkeypatch):
    at = open_page(sweep_root, monkeypatch)
    at.session_state["sw-front"] = {"selection": {"points": [{"customdata": ["geodesic", 10.0]}]}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value.startswith("geodesic at filters 10: 3 cells")
    cells = [d.value for d in at.dataframe if "cell" in d.value.columns][0]
    assert sorted(cells["cell"]) == [f"geodesic-f10-d300-s{s}" for s in range(3)]
    assert any("run folders of 3 cells" in c.proto.spec for c in at.get("plotly_chart"))  # their path curves


def test_a_sweep_in_progress_shows_what_finished(sweep_root, tmp_path, monkeypatch):
    import shutil

    part = tmp_path / "sweeps" / "half"
    shutil.copytree(sweep_root / "sweeps" / "tiny", part)
    table = pd.read_parquet(part / "results.parquet")
    table.iloc[:4].to_parquet(part / "results.parquet", index=False)  # 4 of 18 cells so far
    at = open_page(tmp_path, monkeypatch)
    assert "4 cells finished" in " ".join(c.value for c in at.caption)
    assert at.session_state["sw-drawn"] == (str(part), fronts.version(part))  # what the 5-s watcher compares with
    table.to_parquet(part / "results.parquet", index=False)  # the other 14 finish
    assert at.session_state["sw-drawn"][1] != fronts.version(part)
    at.run()
    assert "18 cells finished" in " ".join(c.value for c in at.caption)


def test_the_shipped_example_shows_on_a_first_visit(tmp_path, monkeypatch):
    at = open_page(tmp_path, monkeypatch)  # an empty runs folder
    assert at.selectbox(key="sw-pick").value == "example · front-lenet60-fashion-mnist"  # by name, not file time
    assert "Accuracy against sparsity" in at.get("plotly_chart")[0].proto.spec


def test_a_recal_variant_draws_dashed_in_its_methods_colour():
    from app import sweep_figures

    stats = pd.DataFrame({"method": ["magnitude", "magnitude", "magnitude+recal", "magnitude+recal"],
                          "filters": [5, 10, 5, 10], "mean": [0.9, 0.8, 0.92, 0.85], "sd": [0.01] * 4,
                          "seeds": [3] * 4})
    lines = {t.name: t.line for t in sweep_figures.front(stats).data}
    assert lines["magnitude+recal"].color == lines["magnitude"].color == sweep_figures.COLORS["magnitude"]
    assert (lines["magnitude"].dash, lines["magnitude+recal"].dash) == ("solid", "dash")
