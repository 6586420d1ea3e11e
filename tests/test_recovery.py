"""Damage, damage resistance and recovery: reproducible damage, frozen coordinates that stay broken, recovery
that recovers, resistance tables checked by hand, run folders, and the `damage` / `recover` commands."""

import math
from itertools import count
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import CKPT
from safetensors.torch import load_file

from geodesic import cli
from geodesic.core.params import flatten, spec_of
from geodesic.core.path import Evaluation, PathConfig
from geodesic.experiments import damage as dmg
from geodesic.experiments.damage import DAMAGE_FILE, DamageConfig, resistance, run_damage, summarize
from geodesic.experiments.recovery import Recovery, RecoveryConfig, first_within, run_recover
from geodesic.infra.lifecycle import Status, Stop
from geodesic.store import runs, zoo


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these are many small ops, and a second thread only contends on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlp(mlp_mnist):
    model, _ = mlp_mnist
    return model, flatten(model), zoo.filter_groups(model), spec_of(model)


@pytest.fixture(scope="module")
def ev(mnist_test):
    return Evaluation(mnist_test.x[:1000], mnist_test.y[:1000])


def test_damage_is_reproducible_per_seed_and_independent_of_the_weights(mlp):
    model, w, groups, spec = mlp
    other = torch.randn_like(w)
    for kind, level in (("zero", 0.3), ("ablate", 5), ("noise", 0.5)):
        a, ma = dmg.damage(w, spec, groups, kind, level, 7, among="all", reference=w)
        b, mb = dmg.damage(w, spec, groups, kind, level, 7, among="all", reference=w)
        c, _ = dmg.damage(w, spec, groups, kind, level, 8, among="all", reference=w)
        assert torch.equal(a, b) and torch.equal(ma, mb) and not torch.equal(a, c)
        # the same seed hits another net in the same place (noise: adds the same vector, σ from the reference)
        o, mo = dmg.damage(other, spec, groups, kind, level, 7, among="all", reference=w)
        assert torch.equal(mo, ma)
        if kind == "noise":
            assert torch.allclose(o - other, a - w, atol=1e-5)
        else:
            assert bool((o[ma] == 0).all()) and torch.equal(o[~ma], other[~ma])


def test_damage_levels_hit_what_they_say(mlp):
    model, w, groups, spec = mlp
    _, m = dmg.zero_fraction(w, spec, 0.3, 0, ["fc1"])
    fc1 = spec.slice("fc1.weight").stop - spec.slice("fc1.weight").start + 32
    assert abs(m.sum().item() / fc1 - 0.3) < 0.02 and not m[spec.slice("fc2.weight")].any()
    wa, ma = dmg.ablate_groups(w, groups, 4, 0, among="all")
    assert ma.sum() == 4 * groups[0].idx.numel() and sum(bool((wa[g.idx] == 0).all()) for g in groups) == 4
    # among="alive" never picks a filter already at zero; among="all" may
    w_sparse = w.clone()
    for g in groups[:28]:
        w_sparse[g.idx] = 0
    hit_alive = dmg.ablate_groups(w_sparse, groups, 4, 0, among="alive")[1]
    assert all(bool(hit_alive[g.idx].all()) for g in groups[28:])
    with pytest.raises(ValueError, match="cannot ablate 5 filters: 4 are nonzero"):
        dmg.ablate_groups(w_sparse, groups, 5, 0, among="alive")
    assert torch.equal(dmg.frozen("noise", ma), torch.zeros_like(ma)) and torch.equal(dmg.frozen("zero", ma), ma)


def test_frozen_coordinates_stay_broken_along_a_geodesic_recovery(mlp, mnist_train, ev):
    model, w, groups, spec = mlp
    w_d, mask = dmg.zero_fraction(w, spec, 0.5, 1, ["fc1"])
    cfg = RecoveryConfig("geodesic", steps=6, eval_every=3, path=PathConfig(eps=0.01, probe=8))
    rec = Recovery(model, w, w_d, mask, cfg, mnist_train, ev, groups)
    items = list(rec)
    rows = [r for r in items if r is not None]
    assert len(items) == 7 and [r["step"] for r in rows] == [0, 3, 6] and rec.status is Status.DONE
    assert bool((rec.w[mask] == 0).all())  # exactly zero, not merely small
    moved = (rec.w - w_d)[~mask]
    assert moved.norm() > 0.1  # the free coordinates compensate; 6 steps of |θ| = 0.1
    assert rows[-1]["distance"] < rows[0]["distance"]  # closer to the pre-damage function
    assert rows[-1]["grad_evals"] == 6 * (256 + 8 * 10 + 4 * 8)


