"""The self-checking step (geodesic.core.trust) on nets whose real change is known in closed form, the re-solve from one
eigendecomposition, and the degenerate cases that are not failures."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from geodesic.core import objectives
from geodesic.core.params import flatten
from geodesic.core.path import Evaluation, Path, PathConfig
from geodesic.core.tangent import prepare_exact_gram, solve_cvxpy, solve_exact_gram
from geodesic.core.trust import FLOOR, GROW_BELOW, REJECT, TARGET, Check, linear_eps, next_eps
from geodesic.infra.lifecycle import Status

X = torch.tensor([[1.0], [2.0], [-1.0]])
MX = float(X.pow(2).mean())  # mean x² = 2


class Product(nn.Module):
    """f(x, w) = a·b·x (two 1×1 linear layers, w = (b, a)): J = (a x, b x)/√B, and a step θ = (θ_b, θ_a) changes
    f by (a θ_b + b θ_a + θ_a θ_b) x exactly, against (a θ_b + b θ_a) x predicted: the second-order term is known."""

    def __init__(self, a: float = 1.0, b: float = 1.0):
        super().__init__()
        self.inner, self.outer = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.inner.weight.fill_(b)
            self.outer.weight.fill_(a)

    def forward(self, x):
        return self.outer(self.inner(x))


def hand_theta(w: np.ndarray, v: np.ndarray, beta: float, eps: float) -> np.ndarray:
    """θ* of min θᵀGθ − βθᵀv, |θ|² ≤ ε for the product net, by a fine search on the circle (G is singular)."""
    b, a = w
    G = MX * np.array([[a * a, a * b], [a * b, b * b]])
    t = np.linspace(0, 2 * np.pi, 2_000_001)
    th = math.sqrt(eps) * np.stack([np.cos(t), np.sin(t)], 1)
    return th[(np.einsum("ij,jk,ik->i", th, G, th) - beta * th @ v).argmin()]


def hand_check(w: np.ndarray, v: np.ndarray, beta: float, eps: float) -> Check:
    """The predicted and the real change of the product net's output for the tangent step at ε, in closed form."""
    b, a = w
    tb, ta = hand_theta(w, v, beta, eps)
    return Check(MX * (a * tb + b * ta) ** 2, MX * (a * tb + b * ta + ta * tb) ** 2)


def product_path(beta: float, eps: float, steps: int = 1, adaptive: bool = True) -> Path:
    m = Product().eval()
    target = torch.tensor([False, True])  # walk a to 0
    cfg = PathConfig(phi="logits", beta=beta, eps=eps, probe=3, max_steps=steps, solver="explicit",
                     arrive_tol=1e-9, adaptive=adaptive)
    return Path(m, flatten(m), objectives.sparsify(target), cfg, lambda b: (X, None),
                Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[], target=target)


W0, V0 = np.array([1.0, 1.0]), np.array([0.0, -1.0])  # the product net's start and its direction toward a = 0


def test_a_step_that_leaves_the_linear_regime_is_rejected_and_solved_again_smaller():
    # by hand: at ε = 1 and ε/4 the second-order term θ_a θ_b dominates (r > REJECT); at ε/16 the step is taken
    r = [hand_check(W0, V0, 0.1, e).linearity for e in (1.0, 0.25, 0.0625)]
    assert r[0] > REJECT and r[1] > REJECT and GROW_BELOW < r[2] < TARGET
    p = product_path(0.1, 1.0)
    step = list(p)[1]
    assert step.rejected == 2 and step.eps == pytest.approx(0.0625)
    np.testing.assert_allclose((p.w - flatten(Product())).double().numpy(), hand_theta(W0, V0, 0.1, 0.0625), atol=2e-5)
    assert step.linearity == pytest.approx(r[2], rel=1e-3)
    assert p.eps == pytest.approx(0.0625)  # taken between GROW_BELOW and TARGET: the next step starts there too


@pytest.mark.parametrize("beta,eps,after", [(1.0, 1.0, 0.5), (1.0, 0.5, 0.5)])  # halved; kept
def test_a_step_taken_sets_the_next_eps_by_its_ratio(beta, eps, after):
    r = hand_check(W0, V0, beta, eps).linearity
    p = product_path(beta, eps)
    step = list(p)[1]
    assert step.rejected == 0 and step.eps == eps and step.linearity == pytest.approx(r, rel=1e-3)
    assert p.eps == pytest.approx(after) and p.eps == next_eps(eps, Check(1.0, r), cap=eps)


@pytest.mark.parametrize("eps", [0.0625, 0.25])
def test_a_step_that_stays_linear_grows_eps_up_to_the_cap(eps):
    # ε = 0.25: r ≈ 4.5, between TARGET / 4 and GROW_BELOW, where a net whose r does not fall with ε sits; a rule
    # that grew only below TARGET / 4 hardly ever brought ε back there after a spike had halved it
    r = hand_check(W0, V0, 1.0, eps).linearity
    assert r < GROW_BELOW and (eps == 0.0625 or r > TARGET / 4)
    p = product_path(1.0, 1.0)
    p.eps = eps  # as after earlier rejections: under the cap ε = 1
    step = list(p)[1]
    assert step.eps == eps and p.eps == pytest.approx(2 * eps)


