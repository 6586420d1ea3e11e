"""One way to open a run: the CLI and the app's jobs write the same meta keys for a kind (both through
`runs.run_meta`); and one recover set-up (`damage.recovery_start`): the damage and the frozen coordinates it must
give, the very ones the CLI's recover run and the app's damage job start from."""

import dataclasses

import pytest
import torch
from conftest import CKPT

from app import jobs
from geodesic import cli
from geodesic.core.params import group_mask, group_norms, spec_of
from geodesic.core.path import PathConfig
from geodesic.experiments import damage as dmg
from geodesic.experiments.merge import MergeConfig
from geodesic.experiments.recovery import RecoveryConfig
from geodesic.experiments.sparsify import PRESETS
from geodesic.store import inputs, runs

MLP = str(CKPT / "mlp-mnist.safetensors")
MLP_B = str(CKPT / "mlp-fashion-mnist.safetensors")
APP = jobs.Source(MLP, "mnist", eval_size=200)  # the bundled subsets, as the app reads them
DATA = ["--data", "bundled"]
ABLATE = dmg.DamageConfig("ablate", (8,), (0,), among="alive")


def cli_run(tmp_path, *argv) -> dict:
    out = tmp_path / "cli"
    assert cli.main([*map(str, argv), "--out", str(out)]) == 0
    return runs.load_run(out).meta


def app_run(tmp_path, body) -> runs.Run:
    job = jobs.wait(jobs.Registry().start("job", body), 120)
    assert job.status == "done", job.error
    return runs.load_run(job.run_dirs[0])


def app_sparsify(tmp_path):
    cfg = dataclasses.replace(PRESETS["literal"], filters=2, path=PathConfig(eps=0.01, max_steps=3, eval_every=3))
    return app_run(tmp_path, jobs.sparsify_job(APP, cfg, root=tmp_path / "app")).meta


def app_recover(tmp_path):
    cfg = RecoveryConfig(steps=2, eval_every=2, lr=1e-3)
    return app_run(tmp_path, jobs.damage_job(APP, ABLATE, cfg, methods=("sgd",), root=tmp_path / "app")).meta


def app_merge(tmp_path):
    cfg = MergeConfig(phases=("walk",), path=PathConfig(beta=0.01, eps=0.01, probe=16, max_steps=2, eval_every=2))
    body = jobs.two_tasks_job(APP, "fashion-mnist", cfg, checkpoint_b=MLP_B, root=tmp_path / "app")
    return app_run(tmp_path, body).meta


CASES = {  # kind: (the CLI's arguments, the app's run, keys the CLI alone writes)
    "sparsify": (["sparsify", "--checkpoint", MLP, "--filters", 2, "--preset", "literal", "--eps", 0.01,
                  "--max-steps", 3, "--eval-every", 3, "--eval-size", 200, *DATA], app_sparsify, {"preset", "candidate"}),
    "recover": (["recover", "--checkpoint", MLP, "--kind", "ablate", "--level", 8, "--among", "alive", "--method",
                 "sgd", "--steps", 2, "--eval-every", 2, "--lr", 1e-3, "--eval-size", 200, *DATA], app_recover, set()),
    "merge": (["merge", "--a", MLP, "--b", MLP_B, "--phases", "walk", "--steps", 2, "--eval-every", 2, "--beta", 0.01,
               "--eps", 0.01, "--probe", 16, *DATA], app_merge, set()),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_cli_and_the_app_write_the_same_meta_keys(kind, tmp_path):
    argv, app, cli_only = CASES[kind]
    by_cli, by_app = cli_run(tmp_path, *argv), app(tmp_path)
    assert by_cli["kind"] == by_app["kind"] == kind and by_app["source"] == "app"
    assert set(by_app) - {"source"} == set(by_cli) - cli_only
    for key in ("model", "checkpoint", "dataset", "data_source"):
        assert by_cli[key] == by_app[key], key


def test_run_meta_states_where_a_run_started():
    ckpt = inputs.open_checkpoint(MLP)
    assert runs.run_meta("sparsify", ckpt, "mnist", "bundled", 200, preset="literal") == {
        "kind": "sparsify", "model": "mlp", "checkpoint": MLP, "dataset": "mnist", "data_source": "bundled",
        "eval_images": 200, "preset": "literal"}
    assert "eval_images" not in runs.run_meta("damage", ckpt, "mnist", "bundled")
    ckpt.arch = "net.py:make"  # a user's architecture is recorded, so that the run's net loads again
    assert runs.run_meta("recover", ckpt, "mnist", "full", method="sgd")["arch"] == "net.py:make"


@pytest.fixture(scope="module")
def mlp():
    return inputs.open_checkpoint(MLP)


def test_recovery_start_zeroes_a_fraction_of_the_named_layers_and_freezes_it(mlp):
    cfg = dmg.DamageConfig("zero", (0.3,), (4,), ("fc1",))
    w_d, mask, frozen = dmg.recovery_start(mlp.model, mlp.w, mlp.groups, cfg)
    fc1 = dmg.layer_mask(spec_of(mlp.model), ["fc1"])
    n = int(fc1.sum())
    assert not (mask & ~fc1).any() and abs(int(mask.sum()) - 0.3 * n) < 4 * (0.3 * 0.7 * n) ** 0.5  # binomial, 4σ
    assert torch.equal(w_d[mask], torch.zeros(int(mask.sum()))) and torch.equal(w_d[~mask], mlp.w[~mask])
    assert torch.equal(frozen, mask)
    again, other = (dmg.recovery_start(mlp.model, mlp.w, mlp.groups, c)[1] for c in (cfg, dataclasses.replace(cfg, seeds=(5,))))
    assert torch.equal(again, mask) and not torch.equal(other, mask)  # the seed fixes the damage


def test_recovery_start_ablates_whole_groups_and_noise_freezes_nothing(mlp):
    w_d, mask, frozen = dmg.recovery_start(mlp.model, mlp.w, mlp.groups, ABLATE)
    dead = group_norms(w_d, mlp.groups) == 0
    assert int(dead.sum()) - int((group_norms(mlp.w, mlp.groups) == 0).sum()) == 8  # among alive: 8 more zero
    hit = [g for g, before, after in zip(mlp.groups, group_norms(mlp.w, mlp.groups), dead) if after and before > 0]
    assert torch.equal(mask, group_mask(hit, mlp.w.numel())) and torch.equal(frozen, mask)
    w_n, mask_n, frozen_n = dmg.recovery_start(mlp.model, mlp.w, mlp.groups, dmg.DamageConfig("noise", (0.5,), (0,)))
    assert mask_n.all() and not frozen_n.any() and (w_n != mlp.w).float().mean() > 0.99


def test_the_cli_recover_and_the_app_start_from_recovery_start(mlp, tmp_path):
    w_d, _, frozen = dmg.recovery_start(mlp.model, mlp.w, mlp.groups, ABLATE)
    cli_run(tmp_path, *CASES["recover"][0])
    app = app_run(tmp_path, jobs.damage_job(APP, ABLATE, RecoveryConfig(steps=2, eval_every=2, lr=1e-3),
                                            methods=("sgd",), root=tmp_path / "app"))
    for run in (runs.load_run(tmp_path / "cli"), app):
        assert torch.equal(run.final()["w_start"], w_d)
        assert torch.equal(run.extra(dmg.DAMAGE_FILE)["frozen"].bool(), frozen)
        assert torch.equal(run.extra(dmg.DAMAGE_FILE)["w_ref"], mlp.w)
