"""Mean network between two tasks: the walk learns B and keeps A, the relaxation lowers the discrete energy with
the ends fixed and finds the straight line where the metric is flat, run folders, the CLI's refusals."""

from dataclasses import replace
from itertools import count
from types import SimpleNamespace

import pytest
import torch
from conftest import CKPT
from safetensors.torch import load_file
from torch import nn

from geodesic import cli
from geodesic.core.params import flatten
from geodesic.core.path import PathConfig
from geodesic.experiments.baselines import finetune
from geodesic.experiments.merge import (
    PATHS_FILE,
    MergeConfig,
    concat,
    joint_train,
    path_energy,
    relax,
    run_merge,
    scores_both,
    straight_line,
)
from geodesic.infra.lifecycle import Status, Stop
from geodesic.store import checkpoints, data, runs


@pytest.fixture(scope="module")
def two_nets():
    a, _ = checkpoints.load(CKPT / "mlp-mnist.safetensors")
    b, _ = checkpoints.load(CKPT / "mlp-fashion-mnist.safetensors")
    return a, flatten(a), flatten(b)


@pytest.fixture(scope="module")
def splits():
    return {f"{t}_{s}": data.load(name, s, "bundled")
            for t, name in (("a", "mnist"), ("b", "fashion-mnist")) for s in ("train", "test")}


def short(phases=("walk",), steps=30, pull=1.0, **over) -> MergeConfig:
    path = PathConfig(beta=0.01, eps=0.5, eps_final=0.002, max_steps=steps, eval_every=10, snapshot_every=5)
    return MergeConfig(phases=phases, pull=pull, path=path, eval_size=500, **over)


def merge(two_nets, splits, cfg, **kw):
    model, w_a, w_b = two_nets
    return run_merge(model, w_a, w_b, splits["a_train"], splits["b_train"], splits["a_test"], splits["b_test"], cfg, **kw)


@pytest.mark.parametrize("over,message", [
    ({"phases": ()}, "non-empty subset"),
    ({"phases": ("walk", "fly")}, "non-empty subset"),
    ({"phases": ("walk", "walk")}, "repeat"),
    ({"direction": "sideways"}, "direction must be one of"),
    ({"pull": -1.0}, "pull must be"),
    ({"pull": float("nan")}, "pull must be"),
    ({"points": 1}, "points"),
    ({"relax_lr": 0.0}, "relax_lr"),
    ({"eval_size": -5}, "eval_size"),
    ({"joint_epochs": 0}, "joint_epochs"),
    ({"path": PathConfig(eps=-0.1)}, r"eps must be in \(0, "),
])
def test_validate_rejects_nonsense(over, message):
    with pytest.raises(ValueError, match=message):
        replace(MergeConfig(), **over).validate()


def test_straight_line_and_concat(splits):
    w_a, w_b = torch.randn(7), torch.randn(7)
    line = straight_line(w_a, w_b, 4)
    assert line.shape == (5, 7) and torch.equal(line[0], w_a) and torch.allclose(line[-1], w_b)
    assert torch.allclose(line[2], (w_a + w_b) / 2)
    both = concat(splits["a_test"], splits["b_test"])
    assert len(both) == 4000 and torch.equal(both.x[2000:], splits["b_test"].x)


def test_walk_learns_b_and_keeps_a(two_nets, splits):
    model, w_a, _ = two_nets
    before = scores_both(model, w_a, splits["a_test"], splits["b_test"])
    out = merge(two_nets, splits, short(steps=20))
    s = out.summary
    assert s["walk_steps"] == 20 and out.status is Status.DONE and s["walk_status"] is Status.DONE
    assert s["walk_accuracy_b"] > before["accuracy_b"] + 0.3  # learned B (from chance)
    assert s["walk_accuracy_a"] > before["accuracy"] - 0.04  # kept A within 4 points
    naive = merge(two_nets, splits, short(steps=20, pull=0.0)).summary
    assert s["walk_accuracy_a"] > naive["walk_accuracy_a"]  # the pull is what keeps A


def test_relaxation_lowers_energy_with_ends_fixed(two_nets, splits):
    model, w_a, w_b = two_nets
    g = torch.Generator().manual_seed(0)
    sample = lambda: torch.cat([splits["a_train"].batch(64, g)[0], splits["b_train"].batch(64, g)[0]])
    x_fixed = torch.cat([splits["a_test"].x[:256], splits["b_test"].x[:256]])
    line = straight_line(w_a, w_b, 4)
    relaxed, rows = relax(model, line, sample, iters=40, lr=2e-3, x_fixed=x_fixed, eval_every=20)
    assert torch.equal(relaxed[0], w_a) and torch.equal(relaxed[-1], line[-1])
    e0, e1 = path_energy(model, line, x_fixed)[0], path_energy(model, relaxed, x_fixed)[0]
    assert e1 < 0.9 * e0
    assert rows[0]["energy_fixed"] == pytest.approx(e0, rel=1e-5) and rows[-1]["energy_fixed"] == pytest.approx(e1, rel=1e-5)