def test_fixed_eps_records_the_check_but_takes_the_step():
    p = product_path(0.1, 1.0, adaptive=False)
    step = list(p)[1]
    assert step.rejected == 0 and step.eps == 1.0 and p.eps == 1.0
    assert step.linearity == pytest.approx(hand_check(W0, V0, 0.1, 1.0).linearity, rel=1e-3)


def test_a_linear_net_never_rejects_and_stays_at_the_cap():
    m = nn.Sequential(nn.Linear(2, 1, bias=False)).eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[0.8, -0.6]]))
    x = torch.tensor([[1.0, 0.5], [0.2, 1.0], [-0.7, 0.4]])
    target = torch.tensor([False, True])
    cfg = PathConfig(phi="logits", beta=1.0, eps=0.01, probe=3, max_steps=100)
    p = Path(m, flatten(m), objectives.sparsify(target), cfg, lambda b: (x, None),
             Evaluation(x, torch.zeros(3, dtype=torch.long)), groups=[], target=target)
    walk = [s for s in p if s.phase == "walk" and s.step > 0]
    assert p.status is Status.ARRIVED
    assert all(s.rejected == 0 and s.eps == 0.01 for s in walk)
    assert all(s.linearity == pytest.approx(1.0, rel=1e-3) for s in walk if s.step_length > 1e-4)


def test_ratio_and_next_eps_by_hand():
    assert Check(0.1, 0.1).linearity == pytest.approx(1.0) and Check(0.1, 0.1).accepted
    assert Check(0.1, math.inf).linearity == math.inf and not Check(0.1, math.inf).accepted  # outputs overflowed
    assert Check(0.0, FLOOR / 2).accepted  # a step in the metric's null space that changes next to nothing
    assert not Check(0.0, 1e-3).accepted  # one that predicts nothing and changes the outputs
    assert next_eps(0.1, Check(1.0, REJECT + 1), cap=0.1) == pytest.approx(0.025)  # rejected
    assert next_eps(0.1, Check(1.0, TARGET + 1), cap=0.1) == pytest.approx(0.05)  # taken, far from linear
    assert next_eps(0.05, Check(1.0, 1.0), cap=0.08) == pytest.approx(0.08)  # grows to the cap, not past it
    assert next_eps(0.05, Check(1.0, GROW_BELOW), cap=0.1) == 0.05  # in the band [GROW_BELOW, TARGET]: kept
    assert next_eps(0.05, Check(1.0, GROW_BELOW - 1), cap=0.1) == pytest.approx(0.1)  # just below it: doubled


def test_linear_eps_by_hand():
    assert linear_eps(0.1, Check(1.0, 1.0)) == 0.1  # linear: the step's own ε
    assert linear_eps(0.1, Check(1.0, GROW_BELOW)) == 0.1  # at the low edge of the band the rule holds ε in
    assert linear_eps(0.1, Check(1.0, 1 + 10 * (GROW_BELOW - 1))) == pytest.approx(0.01)  # r − 1 ten times over
    assert linear_eps(0.1, Check(1.0, math.inf)) == 0.0  # outputs overflowed: no ε is known to be linear


def test_the_steps_left_to_arrive_are_estimated_from_the_steps_taken():
    """A linear net (r = 1, every step at the cap, a constant gain per step): the estimate after 5 steps of how
    many steps are left (cpu_to_arrive / cpu_per_step) against the steps the walk then takes."""
    m = nn.Sequential(nn.Linear(2, 1, bias=False)).eval()
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[0.8, -0.6]]))
    x = torch.tensor([[1.0, 0.5], [0.2, 1.0], [-0.7, 0.4]])
    target = torch.tensor([False, True])
    cfg = PathConfig(phi="logits", beta=1.0, eps=1e-4, probe=3, max_steps=1000, arrive_tol=1e-3)
    p = Path(m, flatten(m), objectives.sparsify(target), cfg, lambda b: (x, None),
             Evaluation(x, torch.zeros(3, dtype=torch.long)), groups=[], target=target)
    assert math.isnan(p.cpu_to_arrive())  # nothing measured yet
    steps = iter(p)
    while next(steps).step < 5:
        pass
    predicted = p.cpu_to_arrive() / p.cpu_per_step()
    taken = sum(1 for s in steps if s.phase == "walk")
    assert p.status is Status.ARRIVED and taken > 20
    assert predicted == pytest.approx(taken, rel=0.1)
    assert p.cpu_to_arrive() == 0.0  # arrived


def test_a_re_solve_from_one_eigendecomposition_is_the_exact_step_at_every_eps():
    g = torch.Generator().manual_seed(0)
    J = torch.randn(12, 40, generator=g, dtype=torch.float64)
    v = torch.randn(40, generator=g, dtype=torch.float64)
    K, Jv = J @ J.T, J @ v
    solve = prepare_exact_gram(K, Jv, lambda u: J.T @ u, v, 0.5)
    for eps in (1.0, 0.1, 1e-3, 1e-6):
        once, fresh = solve(eps), solve_exact_gram(K, Jv, lambda u: J.T @ u, v, 0.5, eps)
        assert torch.allclose(once.theta, fresh.theta, atol=1e-12) and once.mu == fresh.mu
    ref = solve_cvxpy(J, v, 0.5, 0.1, solver="CLARABEL")  # and it solves the tangent problem
    assert solve(0.1).objective == pytest.approx(ref.objective, rel=1e-6)


