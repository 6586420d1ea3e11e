"""The tangent problem θ* = argmin θᵀGθ − βθᵀv s.t. |θ|² ≤ ε, G = JᵀJ: every solver against oracles.

Oracles: cvxpy (Clarabel, SCS), an independent SVD + bisection solve written here, problems solved by
hand, the KKT conditions, and random feasible points. Tolerances are stated where they are used.
"""

import math
import warnings

import pytest
import torch

from geodesic.core.tangent import (
    TangentResult,
    gram,
    solve_cvxpy,
    solve_exact,
    solve_exact_gram,
    solve_matrix_free,
    solve_tangent,
    tangent_objective,
)

F64 = torch.float64


def make_problem(k: int, n: int, rank: int | None = None, v_mode: str = "rand", seed: int = 0):
    """J: (k, n), full rank or a product of thin (k, r)(r, n) factors; v random, in J's row space, or mixed."""
    g = torch.Generator().manual_seed(seed)
    if rank is None:
        J = torch.randn(k, n, generator=g, dtype=F64)
    else:
        J = torch.randn(k, rank, generator=g, dtype=F64) @ torch.randn(rank, n, generator=g, dtype=F64)
    v_row = J.T @ torch.randn(k, generator=g, dtype=F64)
    v_row = v_row / v_row.norm() * math.sqrt(n)
    v_rand = torch.randn(n, generator=g, dtype=F64)
    v = {"rand": v_rand, "row": v_row, "mix": v_row + 0.1 * v_rand}[v_mode]
    return J, v


def svd_reference(J, v, beta, eps):
    """Independent solve: J = U S Vᵀ, v = V c + v⊥, |θ(μ)|² = (β/2)²(Σ c²/(s²+μ)² + |v⊥|²/μ²),
    μ by plain bisection in log μ (no Newton, no Woodbury)."""
    _, S, Vh = torch.linalg.svd(J, full_matrices=False)
    keep = S > S.max() * 1e-12
    S, Vh = S[keep], Vh[keep]
    lam, c = S**2, Vh @ v
    v_perp = v - Vh.T @ c
    p2, h = float(v_perp @ v_perp), beta / 2

    def norm2(mu):
        return h**2 * (float((c**2 / (lam + mu) ** 2).sum()) + (p2 / mu**2 if p2 > 0 else 0.0))

    if p2 <= 1e-20 * float(v @ v) and h**2 * float((c**2 / lam**2).sum()) <= eps:
        return h * Vh.T @ (c / lam), 0.0
    lo, hi = 1e-30, h * float(v.norm()) / math.sqrt(eps) * 2
    for _ in range(300):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if norm2(mid) > eps else (lo, mid)
    mu = hi
    return h * (Vh.T @ (c / (lam + mu)) + v_perp / mu), mu


def rel_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def kkt_residual(J, res: TangentResult, v, beta) -> float:
    """Normwise backward error of (G + μI)θ = (β/2)v with Gθ = Jᵀ(Jθ):
    |r| / (|G||θ| + μ|θ| + (β/2)|v|)."""
    theta = res.theta.to(F64)
    r = J.T @ (J @ theta) + res.mu * theta - beta / 2 * v
    G_norm = float(torch.linalg.matrix_norm(J, ord=2)) ** 2
    scale = (G_norm + res.mu) * float(theta.norm()) + beta / 2 * float(v.norm())
    return float(r.norm()) / scale


# (k, n, rank, v_mode): k < n, k > n, rank-deficient products, v in / out of / partly in the row space
SHAPES = [
    (5, 40, None, "rand"),
    (30, 12, None, "rand"),
    (30, 12, None, "row"),
    (20, 60, 4, "rand"),
    (20, 60, 4, "row"),
    (20, 60, 4, "mix"),
    (40, 25, 6, "mix"),
    (1, 7, None, "mix"),
]
BETA_EPS = [(1.0, 0.01), (0.01, 0.01), (10.0, 1.0), (0.1, 100.0)]


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")  # Clarabel at 1e-9; the check is ours
@pytest.mark.parametrize("beta,eps", BETA_EPS)
@pytest.mark.parametrize("k,n,rank,v_mode", SHAPES)
def test_exact_and_matrix_free_match_clarabel(k, n, rank, v_mode, beta, eps):
    J, v = make_problem(k, n, rank, v_mode, seed=k * n)
    ref = solve_cvxpy(J, v, beta, eps, solver="CLARABEL")
    assert float(ref.theta @ ref.theta) <= eps * (1 + 1e-12)  # scaled back into the ball
    for method in ("exact", "matrix_free"):
        res = solve_tangent(J, v, beta, eps, method)
        assert res.iterations <= (6 if method == "exact" else min(n, k + 1)), method  # Newton, not bisection
        assert float(res.theta @ res.theta) <= eps * (1 + 1e-9), method
        assert rel_gap(res.objective, ref.objective) <= 1e-6, (method, res.objective, ref.objective)
        assert rel_gap(res.objective, tangent_objective(J, res.theta, v, beta)) <= 1e-9, method
        # the multiplier: Clarabel's dual is good to ~1e-4; μ = 0 shows as a dual near 0
        mu_scale = beta / 2 * float(v.norm()) / math.sqrt(eps)  # μ ≤ this upper bound always
        assert res.mu <= mu_scale * (1 + 1e-12)
        assert abs(res.mu - ref.mu) <= 1e-4 * max(res.mu, 1e-3 * mu_scale), (method, res.mu, ref.mu)