def test_flat_metric_gives_the_straight_line():
    """f(x, w) = Wx + b is linear in w: with phi = logits, D(w, w') = (w − w')ᵀG(w − w') for a constant G, and the
    minimizer of N Σ D(w_i, w_{i+1}) with the ends fixed is the evenly spaced straight line."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    w_a, w_b = torch.randn(8), torch.randn(8)
    line = straight_line(w_a, w_b, 5)
    start = line.clone()
    start[1:-1] += 0.5 * torch.randn(4, 8)
    g = torch.Generator().manual_seed(1)
    relaxed, _ = relax(model, start, lambda: torch.randn(64, 3, generator=g), iters=200, lr=0.05, phi="logits")
    before = (start - line).abs().max()
    after = (relaxed - line).abs().max()
    assert torch.equal(relaxed[[0, -1]], line[[0, -1]])
    assert after < 0.01 * before, (before, after)


def final_net_is(run: runs.Run, model: nn.Module, w: torch.Tensor) -> bool:
    """final.safetensors is the model's plain state dict, and it and state.safetensors hold w."""
    net = type(model)()
    net.load_state_dict(load_file(str(run.dir / "final.safetensors")))
    return torch.equal(flatten(net), w.float()) and torch.equal(run.final()["w"], w.float())


def test_run_folder_loads_back(two_nets, splits, tmp_path):
    writer = runs.RunWriter({"kind": "merge", "model": "mlp", "dataset": "mnist", "task_b": "fashion-mnist"},
                            root=tmp_path, run_id="m")
    cfg = short(phases=("walk", "relax", "line"), steps=10, points=2, relax_iters=5)
    out = merge(two_nets, splits, cfg, writer=writer)
    run = runs.load_run(tmp_path / "m")
    assert run.meta["kind"] == "merge" and run.status is Status.DONE and out.status is Status.DONE
    assert run.meta["summary"]["walk_accuracy_b"] == pytest.approx(out.summary["walk_accuracy_b"])
    assert run.meta["summary"]["phases"] == {"walk": "done", "relax": "done", "line": "done"}
    counts = run.metrics.groupby("phase").size().to_dict()
    assert counts == {"walk": 11, "relax": 6, "relax-path": 3, "line": 3}
    assert final_net_is(run, two_nets[0], out.w) and torch.equal(run.final()["w_start"], two_nets[1])
    steps, snaps = run.snapshots()
    assert steps.tolist() == [0, 5, 10] and torch.equal(snaps[0], two_nets[1]) and torch.equal(snaps[-1], out.w)
    assert torch.equal(run.extra(PATHS_FILE)["relaxed"], out.relaxed) and out.relaxed.shape == (3, out.w.numel())


def test_baseline_phases_match_their_one_call_versions(two_nets, splits, tmp_path):
    model, w_a, _ = two_nets
    writer = runs.RunWriter({"kind": "merge", "model": "mlp"}, root=tmp_path, run_id="b")
    cfg = short(phases=("line", "finetune", "joint"), points=2, finetune_steps=20, joint_epochs=1, joint_lr=3e-3)
    out = merge(two_nets, splits, cfg, writer=writer)
    rows = runs.load_run(writer.dir).metrics
    assert out.status is Status.DONE and rows.groupby("phase", sort=False).size().to_dict() == {
        "line": 3, "finetune": 3, "joint": 2}  # finetune at 0, 10, 20; joint: training loss at its last step, scores
    assert list(rows[rows.phase == "joint"].step) == [79, 79] and out.summary["joint_steps"] == 79
    w_ft, _ = finetune(model, w_a, torch.zeros_like(w_a, dtype=torch.bool), splits["b_train"], steps=20,
                       lr=cfg.finetune_lr, batch=cfg.batch, seed=cfg.path.seed)
    w_joint, _ = joint_train(model, splits["a_train"], splits["b_train"], epochs=1, seed=0, lr=3e-3)
    assert torch.equal(out.baselines["finetune"], w_ft) and torch.equal(out.baselines["joint"], w_joint)
    paths = runs.load_run(writer.dir).extra(PATHS_FILE)
    assert torch.equal(paths["finetune"], w_ft) and torch.equal(paths["joint"], w_joint)
    assert final_net_is(runs.load_run(writer.dir), model, out.w)  # the line's best point