@pytest.mark.parametrize("method", ["geodesic", "adam", "sgd"])
def test_a_short_recovery_raises_accuracy(method, mlp, mnist_train, ev):
    model, w, groups, spec = mlp
    w_d, mask = dmg.zero_fraction(w, spec, 0.6, 0, ["fc1"])
    cfg = RecoveryConfig(method, steps=20, eval_every=10, path=PathConfig(eps=0.04, probe=16))
    out = run_recover(model, w, w_d, mask, cfg, mnist_train, ev, groups)
    s = out.summary()
    assert s["accuracy_damaged"] < s["accuracy_before"] - 0.05  # the damage hurts
    assert s["accuracy"] > s["accuracy_damaged"] + 0.03, s
    assert bool((out.w[mask] == 0).all()) and s["steps"] == 20


@pytest.mark.parametrize("method", ["geodesic", "adam"])
def test_a_recovery_with_a_budget_of_evaluations_alone_has_no_step_cap(method, mlp, mnist_train, ev):
    """steps=None (what `recover --grad-evals N` alone gives): the other budget ends it, whatever the method."""
    model, w, groups, spec = mlp
    w_d, mask = dmg.zero_fraction(w, spec, 0.6, 0, ["fc1"])
    cfg = RecoveryConfig(method, steps=None, grad_evals=3_000, eval_every=2, path=PathConfig(eps=0.04, probe=8))
    s = run_recover(model, w, w_d, mask, cfg, mnist_train, ev, groups).summary()
    assert s["steps"] >= 2 and s["grad_evals"] <= 3_000 + (256 + 8 * 10 + 4 * 8)


def test_first_within_finds_the_first_row_in_reach():
    curve = pd.DataFrame({"step": [0, 5, 10, 15], "seconds": [0, 1.0, 2.0, 3.0], "grad_evals": [0, 50, 100, 150],
                          "accuracy": [0.5, 0.88, 0.895, 0.91]})
    assert first_within(curve, 0.90) == {"step": 10, "seconds": 2.0, "grad_evals": 100, "accuracy": 0.895}
    assert first_within(curve, 0.90, within=0.0)["step"] == 15
    assert math.isnan(first_within(curve, 0.95)["step"])


def test_resistance_table_matches_a_hand_computation(mlp, ev):
    model, w, groups, spec = mlp
    w_pruned = w.clone()
    for g in groups[:16]:
        w_pruned[g.idx] = 0
    nets = {"dense": w, "pruned": w_pruned}
    table = resistance(model, nets, ev, "ablate", [2, 4], [0, 1, 2], groups, among="all")
    assert list(table.columns[:4]) == ["net", "kind", "level", "seed"] and len(table) == 2 * 2 * 3
    # by hand: seed 1, 4 filters, pruned net
    w_d, mask = dmg.ablate_groups(w_pruned, groups, 4, 1, among="all")
    acc0, acc = ev.scores(model, w_pruned)[1], ev.scores(model, w_d)[1]
    row = table[(table.net == "pruned") & (table.level == 4) & (table.seed == 1)].iloc[0]
    assert row.accuracy_before == acc0 and row.accuracy == acc and row["drop"] == pytest.approx(acc0 - acc)
    assert row.filters_lost == sum(1 for g in groups[16:] if bool(mask[g.idx].all()))
    s = summarize(table)
    assert len(s) == 4 and list(s.net) == ["dense", "pruned", "dense", "pruned"]
    sel = table[(table.net == "dense") & (table.level == 2)]["drop"]
    got = s[(s.net == "dense") & (s.level == 2)].iloc[0]
    assert got.drop_mean == pytest.approx(sel.mean()) and got.drop_sd == pytest.approx(sel.std(ddof=1))
    assert (s.drop_mean[s.level == 4].values >= -0.02).all()  # ablating filters does not help


def loads_as_state_dict(run: runs.Run, model: torch.nn.Module) -> bool:
    """final.safetensors is the model's plain state dict, holding the run's final flat weights."""
    net = type(model)()
    net.load_state_dict(load_file(str(run.dir / "final.safetensors")))
    return torch.equal(flatten(net), run.final()["w"])