@pytest.mark.parametrize("k,n,rank,v_mode", [(20, 60, 4, "mix"), (30, 12, None, "rand")])
def test_exact_matches_scs(k, n, rank, v_mode):
    J, v = make_problem(k, n, rank, v_mode, seed=1)
    ref = solve_cvxpy(J, v, 0.1, 0.01)  # SCS is the default, eps 1e-9
    res = solve_exact(J, v, 0.1, 0.01)
    assert ref.iterations == 0
    assert rel_gap(res.objective, ref.objective) <= 1e-6


@pytest.mark.parametrize("decay", [4, 8, 12])
@pytest.mark.parametrize("beta", [1.0, 1e-3])
def test_ill_conditioned_matches_svd_reference(decay, beta):
    """Singular values of J spanning 10^-decay: where cvxpy loses digits, the SVD solve does not."""
    g = torch.Generator().manual_seed(decay)
    k, n, eps = 60, 400, 0.01
    A = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=F64))[0]
    B = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))[0].T
    J = 10 * (A * torch.logspace(0, -decay, k, dtype=F64)) @ B
    v = J.T @ torch.randn(k, generator=g, dtype=F64) + 1e-3 * torch.randn(n, generator=g, dtype=F64)
    theta_ref, mu_ref = svd_reference(J, v, beta, eps)
    f_ref = tangent_objective(J, theta_ref, v, beta)
    for method in ("exact", "matrix_free"):
        res = solve_tangent(J, v, beta, eps, method)
        assert float(res.theta @ res.theta) <= eps * (1 + 1e-9)
        assert rel_gap(tangent_objective(J, res.theta, v, beta), f_ref) <= 1e-9, method
        assert rel_gap(res.mu, mu_ref) <= 1e-6, method
        assert float((res.theta - theta_ref).norm()) <= 1e-5 * math.sqrt(eps), method


@pytest.mark.parametrize("null", [1e-6, 1e-9])
def test_exact_tiny_mu_on_ill_conditioned_row_space(null):
    """μ ≈ 2e-12·λ_max, below the rank threshold of K: directions too small to divide by enter in Woodbury
    form. (Treating them as null space instead gives 1e-5 errors here.) Below μ ≈ 1e-14·λ_max the
    normal equations (K = JJᵀ) run out of digits: that regime needs an SVD of J."""
    g = torch.Generator().manual_seed(0)
    k, n = 60, 400
    A = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=F64))[0]
    B = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))[0].T
    J = (A * torch.logspace(0, -8, k, dtype=F64)) @ B
    v = B.T @ torch.randn(k, generator=g, dtype=F64) + null * torch.randn(n, generator=g, dtype=F64)
    theta_ref, mu_ref = svd_reference(J, v, 1e-12, 1.0)
    res = solve_exact(J, v, 1e-12, 1.0)
    assert 1e-12 < mu_ref < 1e-11
    assert rel_gap(res.objective, tangent_objective(J, theta_ref, v, 1e-12)) <= 1e-8
    assert rel_gap(res.mu, mu_ref) <= 1e-6


@pytest.mark.parametrize("k,n,rank,v_mode", SHAPES)
@pytest.mark.parametrize("beta,eps", [(1.0, 0.01), (1e-3, 10.0)])
def test_kkt_conditions(k, n, rank, v_mode, beta, eps):
    """(G + μI)θ = (β/2)v,  μ ≥ 0,  |θ|² ≤ ε,  μ(|θ|² − ε) = 0."""
    J, v = make_problem(k, n, rank, v_mode, seed=7)
    for method, tol in (("exact", 1e-10), ("matrix_free", 1e-10)):
        res = solve_tangent(J, v, beta, eps, method)
        assert kkt_residual(J, res, v, beta) <= tol, method
        assert res.mu >= 0
        norm2 = float(res.theta @ res.theta)
        assert norm2 <= eps * (1 + 1e-10)
        assert res.mu * abs(norm2 - eps) <= 1e-9 * res.mu * eps
        assert res.iterations <= (6 if method == "exact" else min(n, k + 1))


