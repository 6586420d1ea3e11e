"""Every page through streamlit's AppTest: widgets present, no exception, short runs on mlp complete, figures drawn;
damaged run folders cost one line each; user strings shown as plain text; deletion refused where it must be;
every page's controls drawn before the engine (torch) is loaded."""

import ast
import base64
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from app import choices, job_panel, jobs, picker, run_folders
from app.page import md
from geodesic.infra.lifecycle import Status
from geodesic.store import runs

MAIN = str(jobs.REPO / "app" / "main.py")
MNIST = jobs.Source(str(jobs.CHECKPOINTS / "mlp-mnist.safetensors"), "mnist", eval_size=200)


@pytest.fixture(autouse=True)
def runs_dir(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "app-runs"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    return root


@pytest.fixture
def fresh_root(tmp_path, monkeypatch):
    """An empty runs root of this test's own."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    return root


# the first heading of each page (app/views/<stem>.py)
TITLES = {"sparsify": "Sparsify", "candidates": "Candidate paths", "trajectories": "Weight trajectories",
          "runs": "Runs on disk", "theory": "Theory", "playground": "Playground", "damage": "Damage",
          "two_tasks": "Two tasks", "sweeps": "Sweeps", "task_sequence": "Task sequence"}


def page(name: str) -> AppTest:
    """Page `name` as a browser opens it: the visit's first run (its controls), then the rerun the browser asks for
    once it has drawn them (page.after_paint), which draws the saved runs' tables and charts."""
    at = open_page(name)
    assert at.title[0].value.startswith(TITLES[name])
    return at


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# the charts of one finished mlp sparsify run opened on the Runs page (32 groups, none zeroed by a 4-step walk)
RUN_CHARTS = ["Along the path", "Linearity of the steps", "Per-filter norms: 0 of 32 exactly zero"]
PLAYGROUND = "Two-weight landscape: f(x, w) = tanh(w1·x + w2·x²)"


def shows_run_charts(at: AppTest) -> bool:
    titles = chart_titles(at)
    return len(titles) == 3 and all(t.startswith(want) for t, want in zip(titles, RUN_CHARTS))


def plotly_array(a) -> np.ndarray:
    """An array as a plotly figure's JSON carries it: a list, or {"dtype", "bdata": base64 of the raw values}."""
    if isinstance(a, dict):
        return np.frombuffer(base64.b64decode(a["bdata"]), dtype=a["dtype"])
    return np.asarray(a, dtype=float)


def chart_titles(at: AppTest) -> list[str]:
    """The titles of the page's plotly charts, in order, read from the figures the page sent."""
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def finish(at: AppTest, key: str, timeout: float = 90) -> jobs.Job:
    job = job_panel.registry().get(at.session_state[key])
    assert job is not None
    jobs.wait(job, timeout)
    assert job.status is Status.DONE, job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return job


def short_cfg(steps: int = 6):
    """The literal algorithm toward 2 zero neurons for a few steps, snapshots every 2 steps."""
    from geodesic.core.path import PathConfig
    from geodesic.experiments.sparsify import PRESETS

    return dataclasses.replace(PRESETS["literal"], filters=2, path=PathConfig(max_steps=steps, snapshot_every=2))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One finished mlp sparsify run folder (metrics, snapshots, final weights), written by the engine."""
    job = jobs.Registry().start("s", jobs.sparsify_job(MNIST, short_cfg(), root=tmp_path_factory.mktemp("good")))
    assert jobs.wait(job, 90).status is Status.DONE, job.error
    return job.run_dir


def copy_run(src: Path, root: Path, name: str, **meta) -> Path:
    """A copy of run folder `src` named `name` under root, with meta.json fields replaced by `meta`."""
    dest = root / name
    shutil.copytree(src, dest)
    if meta:
        m = json.loads((dest / "meta.json").read_text())
        (dest / "meta.json").write_text(json.dumps({**m, **meta}))
    return dest


@pytest.fixture
def a_run(good_run, runs_dir):
    """A finished mlp run in the shared runs root."""
    return good_run if good_run.parent == runs_dir else copy_run(good_run, runs_dir, f"{good_run.name}-{os.urandom(3).hex()}")


# --- pages ------------------------------------------------------------------------------------------------


def test_no_pages_directory_beside_main():
    """A `pages/` folder next to main.py switches Streamlit to v1 multipage mode until st.navigation first runs:
    on a fresh server a direct URL such as /damage would run that file alone, without navigation."""
    assert not (jobs.REPO / "app" / "pages").exists()
    assert {p.stem for p in (jobs.REPO / "app" / "views").glob("*.py")} == set(TITLES)  # each page's title checked


def navigation_in_main() -> dict[str, str]:
    """{view file: title} of every st.Page(PAGES / "<file>", title=…) in app/main.py."""
    pages = {}
    for node in ast.walk(ast.parse(Path(MAIN).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Page":
            title = next(k.value.value for k in node.keywords if k.arg == "title")
            pages[node.args[0].right.value] = title
    return pages


def test_navigation_lists_every_page():
    """Every view is a page of app/main.py's navigation, registered under its title, and opens from it."""
    pages = navigation_in_main()
    assert set(pages) == {p.name for p in (jobs.REPO / "app" / "views").glob("*.py")}
    at = AppTest.from_file(MAIN, default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    registered = {Path(i["script_path"]).name: i["page_name"] for i in at._registered_pages.values()}
    assert registered == pages  # what the sidebar lists: every page, each under its title
    for file, title in pages.items():
        at.switch_page(f"views/{file}").run()
        assert not at.exception, (title, [e.value for e in at.exception])
        assert at.title[0].value.startswith(TITLES[file[:-3]]), (title, at.title[0].value)


def test_sparsify_short_mlp_run_completes(runs_dir):
    at = page("sparsify")
    labels = {w.label for w in at.number_input} | {w.label for w in at.selectbox} | {w.label for w in at.slider}
    for want in ("β", "ε (|θ|² ≤ ε)", "Probe batch B", "Seed", "Max steps", "Output map φ", "Filters to zero",
                 "Pull ρ toward the start's function", "Relax steps (after arrival)", "Dataset (metric + evaluation)"):
        assert want in labels, want
    at.selectbox(key="sp-ckpt").set_value("mlp-mnist").run()
    at.radio(key="sp-preset").set_value("the paper's algorithm (literal)").run()
    at.slider[0].set_value(2)
    [w for w in at.number_input if w.label == "Max steps"][0].set_value(6)
    [w for w in at.number_input if w.label == "Test images for accuracy"][0].set_value(200)
    at.button(key="sp-start").click().run()
    job = finish(at, "sp-job")
    assert len(job.rows) == 7 and runs.load_run(job.run_dir).meta["status"] == "missed"
    # curves, filter norms and, since every step checks itself, each step's linearity and ε
    assert chart_titles(at)[0] == "Along the path" and chart_titles(at)[2] == "Linearity of the steps"
    ratios = plotly_array(json.loads(at.get("plotly_chart")[2].proto.spec)["data"][0]["y"])
    assert len(ratios) == 6 and (ratios > 0).all()  # one measured ratio per step taken
    assert any("done" in m.value for m in at.markdown)


def test_a_diverged_path_says_so_and_what_to_try(tmp_path, fresh_root):
    """The job runs to its end but its path diverged: the page says so. (Weights already out of range, the way such
    a path was made before, are refused when the checkpoint loads: tests/test_hostile.py.)"""
    from geodesic.infra.lifecycle import DIVERGED_HINT

    job = job_panel.registry().start("sparsify", lambda job: {"status": "diverged"})
    assert jobs.wait(job, 90).status is Status.DIVERGED, job.error
    at = page("sparsify")
    at.session_state["sp-job"] = job.id
    at.run()
    assert any(w.value.replace("\\", "").startswith(f"The path diverged: {DIVERGED_HINT}") for w in at.warning)


def test_a_walk_cut_and_restored_says_what_budget_would_let_it_arrive(fresh_root):
    """A run whose summary says its walk was restored by descent: the page says so and names the budget the walk
    estimated (the real run's summary: tests/test_path.py, tests/test_cli.py)."""
    summary = {"status": "missed", "restore_steps": 292, "budget_to_arrive": 2400}
    job = job_panel.registry().start("sparsify", lambda job: summary)
    assert jobs.wait(job, 90).status is Status.DONE, job.error
    at = page("sparsify")
    at.session_state["sp-job"] = job.id
    at.run()
    said = [w.value.replace("\\", "") for w in at.info]
    assert any("restored by descent" in t and "292 steps" in t and "about 2,400 CPU seconds" in t for t in said), said


def test_sparsify_presets_fill_in_the_settings():
    at = page("sparsify")
    assert at.radio(key="sp-preset").value == list(choices.PRESETS)[0]
    for preset in reversed(list(choices.PRESETS)):
        cfg = choices.preset_config(preset)
        at.radio(key="sp-preset").set_value(preset).run()
        assert not at.exception
        values = {w.label: w.value for w in at.number_input}
        assert values["Pull ρ toward the start's function"] == cfg.pull
        assert values["Relax steps (after arrival)"] == cfg.relax_steps
        assert values["CPU seconds (walk + relaxation)"] == cfg.seconds
        assert values["ε (|θ|² ≤ ε)"] == cfg.path.eps and values["β"] == cfg.path.beta
        assert values["Probe batch B"] == cfg.path.probe and values["Seed"] == cfg.path.seed
        assert [w for w in at.selectbox if w.label == "Which filters"][0].value == cfg.strategy
        assert [w for w in at.selectbox if w.label == "Output map φ"][0].value == cfg.path.phi


def test_sparsify_rejects_a_corrupt_upload(fresh_root):
    """A corrupt file uploaded through the page: a clear error, nothing kept; a good upload is then used, and a
    corrupt one after it leaves the good one in use."""
    at = page("sparsify")
    at.selectbox(key="sp-ckpt").set_value("upload a .safetensors…").run()
    at.selectbox(key="sp-arch").set_value("mlp").run()
    at.file_uploader(key="sp-up").set_value(("broken.safetensors", b"\x00garbage" * 10, "application/octet-stream"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("broken.safetensors cannot be used as a mlp checkpoint" in e.value.replace("\\", "") for e in at.error)
    assert not list((fresh_root / "uploads").iterdir())  # neither the file nor a temporary copy was kept
    assert "sp-upload-ok" not in at.session_state and "sp-start" not in [b.key for b in at.button]  # nothing in use

    good = (jobs.CHECKPOINTS / "mlp-mnist.safetensors").read_bytes()
    at.file_uploader(key="sp-up").set_value(("mine.safetensors", good, "application/octet-stream")).run()
    assert not at.exception and not at.error
    assert any("Using uploaded mine.safetensors as mlp" in s.value.replace("\\", "") for s in at.success)
    assert [p.name for p in (fresh_root / "uploads").iterdir()] == ["mine-mlp.safetensors"]
    at.file_uploader(key="sp-up").set_value(("broken.safetensors", b"\x00garbage" * 10, "application/octet-stream"))
    at.run()
    assert any("broken.safetensors cannot be used" in e.value.replace("\\", "") for e in at.error)
    assert any("Using uploaded mine.safetensors" in s.value.replace("\\", "") for s in at.success)
    assert [p.name for p in (fresh_root / "uploads").iterdir()] == ["mine-mlp.safetensors"]


def load_own(at: AppTest, key: str, path, spec: str) -> AppTest:
    """Choose "your own architecture" in the picker `key`, type both paths, press Load."""
    at.selectbox(key=f"{key}-ckpt").set_value(picker.OWN_ARCH).run()
    at.text_input(key=f"{key}-own-path").input(str(path))
    at.text_input(key=f"{key}-own-arch").input(spec)
    at.button(key=f"{key}-own-load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_picker_loads_ones_own_architecture_and_warns_that_it_runs_code(own_arch):
    spec, ckpt, _ = own_arch
    at = page("sparsify")
    at.selectbox(key="sp-ckpt").set_value(picker.OWN_ARCH).run()
    assert any("runs its Python code on this machine" in w.value for w in at.warning)  # before anything is loaded
    assert "sp-start" not in [b.key for b in at.button]
    load_own(at, "sp", ckpt, spec)
    assert not at.error
    assert any("Using" in s.value and "small-0.safetensors" in s.value.replace("\\", "") for s in at.success)
    ok = at.session_state["sp-own-ok"]
    assert ok["arch"] == spec and ok["path"] == str(ckpt) and len(ok["groups"]) == 10
    assert ok["groups"][:2] == ["conv1[0]", "conv1[1]"] and ok["groups"][-1] == "conv2[5]"  # from the Checkpoint
    assert at.selectbox(key="sp-own-data").value == "mnist"  # no card: the user says which data
    filters = [w for w in at.slider if w.label == "Filters to zero"][0]
    assert filters.max == 10 and "sp-start" in [b.key for b in at.button]
    assert any("runs its Python code" in w.value for w in at.warning)  # still said while it is in use


def test_picker_shows_a_bad_architecture_as_one_error_and_keeps_the_last_good_net(own_arch, tmp_path):
    spec, ckpt, _ = own_arch
    at = page("sparsify")
    load_own(at, "sp", ckpt, spec.replace(":make", ":nothing"))
    assert len(at.error) == 1 and "has no 'nothing'" in at.error[0].value.replace("\\", "")
    assert "sp-own-ok" not in at.session_state
    assert "sp-start" not in [b.key for b in at.button]  # nothing in use
    load_own(at, "sp", tmp_path / "missing.safetensors", spec)
    assert len(at.error) == 1 and "no such checkpoint file" in at.error[0].value.replace("\\", "")
    load_own(at, "sp", ckpt, "not a spec")
    assert len(at.error) == 1 and "give FILE.py:FACTORY" in at.error[0].value.replace("\\", "")
    load_own(at, "sp", ckpt, spec)
    assert not at.error and at.session_state["sp-own-ok"]["arch"] == spec
    load_own(at, "sp", jobs.CHECKPOINTS / "mlp-mnist.safetensors", spec)  # weights of another net
    assert len(at.error) == 1 and "do not match" in at.error[0].value.replace("\\", "")
    assert at.session_state["sp-own-ok"]["path"] == str(ckpt)  # the last good net stays in use
    assert any("small-0.safetensors" in s.value.replace("\\", "") for s in at.success)


def test_sparsify_short_run_of_ones_own_architecture_completes_and_exports(own_arch, fresh_root):
    spec, ckpt, _ = own_arch
    at = load_own(page("sparsify"), "sp", ckpt, spec)
    at.radio(key="sp-preset").set_value("the paper's algorithm (literal)").run()
    [w for w in at.slider if w.label == "Filters to zero"][0].set_value(2)
    [w for w in at.number_input if w.label == "Max steps"][0].set_value(6)
    [w for w in at.number_input if w.label == "Test images for accuracy"][0].set_value(200)
    at.button(key="sp-start").click().run()
    job = finish(at, "sp-job")
    meta = runs.load_run(job.run_dir).meta
    assert len(job.rows) == 7 and meta["arch"] == spec and meta["checkpoint"] == str(ckpt)
    assert job.info["groups"] == at.session_state["sp-own-ok"]["groups"]
    assert chart_titles(at)[2] == "Linearity of the steps"
    zip_names = compact_zip(job.run_dir)  # the Runs page exports it as it exports a zoo net's run
    assert zip_names == ["model.onnx", "model.safetensors", "model.json"]


@pytest.mark.parametrize("name,key,steps", [("candidates", "cand", "cand-s"), ("damage", "dmg", None),
                                            ("two_tasks", "tt", "tt-s")])
def test_every_page_runs_ones_own_architecture(own_arch, fresh_root, name, key, steps):
    """The picked architecture reaches each page's job (jobs.Source(arch=…)): a short job completes and its run
    folders record it; the Damage page's slider counts the net's own groups; no shipped task-B net for Two tasks."""
    spec, ckpt, _ = own_arch
    at = load_own(page(name), key, ckpt, spec)
    if name == "candidates":
        at.slider[0].set_value(2)
        at.slider[1].set_value(2)
        at.number_input(key="cand-n").set_value(100)
    if name == "damage":
        assert [w for w in at.slider if w.label == "Filters ablated"][0].max == 10
        [w for w in at.number_input if w.label.startswith("Recovery steps")][0].set_value(2)
    if name == "two_tasks":
        assert at.multiselect(key="tt-base").options == ["fine-tune A on B"]
    if steps:
        at.number_input(key=steps).set_value(2)
    at.button(key=f"{key}-start").click().run()
    job = finish(at, f"{key}-job", 300)  # candidates: a local Ray and its workers start first (slow under load)
    assert job.run_dirs and all(runs.load_run(d).meta["arch"] == spec for d in job.run_dirs)


def compact_zip(run_dir: Path) -> list[str]:
    """Open run_dir on the Runs page, press "Prepare compact net": the names in the zip its download serves."""
    import io
    import zipfile

    at = page("runs")
    at.multiselect[0].set_value([run_dir.name]).run()
    assert "compact net (.zip: ONNX + safetensors)" not in {b.label for b in at.get("download_button")}
    at.button(key=f"prep-{run_dir}").click().run(timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert "compact net (.zip: ONNX + safetensors)" in {b.label for b in at.get("download_button")}
    assert f"prep-{run_dir}" not in [b.key for b in at.button]  # the download took the button's place
    stamp, data, caption = at.session_state[f"compact-{run_dir}"]  # what the download serves
    assert "groups taken out" in caption
    at.run()  # kept: a rerun serves the same bytes without exporting again
    assert at.session_state[f"compact-{run_dir}"][1] is data
    return zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_runs_page_serves_the_compact_net_of_a_run(a_run):
    assert compact_zip(a_run) == ["model.onnx", "model.safetensors", "model.json"]


def test_runs_page_says_why_a_compact_net_cannot_be_made(good_run, fresh_root):
    broken = copy_run(good_run, fresh_root, "broken")
    (broken / "final.safetensors").write_bytes(b"\x00garbage" * 10)
    at = page("runs")
    at.multiselect[0].set_value(["broken"]).run()
    at.button(key=f"prep-{broken}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "cannot export the compact net of broken" in at.error[0].value.replace("\\", "")
    assert f"prep-{broken}" in [b.key for b in at.button]  # it can be tried again


def test_candidates_page_runs_two_paths_and_marks_the_shortest():
    at = page("candidates")
    at.selectbox(key="cand-ckpt").set_value("mlp-mnist").run()
    at.slider[0].set_value(2)
    at.slider[1].set_value(2)
    at.number_input(key="cand-s").set_value(4)
    at.number_input(key="cand-n").set_value(200)
    at.button(key="cand-start").click().run()
    finish(at, "cand-job", 300)  # a local Ray and its workers start first
    assert any("Shortest" in s.value for s in at.success)
    assert len(at.dataframe) == 1 and charts(at) == 1


def test_trajectories_page_draws_pca(a_run):
    at = page("trajectories")
    assert at.radio[0].value == "PCA" and charts(at) == 1
    at.radio[0].set_value("UMAP").run(timeout=120)  # first UMAP call compiles numba kernels (~20 s)
    assert not at.exception, [e.value for e in at.exception]
    assert charts(at) == 1 and "Weight trajectories, UMAP" in at.get("plotly_chart")[0].proto.spec


def test_runs_page_lists_opens_and_deletes(a_run, runs_dir):
    at = page("runs")
    assert len(at.dataframe) == 1 and shows_run_charts(at), chart_titles(at)
    at.multiselect[0].set_value([a_run.name]).run()
    labels = {b.label for b in at.get("download_button")}
    assert {"metrics.csv", "metrics.parquet", "final.safetensors"} <= labels
    at.checkbox(key=f"confirm-{a_run}").check().run()
    at.button(key=f"del-{a_run}").click().run()
    assert not at.exception and not a_run.exists()


def test_theory_page_has_equations():
    at = page("theory")
    shown = " ".join(eq.value for eq in at.latex)
    for equation in (r"G(w) = J^\top J", r"\arg\min_\theta\; \theta^\top G\, \theta", r"\theta(\mu) = \frac{\beta}{2\mu}",
                     r"v_{\text{sparsify}} = -w \odot \mathbb{1}_T", r"L = \sum_t \sqrt{\theta_t^\top G_t\, \theta_t}"):
        assert equation in shown, equation  # the metric, the tangent step, its secular solution, a target, the length


def test_playground_draws_the_path():
    at = page("playground")
    assert chart_titles(at) == [PLAYGROUND] and [s.label for s in at.slider] == ["start w1", "start w2", "inputs x"]


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


def test_a_visits_first_run_draws_the_controls_and_leaves_the_charts_to_the_next(a_run):
    """The first run of a visit to a page draws its controls and a caption where the saved runs go; the rerun the
    browser asks for once it has drawn them (page.after_paint's timer) draws the table and the charts."""
    at = AppTest.from_file(MAIN, default_timeout=90).run()
    at.switch_page("views/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect[0].label == "Open / compare" and a_run.name in at.multiselect[0].options
    assert not at.dataframe and charts(at) == 0 and any("Reading the run folders" in c.value for c in at.caption)
    at.run()
    assert not at.exception and len(at.dataframe) == 1 and shows_run_charts(at), chart_titles(at)
    at.switch_page("views/playground.py").run()  # a new visit: again the controls first
    assert [s.label for s in at.slider] == ["start w1", "start w2", "inputs x"] and charts(at) == 0
    at.run()
    assert chart_titles(at) == [PLAYGROUND]


def test_extend_frame_matches_the_frame_built_at_once():
    """The live panel's frame, extended refresh by refresh, is the frame of all the rows (types included)."""
    rows = [{"step": i, "accuracy": 0.5 if i % 3 == 0 else float("nan"), "phase": "walk", "group_norms": [1.0, i]}
            for i in range(7)]
    held = None
    for n in (0, 1, 1, 4, 7):
        held = job_panel.extend_frame(held, rows[:n])
        pd.testing.assert_frame_equal(held[1], pd.DataFrame(rows[:n]))
    odd = rows + [{"step": 7, "accuracy": None, "phase": None, "group_norms": []}]  # other types: built anew
    pd.testing.assert_frame_equal(job_panel.extend_frame(held, odd)[1], pd.DataFrame(odd))


# --- damaged run folders ----------------------------------------------------------------------------------


def write_snapshots(folder: Path, tensors: dict | None, data: bytes | None = None) -> None:
    """Replace a run's snapshots (either layout) by one file holding `tensors`, or by the bytes `data`."""
    from safetensors.torch import save_file

    shutil.rmtree(folder / "snapshots", ignore_errors=True)
    (folder / "snapshots.safetensors").unlink(missing_ok=True)
    (folder / "snapshots").mkdir()
    target = folder / "snapshots" / "0000000.safetensors"
    if data is not None:
        target.write_bytes(data)
    else:
        save_file(tensors, str(target))


BAD = ("meta-is-a-list", "meta-not-json", "no-step-column", "metrics-garbage", "summary-is-a-string",
       "config-is-a-number")
BAD_SNAPSHOTS = ("snapshots-garbage", "snapshots-wrong-size", "snapshots-legacy-truncated")


@pytest.fixture
def damaged_root(good_run, fresh_root) -> Path:
    """One good run, a plain copy of it (same id in meta.json), and one folder for each kind of damage."""
    import torch

    copy_run(good_run, fresh_root, "0-good")
    copy_run(good_run, fresh_root, "0-good-copy")
    (copy_run(good_run, fresh_root, "meta-is-a-list") / "meta.json").write_text("[1, 2]")
    (copy_run(good_run, fresh_root, "meta-not-json") / "meta.json").write_text("{oops")
    d = copy_run(good_run, fresh_root, "no-step-column")
    pd.read_parquet(d / "metrics.parquet").drop(columns="step").to_parquet(d / "metrics.parquet")
    (copy_run(good_run, fresh_root, "metrics-garbage") / "metrics.parquet").write_bytes(b"PAR1 garbage")
    copy_run(good_run, fresh_root, "summary-is-a-string", summary="oops")
    copy_run(good_run, fresh_root, "config-is-a-number", config=3)
    write_snapshots(copy_run(good_run, fresh_root, "snapshots-garbage"), None, b"\x00garbage" * 8)
    write_snapshots(copy_run(good_run, fresh_root, "snapshots-wrong-size"),
                    {"w": torch.zeros(10), "step": torch.tensor(0)})
    d = copy_run(good_run, fresh_root, "snapshots-legacy-truncated")
    shutil.rmtree(d / "snapshots")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3, 25_450), "step": torch.arange(3)}, str(d / "snapshots.safetensors"))
    with open(d / "snapshots.safetensors", "r+b") as fh:
        fh.truncate(1000)
    return fresh_root


def warnings_naming(at: AppTest, names) -> set[str]:
    return {n for n in names for w in at.warning if n in w.value.replace("\\", "")}


@pytest.mark.parametrize("name", ["runs", "trajectories", "candidates"])
def test_bad_run_folders_cost_one_line_each(name, damaged_root):
    """Each damaged folder gets a one-line warning naming it; the page draws the good run and its copy."""
    at = page(name)  # no exception (checked in page())
    if name == "candidates":
        at.radio[0].set_value("runs I pick").run()
    picker = at.multiselect[0]
    assert {"0-good", "0-good-copy"} <= set(picker.options)  # listed, each keyed by its own folder
    picker.set_value(["0-good", "0-good-copy"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert warnings_naming(at, BAD) == set(BAD)
    if name == "trajectories":
        assert warnings_naming(at, BAD_SNAPSHOTS) == set(BAD_SNAPSHOTS)
        assert not set(BAD_SNAPSHOTS) & set(picker.options)
        assert charts(at) == 1 and any("same id" in w.value for w in at.warning)  # the copy is embedded once
    else:
        assert set(BAD_SNAPSHOTS) <= set(picker.options)  # their snapshots are not read here
        assert charts(at) >= 1
    if name == "runs":
        assert len(at.get("expander")) == 2 and any("same id as 0" in w.value for w in at.warning)
    if name == "candidates":
        assert set(at.dataframe[0].value["run"]) == {"0-good", "0-good-copy"}
    assert len(at.warning) <= len(BAD) + len(BAD_SNAPSHOTS) + 2


def test_a_listing_from_meta_alone_keeps_the_scans_order(damaged_root):
    """Before pandas is loaded, the pickers list the runs from their meta.json files: the folders the scan reads,
    in its order, plus those whose metrics.parquet is unreadable (the scan names them below the controls)."""
    scanned = [f.label for f in run_folders.scan_runs()[0]]
    root = jobs.runs_root()
    listed = [run_folders.Folder(runs.Run(d, m, None, ro)).label for d, m, ro in run_folders._listing(str(root), run_folders._stamp(root))]
    assert [n for n in listed if n not in ("no-step-column", "metrics-garbage")] == scanned
    assert {"no-step-column", "metrics-garbage"} <= set(listed) and not {"meta-is-a-list", "meta-not-json"} & set(listed)


# --- user strings shown as plain text ---------------------------------------------------------------------

MARKDOWN = {"markdown", "caption", "title", "header", "subheader", "success", "info", "warning", "error", "toast"}
LINK = "![x](http://example.com/a.png)"


def markdown_shown(at: AppTest) -> list[str]:
    """Every string the page renders as markdown: markdown elements, alerts, and labels and help of widgets
    and expanders (which read markdown too, images included)."""
    out = []

    def walk(node) -> None:
        if getattr(node, "type", None) in MARKDOWN:
            out.append(node.value)
        for attr in ("label", "help"):
            if isinstance(getattr(node, attr, None), str):
                out.append(getattr(node, attr))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


@pytest.mark.parametrize("name", ["runs", "trajectories", "candidates"])
def test_run_names_are_shown_as_plain_text(name, good_run, tmp_path, monkeypatch):
    """A run folder, its id and the runs root named like a markdown image: shown, never rendered as markdown."""
    root = tmp_path / "![r](http:example.com)"
    root.mkdir()
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    folder = "![x](http:example.com%2Fa.png)"
    copy_run(good_run, root, folder, id=LINK, group=LINK, model="mlp")
    copy_run(good_run, root, "0-other")
    (copy_run(good_run, root, "![y](http:example.com%2Fb.png)") / "meta.json").write_text("[]")  # a warning
    at = page(name)
    if name == "candidates":
        at.radio[0].set_value("runs I pick").run()
    assert folder in at.multiselect[0].options  # shown (as a plain option)
    at.multiselect[0].set_value([folder, "0-other"]).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = markdown_shown(at)
    assert any("example" in s for s in shown)  # the names do reach markdown (warnings, captions, labels)…
    for s in shown:  # …but escaped: no image, no link
        assert "![" not in s and "](" not in s, s


def test_markdown_escape_keeps_the_text():
    text = "![x](http://example.com/a.png) *b* `c` <img src=x> $y$ :red[z] a_b\nnext"
    escaped = md(text)
    assert "![" not in escaped and "](" not in escaped and "\n" not in escaped
    assert escaped.replace("\\", "") == text.replace("\n", " ")


# --- deleting -------------------------------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def folder(path: Path) -> run_folders.Folder:
    """A run folder as the pages hold it (geodesic.store.runs.load_run)."""
    return run_folders.Folder(runs.load_run(path))


def test_run_status_reads_stale_when_the_writer_is_gone(tmp_path):
    """The status the pages show is geodesic.store.runs.Run.status: "running" whose writer is gone reads "stale"."""
    here = platform.node()

    def status(**meta) -> Status:
        d = tmp_path / os.urandom(4).hex()
        d.mkdir()
        (d / "meta.json").write_text(json.dumps(meta))
        return folder(d).status

    assert status(status="running", pid=os.getpid(), host=here) is Status.RUNNING
    assert status(status="running", pid=dead_pid(), host=here) is Status.STALE
    assert status(status="running", host=here) is Status.RUNNING  # no pid recorded: cannot tell
    assert status(status="running", pid=True, host=here) is Status.RUNNING  # not a pid: cannot tell
    assert status(status="running", pid=dead_pid(), host="elsewhere") is Status.RUNNING  # another host: cannot tell
    assert status(status="done", pid=dead_pid(), host=here) is Status.DONE


def delete_controls(at: AppTest, folder: Path):
    at.multiselect[0].set_value([folder.name]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at.checkbox(key=f"confirm-{folder}"), at.button(key=f"del-{folder}")


def test_runs_page_refuses_to_delete_a_run_a_live_process_writes(good_run, fresh_root):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        created = time.strftime("%Y-%m-%dT%H:%M:%S")  # after the writer started, as a real run's
        live = copy_run(good_run, fresh_root, "live", status="running", pid=writer.pid, created=created)
        at = page("runs")
        assert at.dataframe[0].value.set_index("run").loc["live", "status"] == "running"
        confirm, delete = delete_controls(at, live)
        assert confirm.disabled and delete.disabled
        assert any(f"still being written by process {writer.pid}" in i.value.replace("\\", "") for i in at.info)
        with pytest.raises(ValueError, match="still being written"):
            run_folders.delete_run(folder(live))
        assert live.is_dir()
    finally:
        writer.kill()
        writer.wait()


def test_runs_page_shows_a_run_whose_writer_is_gone_as_stale_and_deletes_it(good_run, fresh_root):
    stale = copy_run(good_run, fresh_root, "stale", status="running", pid=dead_pid())
    at = page("runs")
    assert at.dataframe[0].value.set_index("run").loc["stale", "status"] == "stale"
    confirm, delete = delete_controls(at, stale)
    assert not confirm.disabled
    confirm.check().run()
    at.button(key=f"del-{stale}").click().run()
    assert not at.exception and not stale.exists()


def test_runs_page_refuses_to_delete_through_a_symlink(good_run, fresh_root, tmp_path):
    target = copy_run(good_run, tmp_path, "elsewhere")
    link = fresh_root / "linked"
    link.symlink_to(target, target_is_directory=True)
    at = page("runs")
    confirm, delete = delete_controls(at, link)
    assert confirm.disabled and delete.disabled
    assert any("symbolic link" in i.value for i in at.info)
    with pytest.raises(ValueError, match="symbolic link"):
        run_folders.delete_run(folder(link))
    assert link.is_symlink() and (target / "meta.json").is_file()


def test_runs_page_refuses_to_delete_the_run_of_an_active_job(good_run, fresh_root):
    import threading

    busy = copy_run(good_run, fresh_root, "busy")
    release = threading.Event()

    def hold(job):
        job.run_dirs.append(busy)
        release.wait(60)

    job = job_panel.registry().start("test-hold", hold)
    try:
        while not job.run_dirs:
            pass
        at = page("runs")
        confirm, delete = delete_controls(at, busy)
        assert confirm.disabled and delete.disabled
        assert any("belongs to a job that is still running" in i.value for i in at.info)
        with pytest.raises(ValueError, match="still running"):
            run_folders.delete_run(folder(busy))
    finally:
        release.set()
        jobs.wait(job, 10)
    assert run_folders.delete_refusal(folder(busy)) is None


def test_examples_are_listed_after_ones_own_runs_and_never_deleted(good_run, fresh_root):
    copy_run(good_run, fresh_root, "mine")
    listed, problems = run_folders.scan_runs()
    assert not problems and listed[0].name == "mine" and not listed[0].readonly
    examples = listed[1:]
    assert examples and all(f.readonly and f.label.startswith("example · ") for f in examples)
    assert "shipped example" in run_folders.delete_refusal(examples[0])
    with pytest.raises(ValueError, match="shipped example"):
        run_folders.delete_run(examples[0])
    assert examples[0].dir.is_dir()


def test_the_saved_race_is_ones_own_newest_before_the_examples(fresh_root):
    """The Damage page's saved race: the user's recover runs of one damage (one per method) before the shipped
    ones, with each run's metrics tagged by its method."""
    for method in ("sgd", "geodesic"):
        copy_run(runs.gallery_root() / f"recover-mnist-zero-{method}", fresh_root, f"mine-{method}",
                 example=False, group=None, method="ignored", config={"method": method})
    race = run_folders.newest_race(run_folders.scan_runs()[0])
    assert [(f.name, run_folders.recover_method(f)) for f in race] == [("mine-geodesic", "geodesic"), ("mine-sgd", "sgd")]
    df = run_folders.race_frame(race)
    assert list(df["method"].unique()) == ["geodesic", "sgd"] and len(df) == sum(len(f.metrics) for f in race)


# --- the first draw does not wait for the engine ----------------------------------------------------------


def test_torch_free_tables_match_the_engine():
    """What the pages draw before torch loads (app/choices.py) is what the engine says."""
    from geodesic.experiments import damage
    from geodesic.experiments import sparsify as experiments
    from geodesic.store import zoo

    for name in zoo.ZOO:
        assert choices.group_names(name) == [g.name for g in zoo.filter_groups(zoo.build(name))]
    assert choices.STRATEGIES == tuple(experiments.STRATEGIES) and choices.DAMAGE_KINDS == tuple(damage.KINDS)
    assert [p["engine"] for p in choices.PRESETS.values()] == list(experiments.PRESETS)
    assert choices.preset_config(list(choices.PRESETS)[0]) == experiments.SparsifyConfig()  # the first is the default
    for name, shown in choices.PRESETS.items():
        cfg = choices.preset_config(name)
        expected = {**{k: getattr(cfg, k) for k in ("strategy", "pull", "relax_steps", "relax_eps", "relax_eps_final",
                                                            "seconds")},
                    **{k: getattr(cfg.path, k) for k in ("phi", "beta", "eps", "probe", "seed", "adaptive",
                                                              "max_steps")}}
        assert {k: v for k, v in shown.items() if k != "engine"} == expected, name
    assert all(isinstance(s, Status) and not s.ended for s in jobs.ACTIVE)  # a job's statuses are the engine's


# every page's primary control, drawn with the engine never loaded (await_engine stops the script instead)
CONTROLS = {"sparsify": ("button", "sp-start"), "candidates": ("button", "cand-start"),
            "damage": ("button", "dmg-start"), "two_tasks": ("button", "tt-start"),
            "playground": ("slider", "start w1"), "runs": ("multiselect", "Open / compare"),
            "trajectories": ("multiselect", "Runs"), "sweeps": ("selectbox", "Sweep"), "theory": (None, None),
            "task_sequence": ("button", "seq-start")}

NO_ENGINE = r"""
import json, sys
import streamlit as st
from streamlit.testing.v1 import AppTest
from app import engine
engine.await_engine = lambda *a, **k: st.stop()  # anything that needs the engine ends the script there
engine.WARM_DELAY_S = 1e9  # and the background import never starts
out = {}
for name, (kind, key) in json.loads(sys.argv[1]).items():
    at = AppTest.from_file(sys.argv[2], default_timeout=60).run()
    if name != "sparsify":
        at.switch_page(f"views/{name}.py").run()
    if kind == "button":
        found = [b.key for b in at.button if b.key == key]
    elif kind:
        found = [w.label for w in getattr(at, kind) if w.label == key]
    else:
        found = [t.value for t in at.title]
    out[name] = {"control": bool(found), "exception": [e.value for e in at.exception], "torch": "torch" in sys.modules}
print(json.dumps(out))
"""


def test_every_page_draws_its_controls_before_the_engine_loads(good_run, fresh_root):
    """In a fresh interpreter whose engine never loads, every page draws its primary control and torch is
    never imported: a first visit does not wait for torch."""
    copy_run(good_run, fresh_root, "a-run")
    out = subprocess.run([sys.executable, "-c", NO_ENGINE, json.dumps(CONTROLS), MAIN], cwd=jobs.REPO,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(jobs.REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name, r in result.items():
        assert r == {"control": True, "exception": [], "torch": False}, (name, r)


PRESS_EARLY = r"""
import json, sys, time
import streamlit as st
from streamlit.testing.v1 import AppTest
from app import engine, job_panel, jobs
engine.WARM_DELAY_S = 1e9  # the engine loads only when a press asks for it
labels, real = [], st.status
st.status = lambda label, *a, **k: (labels.append(label), real(label, *a, **k))[1]
at = AppTest.from_file(sys.argv[1], default_timeout=180).run()
before = "torch" in sys.modules
at.selectbox(key="sp-ckpt").set_value("mlp-mnist").run()
at.radio(key="sp-preset").set_value("the paper's algorithm (literal)").run()
at.slider[0].set_value(2)
[w for w in at.number_input if w.label == "Max steps"][0].set_value(3)
[w for w in at.number_input if w.label == "Test images for accuracy"][0].set_value(100)
at.button(key="sp-start").click().run()
job = job_panel.registry().get(at.session_state["sp-job"]) if "sp-job" in at.session_state else None
status = jobs.wait(job, 120).status if job else None
print(json.dumps({"torch_before": before, "labels": labels, "status": status,
                  "exception": [e.value for e in at.exception], "loaded": engine.engine_loaded()}), flush=True)
# leave without interpreter teardown: AppTest's script thread may still be alive, and a torch thread pool
# destroyed under it aborts the process ("terminate called without an active exception") after the answer
import os
os._exit(0)
"""


def test_a_press_before_the_engine_is_loaded_waits_then_starts(fresh_root):
    out = subprocess.run([sys.executable, "-c", PRESS_EARLY, MAIN], cwd=jobs.REPO, capture_output=True, text=True,
                         timeout=400, env={**os.environ, "PYTHONPATH": str(jobs.REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["torch_before"] is False and r["exception"] == [] and r["loaded"] is True
    assert r["labels"] and r["labels"][0].startswith("Loading the engine")  # the wait was shown
    assert r["status"] == "done"  # and the press started the run once the engine was there


def test_runs_page_shows_a_damage_run_whose_rows_are_not_steps(fresh_root):
    """A damage run folder (one row per net, level and seed; no step column) is listed and opens."""
    from geodesic import cli

    assert cli.main(["damage", "--checkpoint", str(jobs.CHECKPOINTS / "mlp-mnist.safetensors"), "--kind", "zero",
                     "--level", "0.2", "--seeds", "2", "--data", "bundled", "--eval-size", "100",
                     "--out", str(fresh_root / "dmg")]) == 0
    at = page("runs")
    at.multiselect[0].set_value(["dmg"]).run()
    assert not at.exception and any("dmg" in e.label for e in at.expander)