def test_damage_and_recover_run_folders_load_back(mlp, mnist_train, ev, tmp_path):
    model, w, groups, spec = mlp
    writer = runs.RunWriter({"kind": "damage", "model": "mlp"}, root=tmp_path, run_id="d")
    out = run_damage(model, {"net": w}, groups, DamageConfig("zero", (0.4,), (3, 4), ("fc1",)), ev, writer)
    run = runs.load_run(tmp_path / "d")
    assert out.status is Status.DONE and run.status is Status.DONE and run.meta["summary"]["rows"] == 2
    assert len(run.metrics) == 2 and list(run.metrics.seed) == [3, 4]
    final, dam = run.final(), run.extra(DAMAGE_FILE)
    assert torch.equal(final["w"], out.w_damaged) and torch.equal(final["w_start"], w) and loads_as_state_dict(run, model)
    assert torch.equal(dam["mask"], dmg.zero_fraction(w, spec, 0.4, 3, ["fc1"])[1]) and torch.equal(dam["frozen"], dam["mask"])
    assert dam["mask"].dtype == torch.bool

    writer = runs.RunWriter({"kind": "recover", "model": "mlp"}, root=tmp_path, run_id="r")
    cfg = RecoveryConfig("adam", steps=10, eval_every=5)
    o = run_recover(model, w, out.w_damaged, dam["frozen"], cfg, mnist_train, ev, groups, writer)
    run = runs.load_run(tmp_path / "r")
    assert o.status is Status.DONE and run.status is Status.DONE and list(run.metrics.step) == [0, 5, 10]
    assert run.meta["summary"]["accuracy"] == pytest.approx(o.curve.accuracy.iloc[-1])
    assert torch.equal(run.final()["w"], o.w) and torch.equal(run.final()["w_start"], out.w_damaged)
    assert loads_as_state_dict(run, model) and torch.equal(run.extra(DAMAGE_FILE)["w_ref"], w)


def test_a_recovery_that_recovers_arrives(mlp, mnist_train, ev):
    model, w, groups, spec = mlp
    w_d, mask = dmg.zero_fraction(w, spec, 0.6, 0, ["fc1"])
    cfg = RecoveryConfig("adam", steps=200, eval_every=5, within=0.2, stop_when_recovered=True)
    out = run_recover(model, w, w_d, mask, cfg, mnist_train, ev, groups)
    assert out.status is Status.ARRIVED and out.curve.recovered.iloc[-1] and not out.curve.recovered.iloc[:-1].any()
    assert out.summary()["steps"] < 200


def test_a_stop_request_ends_damage_and_recovery_within_one_step(mlp, mnist_train, ev, tmp_path):
    model, w, groups, spec = mlp
    stop, seen = Stop(), []

    def first_row(row):  # damage.safetensors is written as soon as the first row exists
        seen.append((tmp_path / "d" / DAMAGE_FILE).is_file())
        stop.set()

    writer = runs.RunWriter({"kind": "damage", "model": "mlp"}, root=tmp_path, run_id="d")
    out = run_damage(model, {"net": w}, groups, DamageConfig("zero", (0.4,), (3, 4, 5)), ev, writer, stop, first_row)
    run = runs.load_run(writer.dir)
    assert seen == [True] and out.status is Status.STOPPED and len(out.table) == 1 and run.status is Status.STOPPED
    assert torch.equal(run.final()["w"], out.w_damaged) and loads_as_state_dict(run, model)

    w_d, mask = dmg.zero_fraction(w, spec, 0.5, 0, ["fc1"])
    stop = Stop()
    writer = runs.RunWriter({"kind": "recover", "model": "mlp"}, root=tmp_path, run_id="r")
    o = run_recover(model, w, w_d, mask, RecoveryConfig("sgd", steps=50, eval_every=10), mnist_train, ev, groups,
                    writer, stop, lambda r: stop.set() if r["step"] == 10 else None)
    run = runs.load_run(writer.dir)
    assert o.status is Status.STOPPED and run.status is Status.STOPPED and list(o.curve.step) == [0, 10]
    assert run.meta["summary"]["steps"] == 10 and torch.equal(run.final()["w"], o.w)
    # the weights are those of step 10: the same run to a budget of 10 steps ends there
    again = run_recover(model, w, w_d, mask, RecoveryConfig("sgd", steps=10, eval_every=10), mnist_train, ev, groups)
    assert torch.equal(again.w, o.w)
    checks = count()  # the loop checks after every item of a phase, recorded row or not: row 0, steps 1, 2, 3
    o = run_recover(model, w, w_d, mask, RecoveryConfig("sgd", steps=50, eval_every=10), mnist_train, ev, groups,
                    stop=SimpleNamespace(is_set=lambda: next(checks) >= 3))
    again = run_recover(model, w, w_d, mask, RecoveryConfig("sgd", steps=3, eval_every=10), mnist_train, ev, groups)
    assert o.status is Status.STOPPED and list(o.curve.step) == [0] and torch.equal(o.w, again.w)


