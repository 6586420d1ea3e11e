"""FIP baseline: the Bhattacharyya distance by hand, steps against finite differences, the end mask, budgets."""

import math

import pytest
import torch
from torch import nn

from geodesic.core.params import flatten, group_mask, load_flat
from geodesic.core.targets import smallest_groups
from geodesic.experiments import fip as F
from geodesic.store.data import Split
from geodesic.store.zoo import filter_groups


def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor, Split]:
    """A smooth 3→4→3 net in float64 (31 weights), the mask of its first hidden neuron, and 40 inputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    w0 = flatten(model)
    target = torch.zeros(w0.numel(), dtype=torch.bool)
    target[0:3] = True  # row 0 of the first weight
    target[12] = True  # its bias
    x = torch.randn(40, 3, dtype=torch.float64)
    return model, w0, target, Split(x, torch.zeros(40, dtype=torch.long), "tiny", "train", "bundled")


def b_sum_reference(model: nn.Module, w: torch.Tensor, w0: torch.Tensor, x: torch.Tensor) -> float:
    """Σ_b −log Σ_k √(p q) written as in the authors' loss (softmax, sqrt), on a copy of the model."""
    with torch.no_grad():
        p = torch.softmax(load_flat(model, w)(x), 1)
        q = torch.softmax(load_flat(model, w0)(x), 1)
        return float(-torch.log(torch.sqrt(p * q).sum(1)).sum())


def fd_grad(model: nn.Module, w: torch.Tensor, w0: torch.Tensor, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """∇B by central differences, coordinate by coordinate."""
    g = torch.zeros_like(w)
    for i in range(w.numel()):
        e = torch.zeros_like(w)
        e[i] = h
        g[i] = (b_sum_reference(model, w + e, w0, x) - b_sum_reference(model, w - e, w0, x)) / (2 * h)
    return g


def batches(split: Split, n: int, size: int, seed: int) -> list[torch.Tensor]:
    """The inputs fip draws at its first n steps."""
    g = torch.Generator().manual_seed(seed)
    return [split.batch(size, g)[0] for _ in range(n)]


def run(model, w0, target, split, **kw) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    iterates: list[torch.Tensor] = []
    w, done = F.fip(model, w0, target, split, on_step=lambda k, wk: iterates.append(wk), **kw)
    return w, done, iterates


def test_bhattacharyya_zero_positive_and_by_hand():
    z = torch.randn(5, 4)
    assert F.bhattacharyya(z, z).abs().item() < 1e-6
    assert F.bhattacharyya(z, z + torch.randn(5, 4)).item() > 0
    assert F.bhattacharyya(z, z + 7.0).abs().item() < 1e-6  # softmax is shift-invariant
    # p = (1/2, 1/2), q = (3/4, 1/4): B = −log(√(3/8) + √(1/8)); a second, identical row leaves the mean alone
    p, q = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[math.log(3), 0.0], [math.log(3), 0.0]])
    hand = -math.log(math.sqrt(3 / 8) + math.sqrt(1 / 8))
    assert F.bhattacharyya(p, q).item() == pytest.approx(hand, rel=1e-6)
    assert F.bhattacharyya(q, p).item() == pytest.approx(hand, rel=1e-6)
    # mean over rows: with a third row equal in p and q the mean is 2/3 of that
    p3, q3 = torch.cat([p, torch.zeros(1, 2)]), torch.cat([q, torch.zeros(1, 2)])
    assert F.bhattacharyya(p3, q3).item() == pytest.approx(2 * hand / 3, rel=1e-6)


def test_gradient_matches_finite_differences():
    model, w0, target, split = tiny()
    w = w0 + 0.3 * torch.randn(w0.shape, generator=torch.Generator().manual_seed(1), dtype=w0.dtype)
    x = split.x[:7]
    f = F.model_fn(model)
    q = f(w0, x).detach()
    grad = F.bhattacharyya_grad(f, w, x, q)
    ref = fd_grad(model, w, w0, x)
    assert torch.allclose(grad, ref, atol=1e-8, rtol=1e-6)
    u = F.direction(f, w, x, q, target, 0.1)
    assert torch.allclose(u, ref + 0.1 * torch.where(target, w, torch.zeros_like(w)), atol=1e-8, rtol=1e-6)
    assert ((u - grad)[~target] == 0).all()  # the pull acts on the target only


