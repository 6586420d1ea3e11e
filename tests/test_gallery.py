"""The shipped example runs (assets/gallery, made by tools/make_gallery.py): small, readable, finished, every
kind the pages show, usable sparse nets; and each page that lists runs draws a chart with an empty runs folder."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geodesic.infra.lifecycle import Status
from geodesic.store import checkpoints, runs

GALLERY = runs.gallery_root()
LIMIT_BYTES = 16_000_000  # tools/make_gallery.py LIMIT_BYTES
WEIGHTS = {"mlp": 25_450, "lenet60": 85_670}
MERGE_PHASES = {"walk", "relax", "line", "finetune"}


def folders() -> list[Path]:
    return sorted(p for p in GALLERY.iterdir() if p.is_dir() and p.name != "sweeps")  # sweeps/: the Sweeps page's tables


@pytest.fixture(scope="module")
def gallery() -> list[runs.Run]:
    assert GALLERY.is_dir(), f"{GALLERY} is missing: run tools/make_gallery.py"
    return [runs.load_run(d, readonly=True) for d in folders()]


def of_kind(gallery: list[runs.Run], kind: str) -> list[runs.Run]:
    return [r for r in gallery if r.meta.get("kind") == kind]


def test_gallery_is_small():
    total = sum(p.stat().st_size for p in GALLERY.rglob("*") if p.is_file())
    assert 0 < total <= LIMIT_BYTES, f"{total / 1e6:.2f} MB"


def test_every_run_is_a_finished_example(gallery):
    assert len(gallery) >= 9
    for run in gallery:
        assert run.status.ended and not run.status.failed, (run.id, run.status)
        assert run.status is not Status.RUNNING and run.live is False
        assert run.meta.get("example") is True, run.id
        assert "pid" not in run.meta and "host" not in run.meta, run.id
        assert run.id == run.dir.name and len(run.id) <= 40
        assert run.meta.get("model") in WEIGHTS, run.id
        assert len(run.metrics) and "step" in run.metrics.columns, run.id
        for text in (json.dumps(run.meta), (run.dir / "final.json").read_text()):
            assert "/tmp/" not in text, run.id


def test_snapshots_and_final_weights_read_back(gallery):
    for run in gallery:
        n = WEIGHTS[run.meta["model"]]
        steps, w = run.snapshots()
        if run.meta["kind"] in ("sparsify", "merge"):
            assert 2 <= len(steps) <= 8, (run.id, len(steps))
            assert w.shape == (len(steps), n) and w.dtype == torch.float32 and torch.isfinite(w).all()
            assert steps.tolist() == sorted(steps.tolist()) and steps[0] == 0
        final = run.final()
        assert final["w"].shape == (n,) and final["w_start"].shape == (n,), run.id
        assert final["w"].dtype == torch.float32 and torch.isfinite(final["w"]).all()


def test_final_nets_load_as_checkpoints(gallery):
    for run in gallery:
        model, card = checkpoints.load(run.dir / runs.FINAL)
        assert card["model"] == run.meta["model"] and card["run"] == run.id
        assert all(v.dtype == torch.float32 for v in load_file(str(run.dir / runs.FINAL)).values()
                   if v.is_floating_point())


def test_gallery_is_listed_read_only_beside_an_empty_runs_folder(tmp_path, gallery):
    listed, problems = runs.scan_with_gallery(tmp_path)
    assert not problems
    assert {r.dir.name for r in listed} == {r.dir.name for r in gallery}
    assert all(r.readonly for r in listed)
    with pytest.raises(ValueError, match="shipped example"):
        runs.delete_run(listed[0])


def test_sparsify_both_presets_on_both_datasets(gallery):
    found = {(r.meta.get("dataset"), r.meta.get("preset")): r for r in of_kind(gallery, "sparsify")
             if r.meta.get("model") == "lenet60" and "group" not in r.meta}
    for dataset in ("mnist", "fashion-mnist"):
        for preset in ("literal", "recommended"):
            run = found.get((dataset, preset))
            assert run is not None, (dataset, preset)
            assert run.status is Status.ARRIVED, (run.id, run.status)
            filters = run.meta["config"]["filters"]
            assert run.meta["summary"]["groups_zero"] == filters == len(run.meta["target_groups"]) == 50
            assert found[(dataset, "recommended")].meta["config"]["relax_steps"] > 0


def test_sparse_final_nets_have_their_filters_at_exact_zero(gallery):
    for run in of_kind(gallery, "sparsify"):
        if run.status is not Status.ARRIVED:
            continue
        sd = load_file(str(run.dir / runs.FINAL))
        for name in run.meta["target_groups"]:  # "conv2[7]": row 7 of conv2.weight and conv2.bias[7]
            layer, i = name.rstrip("]").split("[")
            assert not sd[f"{layer}.weight"][int(i)].any() and sd[f"{layer}.bias"][int(i)] == 0, (run.id, name)


def test_one_set_of_candidate_paths(gallery):
    groups: dict[str, list[runs.Run]] = {}
    for r in of_kind(gallery, "sparsify"):
        if r.meta.get("group"):
            groups.setdefault(str(r.meta["group"]), []).append(r)
    assert groups, "no sparsify run has a candidate group"
    group, members = max(groups.items(), key=lambda kv: len(kv[1]))
    assert len(members) >= 3, group
    assert len({r.meta.get("candidate") for r in members}) == len(members)
    assert len({r.meta.get("checkpoint") for r in members}) == 1
    assert len({r.meta["config"]["filters"] for r in members}) == 1
    assert len({r.meta["config"]["strategy"] for r in members}) >= 3


def test_a_recovery_race_from_one_damage(gallery):
    recover = of_kind(gallery, "recover")
    by_damage: dict[str, dict[str, runs.Run]] = {}
    for r in recover:
        key = json.dumps([r.meta.get("checkpoint"), r.meta.get("damage")], sort_keys=True)
        by_damage.setdefault(key, {})[r.meta.get("method")] = r
    races = [m for m in by_damage.values() if {"geodesic", "sgd"} <= set(m)]
    assert races, "no geodesic and sgd recovery from one damage"
    geo, sgd = races[0]["geodesic"], races[0]["sgd"]
    assert geo.meta.get("group") == sgd.meta.get("group") is not None
    for r in (geo, sgd):
        assert {"accuracy", "distance", "seconds", "grad_evals"} <= set(r.metrics.columns)
        s = r.meta["summary"]
        assert s["accuracy_damaged"] < s["accuracy_before"] and s["accuracy"] > s["accuracy_damaged"]
    assert geo.meta["summary"]["accuracy_before"] == sgd.meta["summary"]["accuracy_before"]
    assert geo.meta["summary"]["accuracy_damaged"] == sgd.meta["summary"]["accuracy_damaged"]


def test_the_mean_network_walk_with_its_baselines(gallery):
    merges = of_kind(gallery, "merge")
    assert len(merges) >= 1
    run = merges[0]
    assert MERGE_PHASES <= set(run.metrics["phase"]), set(run.metrics["phase"])
    assert {"accuracy", "accuracy_b"} <= set(run.metrics.columns)
    assert run.meta["dataset"] != run.meta["task_b"]


# --- the pages, with an empty runs folder ------------------------------------------------------------------

APP = runs.REPO / "app"


PAGES = {"candidates": "Candidate paths", "trajectories": "Weight trajectories", "damage": "Damage",
         "two_tasks": "Two tasks", "runs": "Runs on disk"}


@pytest.mark.slow
@pytest.mark.parametrize("view", list(PAGES))
def test_page_shows_the_gallery_with_no_runs_of_ones_own(view, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import job_panel

    job_panel.registry.clear()  # a first visit: no job of this server (tests before may have left some)
    empty = tmp_path / "runs"
    empty.mkdir()
    monkeypatch.setenv("GEODESIC_RUNS", str(empty))
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=120)
    at.run()
    at.switch_page(f"views/{view}.py")
    at.run()
    at.run()  # the rerun the browser asks for once the controls are drawn (page.after_paint): the charts
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith(PAGES[view])
    assert len(at.get("plotly_chart")) >= 1, f"{view}: no chart with only the gallery"
    shown = ([o for w in (*at.multiselect, *at.selectbox) for o in w.options]
             + [e.value for e in (*at.caption, *at.info)])
    assert any("example" in text for text in shown), f"{view}: the examples are not marked as such"
    if view == "runs":  # examples are read-only: no delete control
        assert not [b for b in at.button if str(b.key).startswith("del-")]
    assert not any(empty.iterdir()), "a page wrote into the runs folder"


def test_a_task_sequence_learned_by_three_methods(gallery):
    """One split-MNIST sequence (domain scenario) learned by fine-tuning, replay and the geodesic: each run has the
    weights after every task, its tasks and its accuracy matrix, and the summary's ACC is R's last row's mean."""
    from geodesic.experiments.sequence import ACCURACY_FILE

    sequences = {r.meta["method"]: r for r in of_kind(gallery, "sequence")}
    assert set(sequences) == {"finetune", "replay", "geodesic"}
    for run in sequences.values():
        steps, w = run.snapshots()
        assert steps.tolist() == list(range(6)) and w.shape == (6, WEIGHTS["mlp"])
        R = load_file(str(run.dir / ACCURACY_FILE))["R"]
        assert R.shape == (5, 5) and run.meta["summary"]["ACC"] == pytest.approx(R[-1].mean().item(), abs=1e-6)
    acc = {m: r.meta["summary"]["ACC"] for m, r in sequences.items()}
    assert acc["finetune"] < acc["geodesic"]  # what the example is there to show