def test_an_interrupted_recovery_keeps_its_curve(mlp, mnist_train, ev, tmp_path):
    model, w, groups, spec = mlp
    w_d, mask = dmg.zero_fraction(w, spec, 0.5, 0, ["fc1"])
    writer = runs.RunWriter({"kind": "recover", "model": "mlp"}, root=tmp_path, run_id="r")

    def boom(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recover(model, w, w_d, mask, RecoveryConfig("sgd", steps=10, eval_every=2), mnist_train, ev, groups,
                    writer, on_row=boom)
    run = runs.load_run(tmp_path / "r")
    assert run.status is Status.INTERRUPTED and list(run.metrics.step) == [0, 2, 4]
    # the weights of step 4 are kept: the same run to a budget of 4 steps ends there
    again = run_recover(model, w, w_d, mask, RecoveryConfig("sgd", steps=4, eval_every=2), mnist_train, ev, groups)
    assert torch.equal(run.final()["w"], again.w) and loads_as_state_dict(run, model)


@pytest.mark.parametrize("args,message", [
    (["damage", "--kind", "zero", "--level", "1.5"], "fraction in [0, 1]"),
    (["damage", "--kind", "ablate", "--level", "2.5"], "whole number of filters"),
    (["damage", "--kind", "ablate", "--level", "40"], "has 32 groups"),
    (["damage", "--kind", "zero", "--level", "0.1", "--layers", "conv9"], "no parameters in layers"),
    (["damage", "--kind", "zero", "--level", "-1"], "fraction in [0, 1], got -1"),
    (["damage", "--kind", "melt", "--level", "1"], "invalid choice"),
    (["recover", "--method", "geodesic"], "give --checkpoint with --kind and --level"),
    (["recover", "--kind", "zero", "--level", "0.2", "--method", "newton"], "invalid choice"),
    (["recover", "--kind", "zero", "--level", "0.2", "--within", "2"], "within must be in [0, 1)"),
    (["recover", "--kind", "zero", "--level", "0.2", "--momentum", "1"], "momentum must be in [0, 1)"),
    (["recover", "--kind", "zero", "--level", "0.2", "--eps", "0"], "eps must be in (0, 10000]"),
])
def test_cli_errors_are_clear(args, message, tmp_path, capsys):
    argv = [*args, "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--data", "bundled", "--out", str(tmp_path / "o")]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_damage_then_recover_from_its_run(tmp_path, capsys):
    ckpt = str(CKPT / "mlp-mnist.safetensors")
    common = ["--data", "bundled", "--eval-size", "500"]
    assert cli.main(["damage", "--checkpoint", ckpt, "--kind", "zero", "--level", "0.5", "--layers", "fc1",
                     "--seeds", "2", *common, "--out", str(tmp_path / "d")]) == 0
    assert "drop" in capsys.readouterr().out
    assert len(runs.load_run(tmp_path / "d").metrics) == 2
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert cli.main(["recover", "--from-run", str(tmp_path / "d"), "--out", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["recover", "--from-run", str(tmp_path / "d"), "--kind", "zero", "--out", str(tmp_path / "x")]) == 2
    assert "damage comes from --from-run" in capsys.readouterr().err
    assert cli.main(["recover", "--from-run", str(tmp_path / "d"), "--method", "adam", "--steps", "10",
                     "--eval-every", "5", *common, "--out", str(tmp_path / "r")]) == 0
    run = runs.load_run(tmp_path / "r")
    assert run.meta["kind"] == "recover" and run.meta["damage"]["kind"] == "zero" and len(run.metrics) == 3
    assert run.meta["summary"]["accuracy"] > run.meta["summary"]["accuracy_damaged"]


def test_cli_help_explains_every_option(capsys):
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("damage", "recover"):
        for action in subs[command]._actions:
            assert action.dest == "help" or action.help, f"{command} --{action.dest} has no help text"
