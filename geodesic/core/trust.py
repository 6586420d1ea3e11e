"""A step that checks itself: the trust region ε set by measurement, the way trust-region Newton and Levenberg–Marquardt
methods set theirs (K-FAC adapts its damping by the same kind of rule).

The metric predicts what a step θ does to the outputs on its probe batch: |Jθ|² = θᵀGθ. One forward pass measures
it: Δ = |y(w + θ) − y(w)|² = mean_x |φ f(x, w + θ) − φ f(x, w)|². Their ratio

    r = Δ / |Jθ|²                         (1: the net is linear over the step)

says whether the first-order model that chose θ held. The rule:

    r > REJECT (64) : the step left the linear regime: reject it, ε ← ε/4 (the radius halves) and solve again
                      from the same eigendecomposition of K (only the secular equation depends on ε)
    r > TARGET (16) : take it, ε ← ε/2 for the next step
    r < TARGET/2    : take it, ε ← min(2ε, cap)
    otherwise       : take it, ε unchanged (the band [TARGET/2, TARGET], one factor of 2 in r wide)

A step whose measured change is below FLOOR counts as linear whatever r says: a step almost entirely in the
metric's null space predicts ~0 and changes next to nothing. The user's ε is the starting radius and the cap.

Why a ratio of changes rather than of objective gains: the gain βθᵀv of a step toward its target can be large
enough that a step changing the function a great deal still "pays" by the tangent objective; on resnet8 at half
its groups that rule kept ε at its cap early on and the net died on the way (bench/results/linearity-*.md). The
thresholds bracket what the benchmarks found safe: walks whose median r was 14–19 arrived alive (lenet60 at
ε = 0.1, resnet8 at ε = 0.01), one whose median r was 352 did not (resnet8 at ε = 0.1). Holding r lower does not
help: with TARGET = 8 resnet8's walk took 668 steps at a median ε of 0.003 and arrived further from the dense
function (D 0.337, 0.7468 masked) than at a fixed ε = 0.01 (D 0.197, 0.8304): each step also adds the drift of
its small probe batch, so more, smaller steps are not safer, and they cost the budget the relaxation needs. Nor does
holding it higher: with the band at [16, 32] (rejection above 128), resnet8's walk to half its groups arrived nearer
the dense function than under this rule in one seed of four, further in two, and not within 600 steps in the fourth
(bench/results/linearity-band*-resnet8-*.md); on lenet60 it took about a sixth fewer steps at a level D.

Why growth starts below TARGET/2 and not lower: r need not fall as ε does. Near the end of lenet60's walk to 58 of
its 60 filters on MNIST, r stays between 4 and 60 for any ε from 0.1 down to 0.0004 (filters near zero leave their
units near the kink, at a distance that shrinks with the step). With growth only below TARGET/4, each spike above
TARGET halved ε and hardly any step doubled it again: ε ratcheted down to 0.0004, and the walk took 95 steps to the
fixed walk's 54 and kept half a point less after relaxation (bench/results/side-fixed-lenet60-mnist-58.md). Growing
below TARGET/2 lets ε climb back between spikes, though there it still drifts down: 87 steps on average, 0.3 point
behind the fixed walk (bench/results/side-grow-lenet60-mnist-58.md). Two other rules were tried there and not kept:
acting on the median r of three steps at one ε, so that a lone spike does not halve ε, took as many steps (83, 88, 79);
snapping to zero one step of the current ε from the hyperplane rather than √cap (that snap takes D from 0.31 to 1.39)
made the walk chase the hyperplane in hundreds of ever smaller steps until its deadline cut it (0.895).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REJECT = 64.0  # r above this: reject the step, shrink ε, solve again
TARGET = 16.0  # r above this: take the step, shrink ε for the next
GROW_BELOW = TARGET / 2  # r below this: take the step, grow ε for the next
SHRINK_REJECTED = 0.25  # ε ← ε/4 on a rejection (radius halved)
SHRINK, GROW = 0.5, 2.0
FLOOR = 1e-7  # a measured change this small (mean over the probe of |Δφ f|²) counts as linear
MAX_REJECTS = 10  # per step: ε falls by at most 4¹⁰ ≈ 10⁶ before the last, smallest step is taken as it is


@dataclass(frozen=True)
class Check:
    """What one tried step did to the probe's outputs, against what the metric predicted."""

    predicted: float  # |Jθ|² = θᵀGθ
    real: float  # Δ, measured

    @property
    def linearity(self) -> float:
        """r = Δ / |Jθ|²: 1 when the net is linear over the step; inf when the outputs at w + θ are not finite."""
        if not math.isfinite(self.real):
            return math.inf
        if self.real <= FLOOR:
            return 1.0 if self.predicted <= 0 else min(self.real / self.predicted, 1.0)
        return self.real / self.predicted if self.predicted > 0 else math.inf

    @property
    def accepted(self) -> bool:
        return self.linearity <= REJECT


def linear_eps(eps: float, check: Check) -> float:
    """The ε at which a step tried at `eps` would have had r = GROW_BELOW (the low edge of the band the rule holds
    ε in, so the estimate leans toward more, smaller steps), were r − 1 proportional to ε: ε·(GROW_BELOW − 1)/(r − 1),
    or `eps` itself when the step was linear (r ≤ GROW_BELOW). A rough model, for estimates only: on resnet8 at half
    its groups the median r fell from 352 to 6.3 as ε went from 0.1 to 0.006 (r − 1 ∝ ε^1.5), on lenet60 from 14 to
    7.7 as ε went from 0.1 to 0.025 (∝ ε^0.5)."""
    r = check.linearity
    if not math.isfinite(r):
        return 0.0
    return eps if r <= GROW_BELOW else eps * (GROW_BELOW - 1) / (r - 1)


def next_eps(eps: float, check: Check, cap: float) -> float:
    """The trust region after a tried step: quartered when rejected, halved or doubled (to at most `cap`) by how far
    its ratio is from TARGET."""
    r = check.linearity
    if r > REJECT:
        return eps * SHRINK_REJECTED
    if r > TARGET:
        return min(eps * SHRINK, cap)
    if r < GROW_BELOW:
        return min(eps * GROW, cap)
    return min(eps, cap)
