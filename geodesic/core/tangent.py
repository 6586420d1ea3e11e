"""The tangent problem: one step of a geodesic walk.

    θ* = argmin_θ  θᵀGθ − β θᵀv   s.t.  θᵀθ ≤ ε,      G = JᵀJ,  J: (k, n),  v: (n,)

KKT: (G + μI) θ = (β/2) v,  μ ≥ 0,  μ (θᵀθ − ε) = 0.

In an orthonormal basis {qᵢ} of eigenvectors of G that holds v (Gqᵢ = λᵢqᵢ, v = Σ cᵢqᵢ) the problem is
diagonal:

    θ(μ) = Σ yᵢ qᵢ,   yᵢ = (β/2) cᵢ / (λᵢ + μ),   |θ(μ)|² = (β/2)² Σ cᵢ² / (λᵢ + μ)²

and μ is the root of the secular equation 1/|θ(μ)| = 1/√ε (Moré–Sorensen), or μ = 0 when v has no part
in the null space of G (cᵢ = 0 wherever λᵢ = 0) and θ(0) = (β/2) G⁺v already fits in the ball.
The solvers differ only in how they build that basis:

    exact        K = JJᵀ = U diag(λ) Uᵀ:  qᵢ = Jᵀuᵢ/√λᵢ, cᵢ = aᵢ/√λᵢ (a = UᵀJv), plus q₀ = v⊥/|v⊥| with λ₀ = 0
    matrix_free  Lanczos on G from v (GLTR): G ≈ Q T Qᵀ, T = W diag(τ) Wᵀ, c = |v| Wᵀe₁
    cvxpy        no basis: the explicit conic program, the oracle for tests and benchmarks.

Everything is computed in float64; θ comes back in v's dtype. Callables (JT, jvp, vjp) are called with
float64 tensors and may return any floating dtype (a float32 model casts inside its own callable).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .metric import gram

F64 = torch.float64
EPS64 = torch.finfo(F64).eps
METHODS = ("exact", "matrix_free", "cvxpy")
NULL_RTOL = 1e-10  # |v⊥| ≤ NULL_RTOL·|v| counts as "v lies in the row space of J" (allows μ = 0)


@dataclass(frozen=True)
class TangentResult:
    """One solved tangent step."""

    theta: Tensor  # (n,) the step, in v's dtype
    mu: float  # Lagrange multiplier of the ball constraint, ≥ 0
    objective: float  # θᵀGθ − βθᵀv
    iterations: int  # secular iterations (exact) / Lanczos steps (matrix_free) / 0 (cvxpy)
    quad: float = math.nan  # θᵀGθ = |Jθ|² (exact solvers), the squared step length in the metric


# ----------------------------------------------------------------------------- validation


def _check_scalars(beta: float, eps: float) -> None:
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")


def _check_tensor(name: str, x: Tensor, ndim: int, finite: bool = True) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a real floating tensor, got dtype {x.dtype}")
    if finite:
        _check_finite(name, x)


def _check_finite(name: str, x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has non-finite entries (nan or inf)")


def _check_problem(v: Tensor, beta: float, eps: float, J: Tensor | None = None, J_finite: bool = True) -> None:
    """Shapes, dtypes, finiteness. J_finite=False leaves J's finiteness to a cheaper check on JJᵀ or Jx
    (torch.isfinite over a 320×20000 J costs 36 ms, a third of the whole exact solve)."""
    _check_tensor("v", v, 1)
    _check_scalars(beta, eps)
    if J is not None:
        _check_tensor("J", J, 2, finite=J_finite)
        if J.shape[1] != v.shape[0]:
            raise ValueError(f"J: (k, n) and v: (n,) disagree: J {tuple(J.shape)}, v {tuple(v.shape)}")


def _zero_result(v: Tensor) -> TangentResult:
    return TangentResult(torch.zeros_like(v), 0.0, 0.0, 0)


# ----------------------------------------------------------------------------- the secular equation


@dataclass(frozen=True)
class _Secular:
    """|θ(μ)|² = (β/2)² s(μ) for v written in eigen-directions of G:

        s(μ) = Σᵢ cᵢ²/(λᵢ+μ)²  +  B(μ)/μ²,      B(μ) = p² − Σⱼ aⱼ² (λⱼ+2μ)/(λⱼ+μ)²

    lam, c2: (r,) directions with λᵢ > 0 in split form (cᵢ = qᵢᵀv);  p2 = |v⊥|², v minus those parts;
    lam_w, a2_w: (q,) small-λ directions left inside v⊥, in Woodbury form (aⱼ = √λⱼ cⱼ = uⱼᵀJv):
    B(μ)/μ² = Σⱼ cⱼ²/(λⱼ+μ)² + |v⊥ − Σⱼ cⱼqⱼ|²/μ² without ever dividing by a tiny λⱼ.
    """

    lam: Tensor
    c2: Tensor
    p2: float
    lam_w: Tensor
    a2_w: Tensor

    def __call__(self, mu: float) -> tuple[float, float]:
        """(s(μ), s'(μ)),  s' = −2Σ cᵢ²/(λᵢ+μ)³ − 2B/μ³ + 2Σⱼ aⱼ²/(μ(λⱼ+μ)³)."""
        d, dw = self.lam + mu, self.lam_w + mu
        B = max(self.p2 - float((self.a2_w * (self.lam_w + 2 * mu) / dw**2).sum()), 0.0)
        try:
            s = float((self.c2 / d**2).sum()) + B / mu**2
            ds = -2 * float((self.c2 / d**3).sum()) - 2 * B / mu**3 + 2 * float((self.a2_w / dw**3).sum()) / mu
        except (ZeroDivisionError, OverflowError):  # μ so small that μ³ underflows
            return math.inf, -math.inf
        return s, ds

    def bracket(self, r: float) -> tuple[float, float]:
        """[lo, hi] ∋ root of s(μ) = r²: one split term alone reaches r² below lo; s(μ) ≤ |v|²/μ² above."""
        lo = float((self.c2.sqrt() / r - self.lam).max()) if self.lam.numel() else 0.0
        if not self.lam_w.numel():
            lo = max(lo, math.sqrt(self.p2) / r)
        return max(lo, 0.0), math.sqrt(float(self.c2.sum()) + self.p2) / r


def _secular_root(sec: _Secular, h: float, eps: float, tol: float, max_iter: int) -> tuple[float, int]:
    """Root μ > 0 of φ(μ) = 1/|θ(μ)| − 1/√ε with |θ(μ)|² = h² s(μ), h = β/2; returns (μ, iterations).

    φ is increasing and concave on μ > 0 (Moré–Sorensen), so Newton from the left of the root never
    overshoots it. Iterates outside the bracket [lo, hi] fall back to bisection in log μ.
    Stops when | |θ|²/ε − 1 | ≤ tol.
    """
    r = math.sqrt(eps) / h  # |θ(μ)|² = ε  ⇔  s(μ) = r²
    lo, hi = sec.bracket(r)
    mu = lo if lo > 0 else 0.1 * hi
    for it in range(1, max_iter + 1):
        s, ds = sec(mu)
        if not (0 < s < math.inf):  # underflow or overflow near an end: bisect
            lo, hi = (mu, hi) if s == math.inf else (lo, mu)
            mu = _log_midpoint(lo, hi)
            continue
        if abs(s / r**2 - 1.0) <= tol:
            return mu, it
        lo, hi = (mu, hi) if s > r**2 else (lo, mu)
        new = mu - (s**-0.5 - 1 / r) / (-0.5 * s**-1.5 * ds)
        if not lo < new < hi:
            new = _log_midpoint(lo, hi)
        if hi - lo <= 4 * EPS64 * hi or abs(new - mu) <= 4 * EPS64 * mu:  # as close as rounding allows
            return new, it
        mu = new
    warnings.warn(f"exact: secular equation not converged in {max_iter} iterations", RuntimeWarning, stacklevel=4)
    return mu, max_iter


def _log_midpoint(lo: float, hi: float) -> float:
    return math.sqrt(lo) * math.sqrt(hi) if lo > 0 else 0.1 * hi


# ----------------------------------------------------------------------------- exact


def solve_exact_gram(
    K: Tensor,
    Jv: Tensor,
    JT: Callable[[Tensor], Tensor],
    v: Tensor,
    beta: float,
    eps: float,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    rank_rtol: float | None = None,
) -> TangentResult:
    """Exact tangent step from K = JJᵀ: (k, k), Jv: (k,) and JT: u (k,) ↦ Jᵀu (n,); J itself is not needed.

    K = U diag(λ) Uᵀ, a = Uᵀ(Jv). Woodbury, (JᵀJ + μI)⁻¹ = (I − Jᵀ(K + μI)⁻¹J)/μ, gives
        θ(μ) = (β/2μ) (v − JᵀU diag(1/(λ+μ)) a)
             = (β/2) (JᵀU diag(1/(λ(λ+μ))) a + v⊥/μ),     v⊥ = v − JᵀU diag(1/λ) a   (v off the row space)
        |θ(μ)|² = (β/2)² (Σ (aᵢ²/λᵢ)/(λᵢ+μ)² + |v⊥|²/μ²)
    The split form has no cancellation as μ → 0 and gives θ(0) = (β/2) G⁺v = (β/2) JᵀU diag(1/λ²) a, used
    when |v⊥| ≤ NULL_RTOL·|v| and |θ(0)|² ≤ ε (then μ = 0). Directions with λ ≤ rank_rtol·λ_max (default
    10·k·eps of K's dtype: a K accumulated in float32 cannot resolve smaller eigenvalues) are never divided
    by: they stay in v⊥ and enter in Woodbury form. μ solves the secular equation to ||θ|²/ε − 1| ≤ tol.
    When μ > 0, θ is scaled onto |θ|² = ε: this removes the first-order objective error that the
    normal-equations projection (error ~ eps₆₄·λ_max/λ) leaves in |θ|. The objective is computed
    analytically (|Jθ|² = (β/2)² Σ aᵢ²/(λᵢ+μ)²), to ~1e-9 relative on ill-conditioned K.
    Cost: one eigh O(k³), O(k) per secular iteration, two calls of JT. G: (n, n) is never formed.
    """
    _check_scalars(beta, eps)
    return prepare_exact_gram(K, Jv, JT, v, beta, tol=tol, max_iter=max_iter, rank_rtol=rank_rtol)(eps)


def solve_exact(
    J: Tensor,
    v: Tensor,
    beta: float,
    eps: float,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    rank_rtol: float | None = None,
) -> TangentResult:
    """Exact tangent step with an explicit J: (k, n): solve_exact_gram with K = JJᵀ, JT(u) = Jᵀu.

    The objective is evaluated exactly as |Jθ|² − βθᵀv (one more O(kn) product).
    """
    _check_problem(v, beta, eps, J, J_finite=False)
    J64, v64 = J.to(F64), v.to(F64)
    K = gram(J64)
    _check_finite("J", K)  # nan/inf in J reach JJᵀ
    if beta == 0 or not bool(v.any()):
        return _zero_result(v)
    rank_rtol = 10 * max(J.shape[0], 1) * EPS64 if rank_rtol is None else rank_rtol  # K is exact to float64
    solver = ExactTangent(K, J64 @ v64, lambda u: J64.T @ u, v64, beta, tol, max_iter, rank_rtol)
    theta, mu, quad, iters = solver.solve(eps)
    return TangentResult(theta.to(v.dtype), mu, tangent_objective(J64, theta, v64, beta), iters, quad)


class ExactTangent:
    """The exact solver with K = JJᵀ = U diag(λ) Uᵀ decomposed once: `solve(ε)` for any trust region.

    Only the secular equation depends on ε, so a step rejected by a trust-region check re-solves here at O(k)
    per secular iteration plus one call of JT, with no new metric and no new eigh. All in float64 without checks
    (solve_exact_gram checks its arguments before building one).
    """

    def __init__(self, K: Tensor, Jv: Tensor, JT: Callable[[Tensor], Tensor], v: Tensor, beta: float,
                 tol: float = 1e-10, max_iter: int = 100, rank_rtol: float = 0.0, null_rtol: float = NULL_RTOL):
        self.v, self.JT, self.h, self.tol, self.max_iter = v, JT, beta / 2, tol, max_iter
        self.zero = beta == 0 or not bool(v.any())
        if self.zero:
            return
        k = Jv.shape[0]
        lam, self.U = torch.linalg.eigh(0.5 * (K + K.T))
        self.lam = lam = lam.clamp_min(0.0)
        self.split = split = lam > rank_rtol * (float(lam.max()) if k else 0.0)
        self.a = a = self.U.T @ Jv
        self.lam_s, self.a_s = lam[split], a[split]
        self.v_perp = v - JT(self.U[:, split] @ (self.a_s / self.lam_s)) if bool(split.any()) else v
        self.p2 = float(self.v_perp @ self.v_perp)
        self.in_row_space = self.p2 <= null_rtol**2 * float(v @ v)
        self.secular = _Secular(self.lam_s, self.a_s**2 / self.lam_s, self.p2, lam[~split], a[~split] ** 2)

    def solve(self, eps: float) -> tuple[Tensor, float, float, int]:
        """(θ, μ, θᵀGθ, secular iterations) for |θ|² ≤ ε."""
        if self.zero:
            return torch.zeros_like(self.v), 0.0, 0.0, 0
        h, a, lam, U = self.h, self.a, self.lam, self.U
        if self.in_row_space and h**2 * float((self.a_s**2 / self.lam_s**3).sum()) <= eps:
            theta = h * self.JT(U[:, self.split] @ (self.a_s / self.lam_s**2))  # θ(0) = (β/2) G⁺v, inside the ball
            return theta, 0.0, h**2 * float((self.a_s**2 / self.lam_s**2).sum()), 0
        mu, iters = _secular_root(self.secular, h, eps, self.tol, self.max_iter)
        coef = torch.where(self.split, a / (lam * (lam + mu)), -a / (mu * (lam + mu)))
        theta = h * (self.v_perp / mu + self.JT(U @ coef))
        scale = math.sqrt(eps) / float(theta.norm())
        Jtheta2 = (scale * h) ** 2 * float((a**2 / (lam + mu) ** 2).sum())  # Uᵀ Jθ = scale·h·a/(λ+μ)
        return scale * theta, mu, Jtheta2, iters


def prepare_exact_gram(
    K: Tensor, Jv: Tensor, JT: Callable[[Tensor], Tensor], v: Tensor, beta: float, *,
    tol: float = 1e-10, max_iter: int = 100, rank_rtol: float | None = None,
) -> Callable[[float], TangentResult]:
    """solve_exact_gram as a function of ε, K decomposed once: `prepare_exact_gram(K, Jv, JT, v, β)(ε)` equals
    `solve_exact_gram(K, Jv, JT, v, β, ε)` for every ε, at O(k) per secular iteration and one call of JT."""
    _check_problem(v, beta, 1.0)
    _check_tensor("K", K, 2)
    _check_tensor("Jv", Jv, 1)
    k = Jv.shape[0]
    if K.shape != (k, k):
        raise ValueError(f"K must be (k, k) with k = len(Jv) = {k}, got {tuple(K.shape)}")
    rank_rtol = 10 * max(k, 1) * torch.finfo(K.dtype).eps if rank_rtol is None else rank_rtol
    JT64 = lambda u: JT(u).to(F64)  # noqa: E731
    # JT usually computes in v's precision (a float32 model): v⊥ then carries ~eps₃₂·|v| of rounding
    null_rtol = max(NULL_RTOL, 100 * torch.finfo(v.dtype).eps)
    v64 = v.to(F64)
    solver = ExactTangent(K.to(F64), Jv.to(F64), JT64, v64, beta, tol, max_iter, rank_rtol, null_rtol)

    def solve(eps: float) -> TangentResult:
        _check_scalars(beta, eps)
        theta, mu, quad, iters = solver.solve(eps)
        if solver.zero:
            return _zero_result(v)
        return TangentResult(theta.to(v.dtype), mu, quad - beta * float(theta @ v64), iters, quad)

    return solve


# ----------------------------------------------------------------------------- matrix-free (GLTR)


def solve_matrix_free(
    jvp: Callable[[Tensor], Tensor],
    vjp: Callable[[Tensor], Tensor],
    v: Tensor,
    beta: float,
    eps: float,
    *,
    k: int | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
    rank_rtol: float = 1e-12,
) -> TangentResult:
    """Tangent step from products only: jvp(x) = Jx (n → k), vjp(u) = Jᵀu (k → n). J is never stored.

    GLTR: Lanczos on G (Gx = vjp(jvp(x))) from q₁ = v/|v| with full reorthogonalization builds
    G Q_m = Q_m T_m + b_{m+1} q_{m+1} e_mᵀ. In the Krylov basis θ = Q_m y and Q_mᵀv = |v|e₁, so each step
    solves the small problem  min yᵀT_m y − β|v| y₁  s.t. |y|² ≤ ε  exactly (eigh of T_m + secular root).
    Residual of the full KKT system: |(G + μI)θ − (β/2)v| = |b_{m+1}| |y_m|; stop when it is below
    tol·|(β/2)v|, or on breakdown (b_{m+1} ≈ 0: G has rank ≤ k, so the Krylov space has dimension ≤ k+1).
    max_iter defaults to min(n, k+1) if k is known, else min(n, 500). Memory: the basis Q, (m, n) float64.
    Accuracy: products carry rounding ~eps·|G|, so expect trouble when μ ≲ 1e-10·|G|; with float32
    products the residual floors near 1e-7: pass tol ≈ 1e-6 there.
    """
    _check_problem(v, beta, eps)
    n = v.shape[0]
    if beta == 0 or not bool(v.any()):
        return _zero_result(v)
    max_iter = min(n, (k + 1) if k is not None else 500) if max_iter is None else max_iter
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    v64 = v.to(F64)
    vnorm, target = float(v64.norm()), tol * beta / 2 * float(v64.norm())
    Q = torch.empty(min(max_iter, 32), n, dtype=F64, device=v.device)  # grows by doubling
    Q[0] = v64 / vnorm
    alphas: list[float] = []
    bs: list[float] = []  # bs[j] couples q_j and q_{j+1}
    anorm = 0.0
    for m in range(1, max_iter + 1):
        q = Q[m - 1]
        w = vjp(jvp(q)).to(F64)
        _check_product(w, n)
        alphas.append(float(q @ w))
        w = w - alphas[-1] * q - (bs[-1] * Q[m - 2] if m > 1 else 0.0)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - Q[:m].T @ (Q[:m] @ w)
        b = float(w.norm())
        anorm = max(anorm, abs(alphas[-1]) + b + (bs[-1] if bs else 0.0))
        done = b <= 1e-13 * anorm or m == max_iter  # breakdown: the Krylov space is invariant
        if done or m <= 20 or m % (m // 10) == 0:  # the m×m eigh is O(m³): check every ~10% later on
            y, mu, obj = _solve_tridiagonal(alphas, bs, vnorm, beta, eps, rank_rtol)
            residual = b * abs(float(y[-1]))
            if done or residual <= target:
                break
        bs.append(b)
        if m == Q.shape[0]:
            Q = torch.cat([Q, torch.empty_like(Q[: min(m, max_iter - m)])])
        Q[m] = w / b
    if residual > target and not b <= 1e-13 * anorm:
        warnings.warn(
            f"matrix_free: not converged after {m} Lanczos steps, relative KKT residual "
            f"{residual / (beta / 2 * vnorm):.2e} > tol {tol:.1e}",
            RuntimeWarning,
            stacklevel=2,
        )
    theta = Q[:m].T @ y
    return TangentResult(theta.to(v.dtype), mu, obj, m)


def _check_product(w: Tensor, n: int) -> None:
    if w.shape != (n,):
        raise ValueError(f"vjp(jvp(x)) must return shape ({n},), got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("vjp(jvp(x)) returned non-finite entries")


def _solve_tridiagonal(
    alphas: list[float], bs: list[float], vnorm: float, beta: float, eps: float, rank_rtol: float
) -> tuple[Tensor, float, float]:
    """min yᵀTy − β|v| y₁ s.t. |y|² ≤ ε for T = tridiag(b, α, b): (m, m); returns (y, μ, objective).

    T = W diag(τ) Wᵀ, c = |v| Wᵀe₁, z = Wᵀy: zᵢ = (β/2) cᵢ/(τᵢ+μ). τᵢ ≤ rank_rtol·τ_max counts as 0.
    """
    m, h = len(alphas), beta / 2
    T = torch.diag(torch.tensor(alphas, dtype=F64))
    if m > 1:
        off = torch.tensor(bs[: m - 1], dtype=F64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    tau, W = torch.linalg.eigh(T)
    tau = tau.clamp_min(0.0)
    tau = torch.where(tau > rank_rtol * float(tau.max()), tau, torch.zeros_like(tau))
    c = vnorm * W[0]
    pos = tau > 0
    p2 = float((c[~pos] ** 2).sum())
    z0 = torch.where(pos, h * c / torch.where(pos, tau, torch.ones_like(tau)), torch.zeros_like(c))
    if p2 <= NULL_RTOL**2 * vnorm**2 and float(z0 @ z0) <= eps:
        mu, z = 0.0, z0
    else:
        empty = tau.new_zeros(0)
        mu, _ = _secular_root(_Secular(tau[pos], c[pos] ** 2, p2, empty, empty), h, eps, 1e-14, 200)
        z = h * c / (tau + mu)
    return W @ z, mu, float(tau @ z**2 - beta * (c @ z))


# ----------------------------------------------------------------------------- cvxpy reference


def solve_cvxpy(
    J: Tensor, v: Tensor, beta: float, eps: float, solver: str = "SCS", solver_opts: dict | None = None
) -> TangentResult:
    """Reference: min |Jθ|² − βvᵀθ s.t. |θ|² ≤ ε as a conic program (cvxpy; SCS or CLARABEL).

    Written as sum_squares(J θ), not quad_form(θ, G): the n×n G is never built (at 320×20000 it would be
    3.2 GB) and the conic form is smaller. Tight tolerances by default (SCS eps 1e-9, Clarabel 1e-9):
    this is the oracle. μ is the dual value of the ball constraint. A θ that overshoots the ball by
    solver rounding is scaled back onto it, so the objective is that of a feasible point.
    """
    import cvxpy as cp
    import numpy as np

    _check_problem(v, beta, eps, J)
    solver = solver.upper()
    defaults = {
        "SCS": dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000),
        "CLARABEL": dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9),
    }
    if solver not in defaults:
        raise ValueError(f"solver must be 'SCS' or 'CLARABEL', got {solver!r}")
    Jn, vn = J.to(F64).cpu().numpy(), v.to(F64).cpu().numpy()
    theta = cp.Variable(vn.shape[0])
    ball = cp.sum_squares(theta) <= eps
    problem = cp.Problem(cp.Minimize(cp.sum_squares(Jn @ theta) - beta * (vn @ theta)), [ball])
    problem.solve(solver=solver, **{**defaults[solver], **(solver_opts or {})})
    if theta.value is None:
        raise RuntimeError(f"cvxpy/{solver} failed: status {problem.status}")
    t = torch.as_tensor(theta.value, dtype=F64)
    t = t * min(1.0, math.sqrt(eps) / max(float(t.norm()), 1e-300))
    mu = max(float(np.asarray(ball.dual_value).reshape(-1)[0]), 0.0)
    return TangentResult(t.to(v.dtype).to(v.device), mu, tangent_objective(J, t, v, beta), 0)


# ----------------------------------------------------------------------------- public entry point


def tangent_objective(J: Tensor, theta: Tensor, v: Tensor, beta: float) -> float:
    """θᵀGθ − βθᵀv = |Jθ|² − βθᵀv, in float64. J: (k, n), θ: (n,), v: (n,)."""
    J64, t64 = J.to(F64), theta.to(F64)
    Jt = J64 @ t64
    return float(Jt @ Jt - beta * (t64 @ v.to(F64)))


def solve_tangent(
    J: Tensor | None,
    v: Tensor,
    beta: float,
    eps: float,
    method: str = "exact",
    *,
    jvp: Callable[[Tensor], Tensor] | None = None,
    vjp: Callable[[Tensor], Tensor] | None = None,
    k: int | None = None,
    tol: float = 1e-10,
    max_iter: int | None = None,
) -> TangentResult:
    """θ* = argmin θᵀGθ − βθᵀv s.t. θᵀθ ≤ ε, G = JᵀJ, by method 'exact' | 'matrix_free' | 'cvxpy'.

    exact and cvxpy need J: (k, n). matrix_free takes jvp (Jx) and vjp (Jᵀu), or builds them from J.
    tol: exact, on ||θ|²/ε − 1| in the secular equation; matrix_free, on the relative KKT residual
    |(G + μI)θ − (β/2)v| / |(β/2)v|; cvxpy keeps its own tight solver tolerances. max_iter: secular
    iterations (exact, default 100) or Lanczos steps (matrix_free, default min(n, k+1)).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "matrix_free":
        if jvp is None or vjp is None:
            if J is None:
                raise ValueError("matrix_free needs J or both jvp and vjp")
            _check_problem(v, beta, eps, J, J_finite=False)  # non-finite J shows in the products
            J64 = J.to(F64)
            jvp, vjp, k = (lambda x: J64 @ x), (lambda u: J64.T @ u), J.shape[0]
        return solve_matrix_free(jvp, vjp, v, beta, eps, k=k, tol=tol, max_iter=max_iter)
    if J is None:
        raise ValueError(f"method {method!r} needs an explicit J: (k, n)")
    if method == "exact":
        return solve_exact(J, v, beta, eps, tol=tol, max_iter=100 if max_iter is None else max_iter)
    return solve_cvxpy(J, v, beta, eps)
