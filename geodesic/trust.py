"""A step that checks itself: the trust region ε set by measurement, as trust-region Newton and Levenberg–Marquardt
methods set theirs (K-FAC adapts its damping by the same rule).

The tangent problem is a model of what a step θ does: m(θ) = θᵀGθ − βθᵀv. Its predicted gain is

    pred = βθᵀv − |Jθ|²  ≥ 0            (θ = 0 is feasible, so the optimum is never worse)

and, measured on the same probe batch with one forward pass, the real gain is

    real = βθᵀv − Δ,    Δ = |y(w + θ) − y(w)|² = mean_x |φ f(x, w + θ) − φ f(x, w)|²

(the direction term is linear in θ, so only the functional change is measured). ρ = real / pred is 1 when the
net is linear over the step. The rule:

    ρ < ¼ : the step left the linear regime: reject it, ε ← ε/4 (the radius √ε halves), solve again from the same
            eigendecomposition of K (only the secular equation depends on ε)
    ρ > ¾ : accept; the model held, ε ← min(2ε, cap)
    else  : accept, ε unchanged

The user's ε is the starting radius and the cap. `linearity` = Δ / |Jθ|² is recorded beside ρ (1: linear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REJECT_BELOW = 0.25  # ρ under this: reject and shrink (Nocedal & Wright, Algorithm 4.1; K-FAC's ω rule)
GROW_ABOVE = 0.75  # ρ over this: grow
SHRINK = 0.25  # ε ← ε · SHRINK on a rejection (radius halved)
GROW = 2.0  # ε ← ε · GROW after a step that held (radius × √2)
MAX_REJECTS = 10  # per step: ε falls by at most 4¹⁰ ≈ 10⁶ before the last, smallest step is taken as it is


@dataclass(frozen=True)
class Check:
    """What one tried step did, against what the metric predicted."""

    gain: float  # βθᵀv, the direction term (exact: linear in θ)
    predicted: float  # |Jθ|² = θᵀGθ, the metric's prediction of the functional change
    real: float  # Δ, the measured change of the outputs on the probe batch

    @property
    def rho(self) -> float:
        """(βθᵀv − Δ) / (βθᵀv − |Jθ|²); −inf when the outputs at w + θ are not finite."""
        if not math.isfinite(self.real):
            return -math.inf
        denom = self.gain - self.predicted
        if denom <= 0:  # no predicted gain (θ = 0): the step holds if it changed nothing
            return 1.0 if self.real <= self.predicted else -math.inf
        return (self.gain - self.real) / denom

    @property
    def linearity(self) -> float:
        """Δ / |Jθ|²: 1 when the net is linear over the step."""
        return self.real / self.predicted if self.predicted > 0 else math.nan

    @property
    def accepted(self) -> bool:
        return self.rho >= REJECT_BELOW


def next_eps(eps: float, check: Check, cap: float) -> float:
    """The trust region after a tried step: shrunk when it is rejected, grown (to at most `cap`) when it held."""
    rho = check.rho
    if rho < REJECT_BELOW:
        return eps * SHRINK
    if rho > GROW_ABOVE:
        return min(eps * GROW, cap)
    return min(eps, cap)