def test_steps_have_length_lr_and_the_fip_direction():
    model, w0, target, split = tiny()
    lr, lam, size = 0.3, 0.05, 6
    w, done, its = run(model, w0, target, split, steps=3, lr=lr, lam=lam, batch=size, seed=4)
    assert done == 3 and len(its) == 3
    xs, prev = batches(split, 3, size, 4), w0
    for k, (x, wk) in enumerate(zip(xs, its)):
        assert (wk - prev).norm().item() == pytest.approx(lr, rel=1e-12)
        grad = fd_grad(model, prev, w0, x)
        if k == 0:
            assert grad.abs().max().item() < 1e-7  # B is smallest at w0: the first step is the pull alone
        else:
            assert grad.norm().item() > 0.1 * lam * prev[target].norm().item()  # ∇B weighs in the check
        u = grad + lam * torch.where(target, prev, torch.zeros_like(prev))
        assert torch.allclose(wk - prev, -lr * u / u.norm(), atol=1e-8)
        prev = wk


def test_end_mask_zeroes_the_target_only():
    model, w0, target, split = tiny()
    w, done, its = run(model, w0, target, split, steps=4, batch=8)
    assert (w[target] == 0).all() and (its[-1][target] != 0).all()
    assert torch.equal(w[~target], its[-1][~target])
    assert w.dtype == w0.dtype and torch.equal(w0, flatten(model))  # w0 is not changed in place


def test_reproducible_by_seed_and_labels_unused():
    model, w0, target, split = tiny()
    a, _ = F.fip(model, w0, target, split, steps=3, batch=8, seed=2)
    relabeled = Split(split.x, torch.randint(3, (len(split),)), "tiny", "train", "bundled")
    b, _ = F.fip(model, w0, target, relabeled, steps=3, batch=8, seed=2)
    c, _ = F.fip(model, w0, target, split, steps=3, batch=8, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_budgets():
    model, w0, target, split = tiny()
    with pytest.raises(ValueError, match="budget"):
        F.fip(model, w0, target, split)
    with pytest.raises(ValueError, match="boolean mask"):
        F.fip(model, w0, target.double(), split, steps=1)
    w, done = F.fip(model, w0, target, split, steps=0)
    assert done == 0 and torch.equal(w, torch.where(target, torch.zeros_like(w0), w0))
    assert F.fip(model, w0, target, split, steps=5, batch=4)[1] == 5
    assert F.fip(model, w0, target, split, steps=1000, seconds=0.0, batch=4)[1] == 0
    assert F.fip(model, w0, target, split, steps=3, seconds=60.0, cpu_seconds=60.0, batch=4)[1] == 3
    _, done = F.fip(model, w0, target, split, seconds=0.2, batch=4)
    assert done >= 1
    _, done = F.fip(model, w0, target, split, cpu_seconds=0.2, batch=4)
    assert done >= 1


def test_step_normalizes_and_zero_direction_stays_put():
    w, u = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 0.0, 4.0])
    assert torch.allclose(F.step(w, u, 0.5), w - 0.1 * u)
    assert torch.equal(F.step(w, torch.zeros(3), 0.5), w)


def test_mlp_moves_toward_the_hyperplane_keeping_outputs(mlp_mnist, mnist_train, mnist_test):
    model, _ = mlp_mnist
    w0 = flatten(model)
    target = group_mask(smallest_groups(w0, filter_groups(model), 10), w0.numel())
    steps, lr = 20, 0.01
    w, done, its = run(model, w0, target, mnist_train, steps=steps, lr=lr)
    assert done == steps and (w[target] == 0).all()
    assert its[-1][target].norm() < w0[target].norm() - 0.5 * steps * lr  # most of each step is the pull
    x, f = mnist_test.x[:500], F.model_fn(model)
    with torch.no_grad():
        assert F.bhattacharyya(f(its[-1], x), f(w0, x)).item() < 1e-3