def test_stop_and_interruption_keep_what_was_done(two_nets, splits, tmp_path):
    stop = Stop()
    w1 = runs.RunWriter({"kind": "merge"}, root=tmp_path, run_id="stopped")
    out = merge(two_nets, splits, short(phases=("walk", "relax"), steps=50), writer=w1, stop=stop,
                on_row=lambda r: stop.set() if r["step"] == 3 else None)
    assert out.status is Status.STOPPED and out.summary["walk_steps"] == 3 and "relax_iters" not in out.summary
    assert out.rows[-1]["step"] == 3 and out.summary["phases"] == {"walk": Status.STOPPED}
    run = runs.load_run(w1.dir)
    assert run.status is Status.STOPPED and len(run.metrics) == 4 and final_net_is(run, two_nets[0], out.w)

    stop = Stop()  # a stop inside fine-tuning, between two recorded rows, ends it at once
    w3 = runs.RunWriter({"kind": "merge"}, root=tmp_path, run_id="stopped-finetune")
    out = merge(two_nets, splits, short(phases=("finetune",), finetune_steps=40), writer=w3, stop=stop,
                on_row=lambda r: stop.set() if r["step"] == 10 else None)
    assert out.status is Status.STOPPED and [r["step"] for r in out.rows] == [0, 10] and not out.baselines
    assert "finetune_steps" not in out.summary and runs.load_run(w3.dir).status is Status.STOPPED
    checks = count()  # the loop checks after every item of a phase, recorded row or not: here row 0, steps 1 … 5
    out = merge(two_nets, splits, short(phases=("finetune", "joint"), finetune_steps=40),
                stop=SimpleNamespace(is_set=lambda: next(checks) >= 5))
    assert out.status is Status.STOPPED and [r["step"] for r in out.rows] == [0] and not out.baselines

    def boom(row):
        if row["step"] == 4:
            raise RuntimeError("boom")
    w2 = runs.RunWriter({"kind": "merge", "model": "mlp"}, root=tmp_path, run_id="broken")
    with pytest.raises(RuntimeError, match="boom"):
        merge(two_nets, splits, short(steps=50), writer=w2, on_row=boom)
    run = runs.load_run(w2.dir)
    assert run.status is Status.INTERRUPTED and len(run.metrics) == 5
    # the weights of step 4 are kept: the same walk stopped at step 4 ends there
    stop = Stop()
    four = merge(two_nets, splits, short(steps=50), stop=stop, on_row=lambda r: stop.set() if r["step"] == 4 else None)
    assert final_net_is(run, two_nets[0], four.w) and not torch.equal(four.w, two_nets[1])


def test_joint_training_learns_both_tasks(two_nets, splits):
    model = two_nets[0]
    w, info = joint_train(model, splits["a_train"], splits["b_train"], epochs=1, seed=0, lr=3e-3)
    s = scores_both(model, w, splits["a_test"], splits["b_test"])
    assert info["steps"] == 79 and s["accuracy"] > 0.8 and s["accuracy_b"] > 0.65, s


def run_cli(*args):
    try:
        return cli.main(["merge", *args])
    except SystemExit as e:
        return e.code


def test_cli_help_explains_every_option(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["merge"]
    assert all(a.help for a in sub._actions if a.dest != "help")


def test_cli_refuses_mismatched_nets_and_full_out(tmp_path, capsys):
    out = tmp_path / "r"
    code = run_cli("--a", str(CKPT / "mlp-mnist.safetensors"), "--b", str(CKPT / "lenet60-fashion-mnist.safetensors"),
                   "--data", "bundled", "--out", str(out))
    assert code == 2 and "one architecture" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code = run_cli("--a", str(CKPT / "mlp-mnist.safetensors"), "--b", str(CKPT / "mlp-fashion-mnist.safetensors"),
                   "--data", "bundled", "--out", str(out))
    assert code == 2 and "not empty" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    code = run_cli("--a", str(CKPT / "mlp-mnist.safetensors"), "--b", str(CKPT / "mlp-fashion-mnist.safetensors"),
                   "--phases", "walk,swim", "--out", str(tmp_path / "s"))
    assert code == 2 and "subset" in capsys.readouterr().err


def test_cli_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli("--a", str(CKPT / "mlp-mnist.safetensors"), "--b", str(CKPT / "mlp-fashion-mnist.safetensors"),
                   "--data", "bundled", "--steps", "5", "--relax-iters", "3", "--points", "2", "--eval-size", "300",
                   "--out", str(out))
    assert code == 0
    run = runs.load_run(out)
    assert run.meta["kind"] == "merge" and run.meta["task_b"] == "fashion-mnist" and run.status is Status.DONE
    assert "walk (end)" in capsys.readouterr().out