@pytest.mark.parametrize("k,n,rank", [(10, 50, None), (30, 12, None), (20, 60, 4)])
@pytest.mark.parametrize("method", ["exact", "matrix_free"])
def test_mu_zero_when_pseudo_inverse_step_fits(k, n, rank, method):
    """v in the row space and a large ball: θ = (β/2) G⁺v, μ = 0 (checked against torch.linalg.pinv)."""
    J, v = make_problem(k, n, rank, "row", seed=3)
    beta = 0.01
    theta0 = beta / 2 * torch.linalg.pinv(J.T @ J, hermitian=True, rtol=1e-10) @ v
    eps = 4 * float(theta0 @ theta0)
    res = solve_tangent(J, v, beta, eps, method)
    assert res.mu == 0.0
    assert res.iterations <= (0 if method == "exact" else min(n, k + 1))
    assert float((res.theta - theta0).norm()) <= 1e-8 * float(theta0.norm())
    # shrink the ball below |θ₀|²: the constraint becomes active, μ > 0
    res = solve_tangent(J, v, beta, 0.25 * float(theta0 @ theta0), method)
    assert res.mu > 0
    assert float(res.theta @ res.theta) == pytest.approx(0.25 * float(theta0 @ theta0), rel=1e-9)


@pytest.mark.parametrize("method", ["exact", "matrix_free"])
def test_one_dimensional_by_hand(method):
    """n = k = 1: min j²θ² − βvθ s.t. θ² ≤ ε. Inside: θ = βv/(2j²), μ = 0; else θ = √ε sign v, μ = β|v|/(2√ε) − j²."""
    J, v = torch.tensor([[2.0]], dtype=F64), torch.tensor([3.0], dtype=F64)
    res = solve_tangent(J, v, beta=1.0, eps=1.0, method=method)  # θ = 3/8, inside the ball
    assert res.mu == 0.0
    assert float(res.theta) == pytest.approx(3 / 8, rel=1e-14)
    assert res.objective == pytest.approx(4 * 9 / 64 - 9 / 8, rel=1e-14)
    res = solve_tangent(J, v, beta=4.0, eps=0.25, method=method)  # θ₀ = 1.5 > 0.5
    assert float(res.theta) == pytest.approx(0.5, rel=1e-12)
    assert res.mu == pytest.approx(4 * 3 / (2 * 0.5) - 4, rel=1e-10)
    assert res.objective == pytest.approx(4 * 0.25 - 4 * 3 * 0.5, rel=1e-12)


@pytest.mark.parametrize("method", ["exact", "matrix_free", "cvxpy"])
def test_two_dimensional_by_hand(method):
    """J = [2 0], v = (1, 1), β = 2: θ = (1/(4+μ), 1/μ). Pick μ = 1: θ = (0.2, 1), ε = 1.04,
    objective 4·0.04 − 2·1.2 = −2.24. The second coordinate is G's null space, so μ > 0 here."""
    J, v = torch.tensor([[2.0, 0.0]], dtype=F64), torch.tensor([1.0, 1.0], dtype=F64)
    res = solve_tangent(J, v, beta=2.0, eps=1.04, method=method, tol=1e-15)  # tol: the secular equation
    tol = 1e-6 if method == "cvxpy" else 1e-12
    assert res.theta.tolist() == pytest.approx([0.2, 1.0], rel=tol, abs=tol)
    assert res.mu == pytest.approx(1.0, rel=max(tol, 1e-4 if method == "cvxpy" else 0))
    assert res.objective == pytest.approx(-2.24, rel=tol)


@pytest.mark.parametrize("v_mode,eps", [("mix", 0.01), ("row", 1e6)])  # μ > 0 and μ = 0
def test_exact_gram_matches_exact_and_calls_JT_in_float64(v_mode, eps):
    J, v = make_problem(25, 80, 8, v_mode, seed=11)
    seen = []

    def JT(u):
        seen.append(u.dtype)
        return J.T @ u

    res_gram = solve_exact_gram(J @ J.T, J @ v, JT, v, 0.5, eps)
    res = solve_exact(J, v, 0.5, eps)
    assert (res.mu == 0) == (v_mode == "row")
    assert set(seen) == {F64} and len(seen) == 2  # v⊥ and θ: two products
    assert torch.allclose(res_gram.theta, res.theta, rtol=0, atol=1e-14)
    assert res_gram.mu == pytest.approx(res.mu, rel=1e-12)  # K by matmul here, by dsyrk in solve_exact
    assert rel_gap(res_gram.objective, res.objective) <= 1e-9  # analytic vs |Jθ|² − βθᵀv