def test_a_zero_direction_ends_a_walk_as_arrived_at_once():
    m = Product(a=0.0).eval()  # the target coordinate is already zero, and there is no pull
    target = torch.tensor([False, True])
    cfg = PathConfig(phi="logits", beta=0.1, eps=0.1, probe=3, max_steps=50, solver="explicit")
    p = Path(m, flatten(m), objectives.sparsify(target), cfg, lambda b: (X, None),
             Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[], target=target)
    rows = list(p)
    assert p.status is Status.ARRIVED and [r.phase for r in rows] == ["walk", "snap"]
    assert torch.equal(p.w, flatten(m))


def test_a_zero_direction_ends_a_phase_without_target_as_done():
    m = Product().eval()
    cfg = PathConfig(phi="logits", beta=0.1, eps=0.1, probe=3, max_steps=50, solver="explicit")
    p = Path(m, flatten(m), lambda w: torch.zeros_like(w), cfg, lambda b: (X, None),
             Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[])
    rows = list(p)
    assert p.status is Status.DONE and len(rows) == 1 and "nothing left" in p.reason
    assert not p.status.failed


def test_the_best_point_is_kept_when_the_end_scores_worse():
    m = Product().eval()
    w0 = flatten(m)
    cfg = PathConfig(phi="logits", beta=1.0, eps=0.01, probe=3, max_steps=20, solver="explicit", eval_every=5)
    # the walk moves a toward 0; the score prefers the start: the path must end back there
    p = Path(m, w0, objectives.sparsify(torch.tensor([False, True])), cfg, lambda b: (X, None),
             Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[], keep_best=lambda w: float((w - w0).norm()))
    rows = list(p)
    assert rows[-1].phase == "best" and torch.equal(p.w, w0) and torch.equal(p.snapshots[-1][1], w0)


def floored_walk(eps: float, max_steps: int, floor: float) -> Path:
    """The Product net's walk toward its second weight at 0, self-checked from `eps`, under a budget's floor."""
    m = Product().eval()
    target = torch.tensor([False, True])
    cfg = PathConfig(phi="logits", beta=0.1, eps=eps, probe=3, max_steps=max_steps, solver="explicit",
                     arrive_tol=1e-9)
    return Path(m, flatten(m), objectives.sparsify(target), cfg, lambda b: (X, None),
                Evaluation(X, torch.zeros(3, dtype=torch.long)), groups=[], target=target,
                eps_floor=lambda path: floor)


def test_a_budget_floor_takes_the_step_the_check_would_reject():
    p = floored_walk(1.0, 1, 0.25)
    step = list(p)[1]
    assert hand_check(W0, V0, 0.1, 0.25).linearity > REJECT  # the check alone would go on to ε/16
    assert step.rejected == 1 and step.eps == pytest.approx(0.25) and p.eps == pytest.approx(0.25)
    # taken against the check: what ends a walk the budget cannot carry (sparsify.FORCED_LIMIT)
    assert list(p.forced) == [True]
    r = hand_check(W0, V0, 0.1, 0.25).linearity  # the ε it would have had in the linear regime, for estimates
    assert list(p.linear) == [pytest.approx(0.25 * (GROW_BELOW - 1) / (r - 1), rel=1e-3)]
    assert p.cpu_per_step() > 0 and p.efficiency > 0  # what a budget's floor is computed from


def test_a_floor_above_the_cap_marks_the_deadline_out_of_reach():
    p = floored_walk(0.01, 2, 5.0)
    steps = list(p)[1:]
    assert all(s.eps <= 0.01 for s in steps) and p.short == 2  # the cap holds; sparsify.SHORT_LIMIT counts these
    q = floored_walk(0.01, 2, 0.001)
    list(q)
    assert q.short == 0


def test_walk_floor_lets_the_walk_arrive_by_its_deadline():
    from types import SimpleNamespace

    from geodesic.experiments.sparsify import walk_floor

    budget = SimpleNamespace(spent=lambda: 4.0)  # 4 of the deadline's 10 CPU s spent: 6 left, 0.9 of it used
    walk = SimpleNamespace(cpu_per_step=lambda: 0.1, efficiency=0.5, target_norm=lambda: 2.0, tol=0.1)
    steps = 0.9 * 6.0 / 0.1
    assert walk_floor(budget, 10.0)(walk) == pytest.approx((1.9 / (steps * 0.5)) ** 2)
    budget.spent = lambda: 12.0  # past the deadline: one step must do it
    assert walk_floor(budget, 10.0)(walk) == pytest.approx((1.9 / 0.5) ** 2)
    walk.efficiency = math.nan  # nothing measured yet: no floor
    assert walk_floor(budget, 10.0)(walk) == 0.0
