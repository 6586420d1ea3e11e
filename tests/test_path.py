"""The path against hand computation on a 2-weight model, stop rules, sparsify on mlp, run folders."""

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from geodesic.core import objectives
from geodesic.core.params import flatten, group_mask, spec_of
from geodesic.core.path import MAX_STEPS, Evaluation, Path, PathConfig
from geodesic.core.targets import choose_groups
from geodesic.experiments import damage
from geodesic.experiments.sparsify import PRESETS, run_sparsify
from geodesic.infra.lifecycle import Status, Stop
from geodesic.store import checkpoints, runs, zoo

LITERAL = PRESETS["literal"]


class TwoWeights(nn.Module):
    """f(x, w) = w1 x1 + w2 x2: J = X/√B, G = XᵀX/B."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1, bias=False)

    def forward(self, x):
        return self.fc(x)


X = torch.tensor([[1.0, 0.5], [0.2, 1.0], [-0.7, 0.4]])


def hand_step(w, beta, eps):
    """θ* on the 2-D problem by hand: interior Newton point if it fits, else a fine search on the circle."""
    G = (X.T @ X / len(X)).double().numpy()
    v = np.array([0.0, -float(w[1])])
    inner = 0.5 * beta * np.linalg.solve(G, v)
    if inner @ inner <= eps:
        return inner
    a = np.linspace(0, 2 * np.pi, 2_000_001)
    th = math.sqrt(eps) * np.stack([np.cos(a), np.sin(a)], 1)
    obj = np.einsum("ij,jk,ik->i", th, G, th) - beta * th @ v
    return th[obj.argmin()]


@pytest.mark.parametrize("beta,eps", [(1.0, 0.01), (0.05, 0.5)])  # constraint active; interior (μ = 0)
@pytest.mark.parametrize("solver", ["gram", "explicit"])
def test_first_step_matches_hand_computation(beta, eps, solver):
    m = TwoWeights().eval()
    with torch.no_grad():
        m.fc.weight.copy_(torch.tensor([[0.8, -0.6]]))
    w0 = flatten(m)
    target = torch.tensor([False, True])
    cfg = PathConfig(phi="logits", beta=beta, eps=eps, probe=3, max_steps=1, solver=solver, arrive_tol=1e-6)
    p = Path(m, w0, objectives.sparsify(target), cfg, lambda b: (X, None), Evaluation(X, torch.zeros(3, dtype=torch.long)),
             groups=[], target=target)
    steps = list(p)
    theta = (p.w - w0).double().numpy()
    np.testing.assert_allclose(theta, hand_step(w0, beta, eps), atol=2e-5)
    J = X / math.sqrt(3)
    assert math.isclose(steps[1].step_length, float((J @ torch.tensor(theta).float()).norm()), rel_tol=1e-4)
    d = float(((X @ p.w) - (X @ w0)).pow(2).mean())  # D(w1, w0) with φ = identity
    assert math.isclose(steps[1].distance, d, rel_tol=1e-4)


def test_two_weight_path_arrives_on_the_sparse_axis():
    m = TwoWeights().eval()
    with torch.no_grad():
        m.fc.weight.copy_(torch.tensor([[0.8, -0.6]]))
    target = torch.tensor([False, True])
    cfg = PathConfig(phi="logits", beta=1.0, eps=0.01, probe=3, max_steps=100)
    p = Path(m, flatten(m), objectives.sparsify(target), cfg, lambda b: (X, None),
             Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[], target=target)
    steps = list(p)
    assert p.status == "arrived" and p.w[1] == 0.0
    assert steps[-1].phase == "snap"
    walk = [s for s in steps if s.phase == "walk"]
    assert math.isclose(walk[-1].length, sum(s.step_length for s in walk), rel_tol=1e-9)
    # w1 compensates: the function moved less than zeroing w2 outright would have moved it
    naive = float((X[:, 1] * 0.6).pow(2).mean())
    assert steps[-1].distance < naive


def test_non_finite_direction_skips_the_step_and_keeps_eps():
    m = TwoWeights().eval()
    calls = {"n": 0}

    def field(w):
        calls["n"] += 1
        return torch.full_like(w, float("nan")) if calls["n"] == 1 else -w

    cfg = PathConfig(phi="logits", beta=1.0, eps=0.01, probe=3, max_steps=3)
    p = Path(m, flatten(m), field, cfg, lambda b: (X, None), Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[])
    steps = list(p)
    assert torch.isfinite(p.w).all() and p.status is not Status.DIVERGED
    assert [s.step for s in steps] == [0, 2, 3]


def test_a_budgeted_path_follows_its_budget_and_ends_with_it():
    """progress (the budget's spent fraction) drives the cosine cap and ends the path at 1, before max_steps."""
    m = TwoWeights().eval()
    with torch.no_grad():
        m.fc.weight.copy_(torch.tensor([[0.8, -0.6]]))
    ticks = {"n": 0}

    def progress():  # a budget spent a tenth per step taken
        return ticks["n"] / 10

    def field(w):
        ticks["n"] += 1
        return -w

    cfg = PathConfig(phi="logits", beta=1.0, eps=0.1, eps_final=0.001, probe=3, max_steps=1000, adaptive=False)
    p = Path(m, flatten(m), field, cfg, lambda b: (X, None), Evaluation(X, torch.zeros(3, dtype=torch.long)),
             groups=[], progress=progress)
    steps = [s for s in p if s.phase == "walk" and s.step > 0]
    assert len(steps) == 10 and p.status is Status.DONE and p.reason == "CPU budget"
    expected = [0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(1, 11)]
    np.testing.assert_allclose([s.eps for s in steps], expected, rtol=1e-6)  # not the 1000-step schedule's
    assert steps[-1].eps == pytest.approx(0.001)


def test_bad_config_is_refused():
    for bad, says in ((dict(beta=0), "beta must be in .*got 0"), (dict(eps=-1), "eps must be in .*got -1"),
                      (dict(probe=0), "probe batch must be in .*got 0"), (dict(solver="magic"), "solver must be one of"),
                      (dict(eps=float("nan")), "eps must be in .*got nan")):
        with pytest.raises(ValueError, match=says):
            PathConfig(**bad).validate()


@pytest.fixture()
def mlp_setup(mlp_mnist, mnist_train, mnist_test):
    model, card = mlp_mnist
    return model, flatten(model), zoo.filter_groups(model), mnist_train, Evaluation(mnist_test.x[:500], mnist_test.y[:500])


def test_sparsify_mlp_reaches_its_target_with_exact_zeros(mlp_setup, tmp_path):
    model, w0, groups, train, ev = mlp_setup
    cfg = replace(LITERAL, filters=6, path=PathConfig(max_steps=300, eps=0.04, eval_every=20))
    writer = runs.RunWriter({"kind": "sparsify", "model": "mlp", "dataset": "mnist"}, root=tmp_path)
    out = run_sparsify(model, w0, groups, cfg, train, ev, writer=writer)
    assert out.status is Status.ARRIVED
    chosen = writer.meta["target_groups"]
    assert len(chosen) == 6
    mask = group_mask([g for g in groups if g.name in chosen], w0.numel())
    assert torch.all(out.w[mask] == 0) and out.rows[-1]["groups_zero"] >= 6
    run = runs.load_run(writer.dir)
    assert run.meta["status"] == "arrived" and len(run.metrics) == len(out.rows)
    assert torch.equal(run.final()["w"], out.w)
    steps, W = run.snapshots()
    assert W.shape[1] == w0.numel() and steps[0] == 0 and torch.equal(W[-1], out.w)
    assert out.summary()["accuracy"] > 0.85  # the function survives losing 6 of 32 neurons
    # the final net is a plain state dict with a card: loadable without this package's run format
    fresh = zoo.build("mlp")
    fresh.load_state_dict(load_file(str(writer.dir / "final.safetensors")))
    assert torch.equal(flatten(fresh), out.w)
    net, card = checkpoints.load(writer.dir / "final.safetensors")
    assert torch.equal(flatten(net), out.w) and card["run"] == run.id and card["dataset"] == "mnist"
    json.loads((writer.dir / "meta.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in meta.json"))


def test_relaxation_keeps_zeros_and_pulls_back_toward_the_start(mlp_setup):
    model, w0, groups, train, ev = mlp_setup
    cfg = replace(LITERAL, filters=8, relax_steps=15, relax_eps=0.1,
                  path=PathConfig(max_steps=300, eps=0.04, eval_every=5))
    out = run_sparsify(model, w0, groups, cfg, train, ev)
    assert out.status is Status.ARRIVED
    snap = next(s for s in out.rows if s["phase"] == "snap")
    relax = [s for s in out.rows if s["phase"] == "relax"]
    assert len(relax) == 15 and relax[0]["step"] == snap["step"] + 1
    assert all(s["groups_zero"] >= 8 for s in relax)
    assert all(s["target_norm"] == 0.0 for s in relax)  # |w_T| of the zeroed groups, shown as 0 (not NaN)
    assert relax[-1]["distance"] < snap["distance"]


def test_a_budgeted_relaxation_spends_what_the_walk_left(mlp_setup):
    from geodesic.experiments.sparsify import sparsify_phases

    model, w0, groups, train, ev = mlp_setup
    cfg = replace(PRESETS["recommended"], filters=8, seconds=10.0,
                  path=PathConfig(max_steps=300, eps=0.04, beta=1e-3, eval_every=50))
    assert cfg.relax_steps is None  # the default: no step count, the budget ends it
    cpu0 = time.process_time()
    out = run_sparsify(model, w0, groups, cfg, train, ev)
    spent = time.process_time() - cpu0
    relax = [r for r in out.rows if r["phase"] == "relax"]
    assert out.status is Status.ARRIVED and len(relax) >= 5 and spent >= 0.9 * cfg.seconds
    assert relax[-1]["eps"] < 0.1 * cfg.relax_eps  # the schedule decayed with the budget
    assert not any(r["phase"] == "restore" for r in out.rows)
    # --relax-steps N caps it: 7 steps, the schedule decayed over them
    capped = run_sparsify(model, w0, groups, replace(cfg, relax_steps=7), train, ev)
    relax = [r for r in capped.rows if r["phase"] == "relax"]
    assert capped.status is Status.ARRIVED and len(relax) == 7 and relax[-1]["eps"] == pytest.approx(cfg.relax_eps_final)
    with pytest.raises(ValueError, match="needs a step count"):  # without a budget nothing would end it
        next(sparsify_phases(model, w0, groups, groups[:8], cfg, train, ev))


def burn(seconds: float) -> None:
    """Spend about `seconds` of this process's CPU time."""
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        sum(i * i for i in range(1000))


def test_the_record_share_holds_measurements_to_their_share_of_cpu():
    from geodesic.core.path import RecordShare

    share = RecordShare(0.5)
    assert share.allows()
    with share.timed():
        burn(0.2)
    assert share.spent >= 0.2 and not share.allows()  # 0.2 s of 0.2: over half
    burn(0.3)
    assert share.allows()  # 0.2 s of 0.5: within half
    assert RecordShare(None).allows()


def test_a_budgeted_run_measures_its_record_within_its_share(mlp_setup, mnist_test):
    model, w0, groups, train, _ = mlp_setup
    reps = 40_000 // len(mnist_test.y) + 1  # 40,000 images or more: evaluating them costs far more than 5% of a step
    ev = Evaluation(mnist_test.x.repeat(reps, 1, 1, 1), mnist_test.y.repeat(reps))
    cfg = replace(PRESETS["recommended"], filters=8, seconds=6.0,
                  path=PathConfig(max_steps=300, eps=0.04, beta=1e-3, eval_every=1))
    out = run_sparsify(model, w0, groups, cfg, train, ev)
    relax = [r for r in out.rows if r["phase"] == "relax"]
    measured = [r for r in relax if not math.isnan(r["distance"])]
    assert out.status is Status.ARRIVED and len(relax) >= 10
    assert len(measured) < len(relax) / 2  # due every step, but most would overrun the share
    assert not math.isnan(relax[-1]["accuracy"]) and not math.isnan(relax[-1]["distance"])  # the end is measured
    assert all(math.isnan(r["accuracy"]) == math.isnan(r["distance"]) for r in relax)
    # a path given no share (recovery, merge, the hand-made ones above) measures D at every step


def test_a_walk_the_budget_cannot_carry_is_projected_and_restored_by_descent(mlp_setup, tmp_path):
    model, w0, groups, train, ev = mlp_setup
    # a walk far too slow for its budget: ε = 1e-6 (the budget's floor would lift it; adaptive=False keeps it)
    cfg = replace(PRESETS["recommended"], filters=8, seconds=4.0,
                  path=PathConfig(max_steps=10**4, eps=1e-6, eval_every=5, adaptive=False))
    writer = runs.RunWriter({"kind": "sparsify", "model": "mlp", "dataset": "mnist"}, root=tmp_path)
    out = run_sparsify(model, w0, groups, cfg, train, ev, writer=writer)
    assert out.status is Status.MISSED
    snap = next(r for r in out.rows if r["phase"] == "snap")
    restore = [r for r in out.rows if r["phase"] == "restore"]
    assert snap["target_norm"] == 0.0 and len(restore) >= 5 and restore[0]["step"] == snap["step"] + 1
    assert all(r["groups_zero"] >= 8 and r["target_norm"] == 0.0 for r in restore)
    assert not math.isnan(restore[-1]["accuracy"]) and restore[-1]["distance"] < snap["distance"]
    mask = group_mask([g for g in groups if g.name in writer.meta["target_groups"]], w0.numel())
    assert torch.all(out.w[mask] == 0) and torch.equal(runs.load_run(writer.dir).final()["w"], out.w)
    # it says what budget its steps would have needed: far beyond 4 CPU s at ε = 1e-6, in the run's summary too
    assert out.notes["budget_to_arrive"] > 100 * cfg.seconds and out.notes["budget_to_arrive"] % 100 == 0
    assert runs.load_run(writer.dir).meta["summary"]["budget_to_arrive"] == out.notes["budget_to_arrive"]
    # with no finishing steps (the literal algorithm's relax_steps 0) the walk has the whole budget, as written
    literal = run_sparsify(model, w0, groups, replace(cfg, relax_steps=0, seconds=1.0), train, ev)
    assert literal.status is Status.MISSED and {r["phase"] for r in literal.rows} == {"walk"}


def test_a_walk_that_ends_on_its_step_cap_is_projected_and_restored_too(mlp_setup):
    """A step cap under a budget (the recommended walk has none) ends the walk before its deadline: the net is still
    made sparse (projected) and restored by descent for the rest of the budget, not left with its groups nonzero."""
    model, w0, groups, train, ev = mlp_setup
    cfg = replace(PRESETS["recommended"], filters=8, seconds=3.0, path=replace(PRESETS["recommended"].path,
                                                                               max_steps=2))
    out = run_sparsify(model, w0, groups, cfg, train, ev)
    phases = [r["phase"] for r in out.rows]
    assert out.status is Status.MISSED and phases.count("walk") == 3 and "snap" in phases  # step 0, two steps
    assert phases[-1] == "restore" and out.rows[-1]["groups_zero"] >= 8 and out.rows[-1]["target_norm"] == 0.0
    assert PRESETS["recommended"].path.max_steps == MAX_STEPS  # the default walk: its budget ends it


def test_batches_are_halved_until_the_walk_share_holds_its_steps(mlp_setup, monkeypatch):
    from geodesic.experiments import sparsify as sp
    from geodesic.infra.lifecycle import Budget

    model, w0, groups, train, ev = mlp_setup
    cfg = replace(PRESETS["recommended"], filters=8, seconds=100.0)  # room: 0.5 · 100 / 50 = 1 CPU s a step
    fit = lambda c: sp.fit_batches(model, w0, groups, groups[:8], c, train, ev, Budget(c.seconds))  # noqa: E731
    monkeypatch.setattr(sp, "trial_steps", lambda *a: iter([5.0, 4.0]))  # the lesser: 4 s → 2 (16, 128) → 1 (8, 64)
    assert sp.MIN_WALK_STEPS == 50 and sp.WALK_SHARE == 0.5
    fitted = fit(cfg)
    assert (fitted.path.probe, fitted.pull_batch) == (8, 64)
    assert fitted == replace(cfg, pull_batch=64, path=replace(cfg.path, probe=8))  # nothing else changes
    monkeypatch.setattr(sp, "trial_steps", lambda *a: iter([1e3, 1e3]))  # never fits: down to the floors, not below
    assert (fit(cfg).path.probe, fit(cfg).pull_batch) == (sp.MIN_PROBE, sp.MIN_PULL)
    given = replace(cfg, pull_batch=20, path=replace(cfg.path, probe=3))  # below the floors: never raised
    assert fit(given) == given
    monkeypatch.setattr(sp, "trial_steps", lambda *a: iter([0.9]))  # fits as given: one trial step
    assert fit(cfg) == cfg
    literal = replace(LITERAL, filters=8)
    monkeypatch.setattr(sp, "trial_steps", lambda *a: pytest.fail("a literal walk keeps its batches"))
    assert fit(literal) == literal


def test_a_run_records_the_batches_its_budget_fitted(mlp_setup, tmp_path):
    model, w0, groups, train, ev = mlp_setup
    cfg = replace(PRESETS["recommended"], filters=8, seconds=0.05, path=PathConfig(max_steps=5, eps=0.04))
    writer = runs.RunWriter({"kind": "sparsify", "model": "mlp", "dataset": "mnist"}, root=tmp_path)
    out = run_sparsify(model, w0, groups, cfg, train, ev, writer=writer)  # one mlp step costs more than 0.5 ms
    assert (out.config.path.probe, out.config.pull_batch) == (8, 32)
    assert writer.meta["config"]["pull_batch"] == 32 and writer.meta["config"]["path"]["probe"] == 8


def test_stop_ends_within_one_step(mlp_setup):
    model, w0, groups, train, ev = mlp_setup
    stop = Stop()
    cfg = replace(LITERAL, filters=6, path=PathConfig(max_steps=200))
    out = run_sparsify(model, w0, groups, cfg, train, ev, stop=stop, on_row=lambda r: stop.set() if r["step"] == 3 else None)
    assert out.status is Status.STOPPED and out.rows[-1]["step"] == 3


def test_interrupted_run_keeps_every_step_written(mlp_setup, tmp_path):
    model, w0, groups, train, ev = mlp_setup
    writer = runs.RunWriter({"kind": "sparsify"}, root=tmp_path)

    def boom(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    cfg = replace(LITERAL, filters=6, path=PathConfig(max_steps=200, snapshot_every=2))
    with pytest.raises(KeyboardInterrupt):
        run_sparsify(model, w0, groups, cfg, train, ev, writer=writer, on_row=boom)
    run = runs.load_run(writer.dir)
    assert run.meta["status"] == "interrupted"
    assert run.metrics["step"].tolist() == [0, 1, 2, 3, 4]
    assert run.snapshots()[0].tolist() == [0, 2, 4]
    assert not torch.equal(run.final()["w"], w0) and torch.equal(run.final()["w_start"], w0)
    assert not list(writer.dir.glob(".*tmp"))


def test_candidate_strategies_choose_distinct_valid_sets(lenet_mnist, mnist_train):
    model, _ = lenet_mnist
    w, groups = flatten(model), zoo.filter_groups(model)
    picks = {s: choose_groups(s, model, w, groups, 50, mnist_train.x[:8]) for s in ("norm", "importance", "balanced", "random")}
    for s, chosen in picks.items():
        assert len({g.name for g in chosen}) == 50, s
    balanced = picks["balanced"]
    assert abs(sum(g.layer == "conv1" for g in balanced) / 50 - 20 / 60) < 0.05
    with pytest.raises(ValueError, match="cannot zero 61 groups: the model has 60"):
        choose_groups("norm", model, w, groups, 61)


def test_damage_is_reproducible_and_frozen_coordinates_stay_broken(mlp_setup):
    model, w0, groups, train, ev = mlp_setup
    spec = spec_of(model)
    a, mask_a = damage.damage(w0, spec, groups, "zero", 0.3, seed=7, layers=["fc1"])
    b, mask_b = damage.damage(w0, spec, groups, "zero", 0.3, seed=7, layers=["fc1"])
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b)
    assert 0.25 < mask_a.float().sum() / spec.shapes[0].numel() < 0.35
    assert not mask_a[spec.slice("fc2.weight")].any()
    c, _ = damage.damage(w0, spec, groups, "zero", 0.3, seed=8, layers=["fc1"])
    assert not torch.equal(a, c)
    sampler = objectives.BatchSampler.of(train, 0)
    p = Path(model, a, objectives.restore(model, w0, sampler), PathConfig(max_steps=10, eval_every=10, solver="explicit"),
             sampler, ev, groups, frozen=mask_a, w_ref=w0)
    steps = list(p)
    assert torch.equal(p.w[mask_a], a[mask_a])
    assert not torch.equal(p.w[~mask_a], a[~mask_a])
    assert steps[-1].distance < steps[0].distance  # recovery moves back toward the pre-damage function


def test_damage_kinds():
    m = zoo.build("lenet60", seed=0)
    w, spec, groups = flatten(m), spec_of(m), zoo.filter_groups(m)
    d, hit = damage.damage(w, spec, groups, "ablate", 5, seed=0)
    ablated = [g for g in groups if bool((d[g.idx] == 0).all())]
    assert len(ablated) == 5  # a fresh init has no zero filter: exactly the 5 ablated ones are zero
    assert torch.equal(hit, group_mask(ablated, w.numel()))  # and the mask is exactly their coordinates
    n, hit = damage.damage(w, spec, groups, "noise", 0.5, seed=0, layers=["conv2"])
    assert torch.equal(n[~hit], w[~hit]) and not torch.equal(n[hit], w[hit])
    with pytest.raises(ValueError, match="unknown damage"):
        damage.damage(w, spec, groups, "fire", 1, seed=0)
    with pytest.raises(ValueError, match="no parameters"):
        damage.damage(w, spec, groups, "zero", 0.1, seed=0, layers=["conv9"])


def test_pull_acts_on_free_coordinates_with_relative_strength(mlp_setup):
    model, w0, groups, train, ev = mlp_setup
    target = group_mask(groups[:3], w0.numel())
    w = w0 + 0.05 * torch.randn(w0.numel(), generator=torch.Generator().manual_seed(0))
    base = objectives.sparsify(target)
    pulled = objectives.with_pull(base, model, w0, objectives.BatchSampler.of(train, 0), 0.5, only=~target)
    v, vp = base(w), pulled(w)
    assert torch.equal(vp[target], v[target])  # the target part is untouched
    extra = vp - v
    assert math.isclose(float(extra.norm()), 0.5 * float(v.norm()), rel_tol=1e-5)
    assert float(extra[~target].norm()) > 0 and torch.all(extra[target] == 0)
    # the pull points downhill in D(w, w0), on the same kind of data
    from geodesic.core.metric import distance_grad
    g = distance_grad(model, w, w0, train.x[:2000])
    assert float(extra @ g) < 0


def test_candidate_configs_and_shortest():
    from geodesic.core.path import Step
    from geodesic.experiments.sparsify import Outcome, candidate_configs, shortest

    base = replace(LITERAL, filters=5)
    cfgs = candidate_configs(base, 6)
    assert [c.strategy for c in cfgs] == ["norm", "importance", "balanced", "random", "norm", "importance"]
    assert [c.path.seed for c in cfgs] == [0, 0, 0, 0, 1, 1] and all(c.filters == 5 for c in cfgs)

    def outcome(status, length):
        s = Step(1, "walk", length, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
        return Outcome(torch.zeros(1), status, [s.row()], [], 0.0).summary()

    # the shortest that arrived wins over a shorter one that did not
    assert shortest([outcome(Status.ARRIVED, 2.0), outcome(Status.MISSED, 1.0), outcome(Status.ARRIVED, 1.5)]) == 2
    assert shortest([outcome(Status.MISSED, 2.0), outcome(Status.STOPPED, 1.0)]) == 1
    # rows read back from JSON (plain strings), an errored path without a length
    rows = [{"status": "missed", "length": 0.5}, {"status": "arrived", "length": 3.0}, {"status": "error"}]
    assert shortest(rows) == 1 and shortest([{"status": "error"}, {"status": "missed", "length": 1.0}]) == 1


def test_finetune_keeps_the_mask_and_learns(mlp_setup):
    from geodesic.experiments.baselines import finetune, magnitude_prune

    model, w0, groups, train, ev = mlp_setup
    w_mag, mask = magnitude_prune(w0, groups, 20)
    assert torch.all(w_mag[mask] == 0) and int(mask.sum()) == 20 * 785
    _, acc_mag = ev.scores(model, w_mag)
    w_ft, steps = finetune(model, w_mag, mask, train, steps=60)
    _, acc_ft = ev.scores(model, w_ft)
    assert steps == 60 and torch.all(w_ft[mask] == 0)
    assert acc_ft > acc_mag + 0.02
    w_d, _ = finetune(model, w_mag, mask, train, steps=60, w_teacher=w0)
    assert torch.all(w_d[mask] == 0) and ev.scores(model, w_d)[1] > acc_mag
    with pytest.raises(ValueError, match="budget"):
        finetune(model, w_mag, mask, train)
    with pytest.raises(ValueError, match="schedule"):
        finetune(model, w_mag, mask, train, steps=1, schedule="linear")


def test_cosine_schedule_decays_the_learning_rate_to_zero(mlp_setup):
    """Adam's step is about lr in size whatever the gradient, so the cosine schedule shows in the step sizes:
    the first is lr·½(1 + cos 0) = lr, the last lr·½(1 + cos(π·(N−1)/N)) ≈ 0, the constant schedule keeps lr."""
    from geodesic.experiments.baselines import finetune, magnitude_prune

    model, w0, groups, train, _ = mlp_setup
    w_mag, mask = magnitude_prune(w0, groups, 20)
    n, sizes = 40, {}
    for schedule in ("constant", "cosine"):
        points = []
        finetune(model, w_mag, mask, train, steps=n, lr=1e-3, schedule=schedule, on_step=lambda i, p: points.append(p.clone()))
        steps = torch.stack([(b - a).abs().max() for a, b in zip(points, points[1:])])
        sizes[schedule] = steps
    last = 1e-3 * 0.5 * (1 + math.cos(math.pi * (n - 1) / n))
    assert sizes["cosine"][-1] < 3 * last < 0.05 * sizes["constant"][-1]
    assert sizes["cosine"][0] > 0.5 * sizes["constant"][0]


def test_descend_yields_copies_and_finetuning_takes_a_cpu_time_budget(mlp_setup):
    from geodesic.experiments.baselines import descend, finetune

    model, w0, groups, train, ev = mlp_setup
    points = descend(model, w0, torch.zeros_like(w0, dtype=torch.bool), train)
    first = next(points)
    kept = first.clone()
    next(points)
    assert torch.equal(first, kept)  # the next step does not change what was yielded
    mask = group_mask(groups[:4], w0.numel())
    w, steps = finetune(model, w0, mask, train, cpu_seconds=0.3)
    assert steps > 0 and torch.all(w[mask] == 0)
    with pytest.raises(ValueError, match="give a budget"):
        finetune(model, w0, mask, train)