@pytest.mark.parametrize("method", ["exact", "matrix_free"])
def test_tiny_null_part_still_activates_the_ball(method):
    """v = row-space part + 1e-6 (relative) off it: the problem is unbounded without the ball, so μ > 0 and
    |θ|² = ε even when the pseudo-inverse step would fit; the null part takes up the rest of the ball."""
    J, v = make_problem(10, 50, None, "row", seed=4)
    g = torch.Generator().manual_seed(1)
    null = torch.randn(50, generator=g, dtype=F64)
    null -= torch.linalg.pinv(J) @ (J @ null)
    v = v + 1e-6 * float(v.norm()) * null / null.norm()
    beta, eps = 0.01, 100.0
    res = solve_tangent(J, v, beta, eps, method)
    assert res.mu > 0
    assert float(res.theta @ res.theta) == pytest.approx(eps, rel=1e-9)
    assert float(res.theta @ null) / float(null.norm()) > 0.5 * math.sqrt(eps)  # mostly along the null part
    theta_ref, mu_ref = svd_reference(J, v, beta, eps)
    assert rel_gap(res.objective, tangent_objective(J, theta_ref, v, beta)) <= 1e-9


def test_matrix_free_from_products_only():
    J, v = make_problem(15, 90, None, "mix", seed=5)
    J32 = J.float()
    calls = {"jvp": 0, "vjp": 0}

    def jvp(x):  # a float32 "model": the callable casts its float64 input itself
        calls["jvp"] += 1
        return J32 @ x.float()

    def vjp(u):
        calls["vjp"] += 1
        return J32.T @ u.float()

    res = solve_tangent(None, v, 0.3, 0.01, "matrix_free", jvp=jvp, vjp=vjp, k=15, tol=1e-6)
    ref = solve_exact(J32.double(), v, 0.3, 0.01)
    assert calls["jvp"] == calls["vjp"] == res.iterations <= 16
    assert rel_gap(res.objective, ref.objective) <= 1e-6
    assert float((res.theta - ref.theta).norm()) <= 1e-5 * 0.1


def test_matrix_free_warns_when_not_converged():
    J, v = make_problem(40, 200, None, "rand", seed=2)
    with pytest.warns(RuntimeWarning, match="not converged"):
        res = solve_matrix_free(lambda x: J @ x, lambda u: J.T @ u, v, 1e-3, 0.01, max_iter=3)
    assert res.iterations == 3
    assert float(res.theta @ res.theta) <= 0.01 * (1 + 1e-9)  # still a feasible step


@pytest.mark.parametrize("method", ["exact", "matrix_free", "cvxpy"])
def test_float32_inputs(method):
    J, v = make_problem(12, 70, None, "mix", seed=9)
    ref = solve_exact(J, v, 0.2, 0.01)
    res = solve_tangent(J.float(), v.float(), 0.2, 0.01, method, tol=1e-6 if method == "matrix_free" else 1e-10)
    assert res.theta.dtype == torch.float32
    assert rel_gap(res.objective, ref.objective) <= 1e-5  # the inputs themselves are rounded to 1e-7
    assert float((res.theta.double() - ref.theta).norm()) <= 1e-4 * 0.1


@pytest.mark.parametrize("k,n,rank,v_mode", [(5, 40, None, "rand"), (20, 60, 4, "mix"), (30, 12, None, "row")])
def test_not_beaten_by_random_feasible_points(k, n, rank, v_mode):
    """f(θ*) ≤ f(θ) for θ on the sphere, inside the ball, and near θ* (a cheap independent check)."""
    J, v = make_problem(k, n, rank, v_mode, seed=13)
    beta, eps = 0.5, 0.01
    res = solve_exact(J, v, beta, eps)
    g = torch.Generator().manual_seed(0)
    d = torch.randn(3000, n, generator=g, dtype=F64)
    sphere = d / d.norm(dim=1, keepdim=True) * math.sqrt(eps)
    inside = sphere * torch.rand(3000, 1, generator=g, dtype=F64)
    near = res.theta + 1e-3 * math.sqrt(eps) * d[:1000] / d[:1000].norm(dim=1, keepdim=True)
    near = near / torch.clamp(near.norm(dim=1, keepdim=True) / math.sqrt(eps), min=1.0)
    cands = torch.cat([sphere, inside, near])
    f = ((cands @ J.T) ** 2).sum(1) - beta * cands @ v
    assert float(f.min()) >= res.objective - 1e-12 * abs(res.objective)


