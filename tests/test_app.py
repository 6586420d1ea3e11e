"""Every page through streamlit's AppTest: widgets present, no exception, short runs on mlp complete, figures drawn."""

import pytest
from streamlit.testing.v1 import AppTest

from app import state
from geodesic import jobs, models, runs

MAIN = str(state.jobs.REPO / "app" / "main.py")


@pytest.fixture(autouse=True)
def runs_dir(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "app-runs"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    return root


TITLES = {"sparsify": "Sparsify", "candidates": "Candidate paths", "trajectories": "Weight trajectories",
          "runs": "Runs on disk", "theory": "Theory", "playground": "Playground", "damage": "Damage",
          "two_tasks": "Two tasks"}


def page(name: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=90)
    at.run()
    if name != "sparsify":
        at.switch_page(f"views/{name}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith(TITLES[name])
    return at


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def finish(at: AppTest, key: str, timeout: float = 90) -> jobs.Job:
    job = state.registry().get(at.session_state[key])
    assert job is not None
    jobs.wait(job, timeout)
    assert job.status == "done", job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return job


def test_no_pages_directory_beside_main():
    """A `pages/` folder next to main.py switches Streamlit to v1 multipage mode until st.navigation first runs:
    on a fresh server a direct URL such as /damage would run that file alone, without navigation."""
    assert not (state.jobs.REPO / "app" / "pages").exists()
    assert len(list((state.jobs.REPO / "app" / "views").glob("*.py"))) == 8


def test_navigation_lists_every_page():
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value.startswith("Sparsify")


def test_sparsify_short_mlp_run_completes(runs_dir):
    at = page("sparsify")
    labels = {w.label for w in at.number_input} | {w.label for w in at.selectbox} | {w.label for w in at.slider}
    for want in ("β", "ε (|θ|² ≤ ε)", "Probe batch B", "Seed", "Max steps", "Output map φ", "Filters to zero",
                 "Pull ρ toward the start's function", "Relax steps (after arrival)", "Dataset (metric + evaluation)"):
        assert want in labels, want
    at.selectbox(key="sp-ckpt").set_value("mlp-mnist").run()
    at.slider[0].set_value(2)
    [w for w in at.number_input if w.label == "Max steps"][0].set_value(6)
    [w for w in at.number_input if w.label == "Test images for accuracy"][0].set_value(200)
    at.button(key="sp-start").click().run()
    job = finish(at, "sp-job")
    assert len(job.rows) == 7 and runs.load_run(job.run_dir).meta["status"] == "max steps"
    assert charts(at) == 2  # curves + heatmap
    assert any("done" in m.value for m in at.markdown)


def test_sparsify_presets_fill_in_the_settings():
    from geodesic.experiments import SparsifyConfig, recommended

    at = page("sparsify")
    for preset, cfg in (("benchmarked for lenet60", recommended()), ("the paper's algorithm (literal)", SparsifyConfig())):
        at.radio(key="sp-preset").set_value(preset).run()
        assert not at.exception
        values = {w.label: w.value for w in at.number_input}
        assert values["Pull ρ toward the start's function"] == cfg.pull
        assert values["Relax steps (after arrival)"] == cfg.relax_steps
        assert values["ε (|θ|² ≤ ε)"] == cfg.path.eps and values["β"] == cfg.path.beta
        assert [w for w in at.selectbox if w.label == "Which filters"][0].value == cfg.strategy


def test_sparsify_rejects_a_corrupt_upload(tmp_path):
    at = page("sparsify")
    at.selectbox(key="sp-ckpt").set_value("upload a .safetensors…").run()
    assert not at.exception
    # AppTest cannot drive st.file_uploader; the page's validation goes through models.load → CheckpointError,
    # tested here on the same call the page makes.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(models.CheckpointError, match="not a readable"):
        models.load(bad, "mlp")


def test_candidates_page_runs_two_paths_and_marks_the_shortest():
    at = page("candidates")
    at.selectbox(key="cand-ckpt").set_value("mlp-mnist").run()
    at.slider[0].set_value(2)
    at.slider[1].set_value(2)
    at.number_input(key="cand-s").set_value(4)
    at.number_input(key="cand-n").set_value(200)
    at.button(key="cand-start").click().run()
    finish(at, "cand-job", 120)
    assert any("Shortest" in s.value for s in at.success)
    assert len(at.dataframe) == 1 and charts(at) == 1


@pytest.fixture
def a_run(runs_dir):
    """At least one finished mlp run on disk (made here when the tests run alone)."""
    if not runs.list_runs(runs_dir):
        from geodesic.experiments import SparsifyConfig
        from geodesic.path import PathConfig

        cfg = SparsifyConfig(filters=2, path=PathConfig(max_steps=6, snapshot_every=2))
        job = jobs.Registry().start("s", jobs.sparsify_job(str(jobs.CHECKPOINTS / "mlp-mnist.safetensors"), cfg,
                                                           "mnist", eval_size=200, root=runs_dir))
        assert jobs.wait(job, 60).status == "done", job.error
    return runs.list_runs(runs_dir)[0]


def test_trajectories_page_draws_pca(a_run):
    at = page("trajectories")
    assert at.radio[0].value == "PCA" and charts(at) == 1
    at.radio[0].set_value("UMAP").run(timeout=120)  # first UMAP call compiles numba kernels (~20 s)
    assert not at.exception, [e.value for e in at.exception]
    assert charts(at) == 1 and "Weight trajectories, UMAP" in at.get("plotly_chart")[0].proto.spec


def test_runs_page_lists_opens_and_deletes(a_run, runs_dir):
    at = page("runs")
    assert len(at.dataframe) == 1 and charts(at) >= 1
    assert at.multiselect[0].value == [a_run.id]
    labels = {b.label for b in at.get("download_button")}
    assert {"metrics.csv", "metrics.parquet", "final.safetensors", "snapshots.safetensors"} <= labels
    at.checkbox(key=f"confirm-{a_run.id}").check().run()
    at.button(key=f"del-{a_run.id}").click().run()
    assert not at.exception and not a_run.dir.exists()


def test_theory_page_has_equations():
    at = page("theory")
    assert len(at.latex) >= 5


def test_playground_draws_the_path():
    at = page("playground")
    assert charts(at) == 1 and len(at.slider) >= 3


def test_damage_race_completes():
    at = page("damage")
    at.selectbox(key="dmg-ckpt").set_value("mlp-mnist").run()
    [w for w in at.number_input if w.label.startswith("Recovery steps")][0].set_value(4)
    at.button(key="dmg-start").click().run()
    job = finish(at, "dmg-job")
    assert set(job.frame()["method"]) == {"geodesic", "sgd"} and len(job.run_dirs) == 2
    assert charts(at) == 1 and len(at.metric) == 3 and len(at.dataframe) == 1


def test_two_tasks_walk_completes():
    at = page("two_tasks")
    at.selectbox(key="tt-ckpt").set_value("mlp-mnist").run()
    at.number_input(key="tt-s").set_value(4)
    at.button(key="tt-start").click().run()
    job = finish(at, "tt-job")
    assert set(job.frame()["phase"]) == {"walk", "line", "finetune"}  # both baselines on by default
    assert job.frame()["accuracy_b"].notna().sum() >= 1 and charts(at) == 2
