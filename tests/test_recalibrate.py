"""BatchNorm recalibration: exact statistics by hand on a tiny net, nets without BatchNorm untouched, and the
"+recal" sweep variants end to end (what is scored is what is saved)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import CKPT
from safetensors.torch import load_file
from torch import nn

from geodesic.core.params import flatten, spec_of, unflatten
from geodesic.experiments import recalibrate as recal
from geodesic.experiments.methods import METHODS, VARIANTS, parse_method
from geodesic.experiments.sweep import SweepSpec, run_sweep
from geodesic.store import checkpoints
from geodesic.store.source import Source


def tiny() -> nn.Module:
    """conv 1→2 3×3, BatchNorm2d, ReLU, dropout, linear 32→3, BatchNorm1d: in float64, running statistics far
    from any input's (so a layer left alone shows)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                        nn.Linear(32, 3), nn.BatchNorm1d(3)).double().eval()
    with torch.no_grad():
        for bn in (net[1], net[6]):
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
            bn.running_mean.fill_(7.0)
            bn.running_var.fill_(9.0)
    return net


def by_hand(net: nn.Module, w: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's input over the images, mean and unbiased variance per channel; a layer's input normalized by
    the earlier layers' statistics of the same images (biased variance, as a training-mode pass does)."""
    p = unflatten(spec_of(net), w)
    z1 = F.conv2d(x, p["0.weight"], p["0.bias"])
    m1, v1 = z1.mean((0, 2, 3)), z1.var((0, 2, 3), unbiased=True)
    b1 = z1.var((0, 2, 3), unbiased=False)
    a1 = torch.relu((z1 - m1[:, None, None]) / torch.sqrt(b1[:, None, None] + 1e-5) * p["1.weight"][:, None, None]
                    + p["1.bias"][:, None, None])
    z2 = a1.flatten(1) @ p["5.weight"].T + p["5.bias"]
    return {"1.running_mean": m1, "1.running_var": v1, "6.running_mean": z2.mean(0),
            "6.running_var": z2.var(0, unbiased=True)}


def test_recalibration_restores_the_exact_statistics_of_the_net_at_w():
    net = tiny()
    noise = torch.randn(spec_of(net).n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = flatten(net) + 0.3 * noise  # not the module's parameters: the statistics must be those of the net at w
    params_before = {k: v.clone() for k, v in net.named_parameters()}
    x = torch.rand(40, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    stats = recal.recalibrate(net, w, x)
    buffers = dict(net.named_buffers())
    for name, expected in by_hand(net, w, x).items():
        torch.testing.assert_close(buffers[name], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats[name], expected, rtol=1e-12, atol=1e-12)
    assert int(buffers["1.num_batches_tracked"]) == 1  # one batch: the running values are its statistics
    # only the buffers changed; every layer is back in eval mode with its momentum
    assert all(torch.equal(v, params_before[k]) for k, v in net.named_parameters())
    assert not any(m.training for m in net.modules()) and net[1].momentum == net[6].momentum == 0.1
    # the pure form computes the same without touching the module
    fresh = tiny()
    assert all(torch.equal(a, stats[k]) for k, a in recal.batchnorm_statistics(fresh, w, x).items())
    assert float(fresh[1].running_mean[0]) == 7.0


def test_a_net_without_batchnorm_is_unchanged(mlp_mnist, mnist_train):
    model, _ = mlp_mnist
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recal.recalibrate(model, flatten(model), mnist_train.x[:64]) == {}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_recalibration_images_are_distinct_seeded_and_capped(mnist_train):
    a, b = recal.images(mnist_train, 0), recal.images(mnist_train, 0)
    assert a.shape[0] == recal.IMAGES and torch.equal(a, b) and not torch.equal(a, recal.images(mnist_train, 1))
    small = type(mnist_train)(mnist_train.x[:10], mnist_train.y[:10], "mnist", "train", "bundled")
    assert recal.images(small, 0).shape[0] == 10


def test_every_method_has_a_recal_variant_and_nothing_else_parses():
    assert [parse_method(v) for v in VARIANTS] == [(m, True) for m in METHODS]
    assert [parse_method(m) for m in METHODS] == [(m, False) for m in METHODS]
    for bad in ("magnitude+recal+recal", "recal", "magnitude+other", "+recal"):
        with pytest.raises(ValueError, match="unknown method"):
            parse_method(bad)
    with pytest.raises(ValueError, match="methods must be"):
        SweepSpec(Source("x"), filters=(1,), methods=("magnitude+nope",)).validate()


def test_a_recal_cell_scores_and_saves_the_recalibrated_net(tmp_path):
    """resnet8 on the bundled images: magnitude and magnitude+recal zero the same groups; the variant's saved net
    holds the statistics recomputed for the masked weights on its training images, and scoring that saved net
    gives the accuracy in its row; the plain cell keeps the dense statistics."""
    source = Source(str(CKPT / "resnet8-mnist.safetensors"), "mnist", "bundled", 300)
    spec = SweepSpec(source, fractions=(0.5,), methods=("magnitude", "magnitude+recal"), data=(600,), seconds=1.0)
    table = run_sweep(spec, tmp_path / "sw", backend="loop").set_index("method")
    assert set(table["status"]) == {"done"}
    ckpt, _, train, test = source.open()
    cells = tmp_path / "sw" / "cells"
    plain = load_file(str(cells / table.loc["magnitude", "cell"] / "final.safetensors"))
    fixed = load_file(str(cells / table.loc["magnitude+recal", "cell"] / "final.safetensors"))
    dense = ckpt.model.state_dict()
    names = [f"{n}.{s}" for n, _ in recal.batchnorms(ckpt.model) for s in ("running_mean", "running_var")]
    assert all(torch.equal(plain[k], dense[k]) for k in names)
    assert all(torch.equal(plain[k], fixed[k]) for k in dense if k not in names and "num_batches" not in k)
    from geodesic.experiments.sweep import training_images

    w = flatten(checkpoints.load(cells / table.loc["magnitude", "cell"] / "final.safetensors")[0])
    expected = recal.batchnorm_statistics(ckpt.model, w, recal.images(training_images(train, 600), 0))
    assert all(torch.allclose(fixed[k], expected[k], atol=1e-6) for k in names)
    net, _ = checkpoints.load(cells / table.loc["magnitude+recal", "cell"] / "final.safetensors")
    from geodesic.core.train import evaluate

    assert evaluate(net, test)[1] == pytest.approx(table.loc["magnitude+recal", "accuracy"], abs=1e-9)
    assert table.loc["magnitude+recal", "accuracy"] != table.loc["magnitude", "accuracy"]


@pytest.mark.parametrize("method", VARIANTS)
def test_every_variant_ends_on_the_masked_net_and_records_its_recalibration(method):
    """On the mlp (no BatchNorm) a variant runs its method and ends with the mask, recalibration timed there."""
    from geodesic.core.params import group_mask
    from geodesic.core.path import Evaluation
    from geodesic.experiments.methods import Budget, Counter, Task, method_phases
    from geodesic.infra.lifecycle import execute

    ckpt, _, train, test = Source(str(CKPT / "mlp-mnist.safetensors"), "mnist", "bundled", 300).open()
    task = Task(ckpt.model, ckpt.w, ckpt.groups, 5, train, Evaluation(test.x, test.y), 0)
    chosen, phases = method_phases(method, task, Budget(0.5), Counter())
    rec = execute(phases)
    assert bool((rec.w[group_mask(chosen, ckpt.w.numel())] == 0).all())
    assert rec.rows[-1]["phase"] == "mask" and rec.rows[-1]["recal_seconds"] >= 0