@pytest.mark.parametrize("method", ["exact", "matrix_free", "cvxpy"])
def test_zero_direction_or_beta_gives_zero_step(method):
    J, v = make_problem(5, 20)
    for vv, beta in ((v, 0.0), (torch.zeros_like(v), 1.0)):
        res = solve_tangent(J, vv, beta, 0.01, method)
        assert float(res.theta.abs().max()) <= 1e-9 and res.objective == pytest.approx(0.0, abs=1e-12)


def test_rank_zero_jacobian_walks_straight_along_v():
    """G = 0: θ = √ε v/|v|, μ = (β/2)|v|/√ε."""
    v = torch.tensor([3.0, 4.0], dtype=F64)
    res = solve_exact(torch.zeros(3, 2, dtype=F64), v, 1.0, 0.25)
    assert res.theta.tolist() == pytest.approx([0.3, 0.4], rel=1e-14)
    assert res.mu == pytest.approx(0.5 * 5 / 0.5, rel=1e-12)


J_OK, V_OK = make_problem(4, 6)
NAN_V = V_OK.clone()
NAN_V[2] = float("nan")
INF_J = J_OK.clone()
INF_J[1, 1] = float("inf")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eps=0.0), "eps"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(eps=float("inf")), "eps"),
        (dict(beta=-0.1), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(v=V_OK[None]), "v must be 1-D"),
        (dict(v=V_OK[:5]), "disagree"),
        (dict(J=J_OK[0]), "J must be 2-D"),
        (dict(v=NAN_V), "non-finite"),
        (dict(J=INF_J), "non-finite"),
        (dict(v=torch.arange(6)), "floating"),
        (dict(method="newton"), "method"),
    ],
)
@pytest.mark.parametrize("method", ["exact", "matrix_free", "cvxpy"])
def test_bad_inputs_raise_value_error(kwargs, match, method):
    args = dict(J=J_OK, v=V_OK, beta=1.0, eps=0.01, method=method) | kwargs
    with pytest.raises(ValueError, match=match):
        solve_tangent(**args)


def test_bad_inputs_other_entry_points():
    with pytest.raises(ValueError, match="needs an explicit J"):
        solve_tangent(None, V_OK, 1.0, 0.01, "exact")
    with pytest.raises(ValueError, match="jvp and vjp"):
        solve_tangent(None, V_OK, 1.0, 0.01, "matrix_free", jvp=lambda x: x)
    with pytest.raises(ValueError, match=r"K must be \(k, k\)"):
        solve_exact_gram(torch.eye(3, dtype=F64), torch.ones(4, dtype=F64), lambda u: u, V_OK, 1.0, 0.01)
    with pytest.raises(ValueError, match="solver"):
        solve_cvxpy(J_OK, V_OK, 1.0, 0.01, solver="OSQP")
    with pytest.raises(ValueError, match="shape"):
        solve_matrix_free(lambda x: J_OK @ x, lambda u: u, V_OK, 1.0, 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="max_iter"):
            solve_matrix_free(lambda x: J_OK @ x, lambda u: J_OK.T @ u, V_OK, 1.0, 0.01, max_iter=0)


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-13), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(7, 30), (40, 9), (1, 5)])
def test_gram_is_JJT_and_exactly_symmetric(shape, dtype, tol):
    J = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    K = gram(J)
    assert K.dtype == dtype and torch.equal(K, K.T)
    assert torch.allclose(K, J @ J.T, rtol=tol, atol=tol)
    assert torch.allclose(gram(J.T.contiguous().T), K)  # a non-contiguous J gives the same K


@pytest.mark.parametrize("v_mode,eps", [("mix", 0.01), ("row", 1e6)])  # μ > 0 and μ = 0
def test_exact_reports_the_step_length_in_the_metric(v_mode, eps):
    """quad = θᵀGθ = |Jθ|², computed analytically from the eigenbasis, matches the explicit product."""
    J, v = make_problem(30, 90, 8, v_mode, seed=5)
    for res in (solve_exact(J, v, 0.3, eps), solve_exact_gram(J @ J.T, J @ v, lambda u: J.T @ u, v, 0.3, eps)):
        assert res.quad == pytest.approx(float((J @ res.theta).pow(2).sum()), rel=1e-9)
        assert res.objective == pytest.approx(res.quad - 0.3 * float(res.theta @ v), rel=1e-9, abs=1e-15)
