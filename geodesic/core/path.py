"""A path: repeated tangent steps from a start point along a direction field, one `Step` record per step.

At w_t, on a fresh probe batch, solve θ_t = argmin θᵀG θ − β θᵀv(w_t) s.t. |θ|² ≤ ε_t, measure what θ_t does to
the probe's outputs against what the metric predicted, and either move w_{t+1} = w_t + θ_t or shrink ε_t and solve
again from the same eigendecomposition (`geodesic.core.trust`: the step checks itself; cfg.eps is the starting radius and
the cap). Stop rules: arrival (|w_T| ≤ arrive_tol, then w_T := 0 exactly), a zero direction (nothing left to change:
arrived, or done), max steps, distance budget, a stop request; DIVERGED only when the weights, the outputs or the
direction are no longer finite numbers.
"""

from __future__ import annotations

import math
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from torch import nn

from ..infra.lifecycle import Status
from .metric import Metric, functional_distance, gram, jacobian_fast, mapped_outputs, model_fn
from .objectives import Field, Sampler
from .params import Group, group_norms
from .tangent import prepare_exact_gram
from .train import scores
from .trust import MAX_REJECTS, Check, linear_eps, next_eps

SOLVERS = ("gram", "explicit")
MAX_BETA = 1e6  # beyond this β·v overflows float32 in the solve; steps are Euclidean long before
MAX_EPS = 1e4  # |θ| ≤ 100: any larger step leaves every trained net's finite range
MAX_PROBE = 1024
MAX_STEPS = 10**7  # the most steps a path may be given (a relaxation that the budget ends is given this)
MAX_SKIPPED = 3  # consecutive steps whose direction is not finite before the path counts as diverged


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first check that fails (configs validate this way)."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


@dataclass(frozen=True)
class PathConfig:
    """Hyperparameters of one path (all recorded in the run's meta.json)."""

    phi: str = "sqrt_probs"  # output map of the metric
    beta: float = 0.01  # weight of the direction term
    eps: float = 0.01  # trust region |θ|² ≤ ε: the starting radius and the cap of the self-checking step
    eps_final: float = 0.0  # > 0: ε decays from eps to eps_final over max_steps (cosine); 0: constant
    probe: int = 32  # probe batch size B (k = B·m rows of J)
    seed: int = 0  # probe-batch sampling seed
    max_steps: int = 400
    arrive_tol: float = 0.0  # |w_T| at which to snap to zero; 0 means √ε (one step away)
    max_distance: float = math.inf  # stop when D(w, w_start) exceeds this (checked where a row measures D)
    eval_every: int = 10  # loss/accuracy on the evaluation set every k steps
    snapshot_every: int = 5  # keep the weight vector every k steps
    solver: str = "gram"  # "gram": K = JJᵀ layer by layer, J never stored; "explicit": J from jacobian_fast
    adaptive: bool = True  # ε set by measuring each step (geodesic.core.trust); False: a fixed ε, as in the paper

    def validate(self) -> "PathConfig":
        checks = [
            (0 < self.beta <= MAX_BETA, f"beta must be in (0, {MAX_BETA:g}], got {self.beta}"),
            (0 < self.eps <= MAX_EPS, f"eps must be in (0, {MAX_EPS:g}] (a step of norm up to √ε), got {self.eps}"),
            (0 <= self.eps_final <= self.eps, f"eps_final must be in [0, eps = {self.eps}], got {self.eps_final}"),
            (1 <= self.probe <= MAX_PROBE,
             f"probe batch must be in [1, {MAX_PROBE}] (K = JJᵀ has (B·classes)² entries), got {self.probe}"),
            (1 <= self.max_steps <= MAX_STEPS, f"max_steps must be in [1, 10^7], got {self.max_steps}"),
            (self.eval_every >= 1 and self.snapshot_every >= 1, "eval_every and snapshot_every must be >= 1"),
            (self.arrive_tol >= 0, f"arrive_tol must be >= 0, got {self.arrive_tol}"),
            (self.solver in SOLVERS, f"solver must be one of {SOLVERS}, got {self.solver!r}"),
        ]
        require(checks)
        return self


@dataclass
class Step:
    """One row of a path's record (metrics.parquet)."""

    step: int
    phase: str  # "walk", "snap" or a later phase name
    length: float  # Σ |J θ| so far
    step_length: float  # |J_t θ_t|
    distance: float  # D(w_t, w_start) on the fixed distance batch
    target_norm: float  # |w_T|
    groups_zero: int  # groups (filters/neurons) exactly zero
    accuracy: float  # on the evaluation set every eval_every steps, NaN otherwise
    loss: float
    mu: float
    eps: float  # the trust region of the accepted step
    t_jacobian: float  # seconds: metric (K or J), solve, everything else
    t_solve: float
    t_other: float
    group_norms: list[float] = field(default_factory=list)
    linearity: float = math.nan  # measured change of the probe's outputs / |Jθ|² (1: linear over the step; trust)
    rejected: int = 0  # steps tried and rejected (ε shrunk) before this one
    t_check: float = 0.0  # seconds measuring the tried steps (one forward pass of the probe each)

    def row(self) -> dict:
        return asdict(self)


@dataclass
class Evaluation:
    """Fixed evaluation data: accuracy/loss on (x, y); functional distance on its first `distance_batch` images."""

    x: torch.Tensor
    y: torch.Tensor
    distance_batch: int = 256

    def scores(self, model: nn.Module, w: torch.Tensor) -> tuple[float, float]:
        """(loss, accuracy) of the net at w."""
        f = model_fn(model)
        return scores(lambda xb: f(w, xb), self.x, self.y)


@dataclass
class RecordShare:
    """How much of a phase's CPU time its record's measurements may take: they are made only while their CPU
    seconds so far are at most `share` of the phase's (None: always, whatever they cost). Under a budget the record
    is the user's view of the run, and what it costs is taken from the run's steps."""

    share: float | None = None
    start: float = field(default_factory=time.process_time)
    spent: float = 0.0  # CPU seconds of the measurements so far

    def allows(self, part: float = 1.0) -> bool:
        """Whether the measurements so far are within `part` of the share."""
        return self.share is None or self.spent <= part * self.share * (time.process_time() - self.start)

    @contextmanager
    def timed(self) -> Iterator[None]:
        t0 = time.process_time()
        try:
            yield
        finally:
            self.spent += time.process_time() - t0


@dataclass
class Tried:
    """The accepted step of one path step: θ, its solve and its check, and what it cost."""

    theta: torch.Tensor
    step_length: float  # |Jθ|
    mu: float
    eps: float
    check: Check
    rejected: int
    t_metric: float
    t_solve: float
    t_check: float
    forced: bool = False  # taken at the budget's floor although the check rejected it
    short: bool = False  # the budget's floor asked for more than the cap: even the largest step arrives too late


class Path:
    """Iterate to walk; `w` is the current point, `snapshots` the kept (step, w) pairs, `status` how it ended
    (ARRIVED; MISSED when a path with a target ran out of steps or distance, DONE for one without; DIVERGED) and
    `reason` the stop rule in words. To stop early, stop iterating (the run loop closes the generator).

    `keep_best` (w ↦ a score, lower is better), when given, is measured at the start and every eval_every steps;
    a path that ends worse than its best point goes back to it (one more row, phase "best"). `eps_floor` (Path ↦ ε),
    when given, bounds the self-checking step from below: a budget that must see the path arrive decides there.
    `progress` (() ↦ the fraction of its CPU budget spent), when given, ends the path once it reaches 1 (as max
    steps do) and drives the ε schedule by the larger of it and the steps' fraction: the schedule completes when
    the budget does, whatever a step costs. `record_share`, when given, bounds what the record costs (RecordShare):
    D and accuracy are then measured at the eval_every steps while the measurements so far cost at most that share
    of the path's CPU time, D alone at the other steps while they cost at most half of it, and both at the start,
    the arrival and the end; rows not measured hold NaN."""

    def __init__(self, model: nn.Module, w_start: torch.Tensor, field: Field, cfg: PathConfig, probe: Sampler,
                 evaluation: Evaluation, groups: list[Group], target: torch.Tensor | None = None,
                 frozen: torch.Tensor | None = None, phase: str = "walk", w_ref: torch.Tensor | None = None,
                 step0: int = 0, length0: float = 0.0, watch: torch.Tensor | None = None,
                 keep_best=None, eps_floor=None, progress=None, record_share: float | None = None):
        self.model, self.field, self.cfg = model.eval(), field, cfg.validate()
        self.probe, self.evaluation, self.groups = probe, evaluation, groups
        self.w = w_start.detach().clone()
        self.w_ref = (w_start if w_ref is None else w_ref).detach().clone()
        self.target = target.to(torch.bool) if target is not None else None
        watch = watch if watch is not None else target  # coordinates whose norm each Step records as |w_T|
        self.watch = watch.to(torch.bool) if watch is not None else None
        self.frozen = frozen.to(torch.bool) if frozen is not None else None
        self.phase, self.eps = phase, cfg.eps
        self.step0 = step0
        self.snapshots: list[tuple[int, torch.Tensor]] = [(step0, self.w.clone())]
        self.frozen_values = self.w[self.frozen].clone() if self.frozen is not None else None
        self.status, self.reason = Status.RUNNING, ""
        self.length = length0
        self._ref_out: torch.Tensor | None = None  # φ f(x, w_ref) on the distance batch, computed once
        self.keep_best = keep_best
        self.eps_floor = eps_floor  # Path ↦ the smallest ε a budget allows (the check never shrinks below it)
        self.progress = progress  # () ↦ the fraction of the path's CPU budget spent (it ends at 1)
        self.share = RecordShare(record_share)
        self.measured = True  # whether the last record measured D (a row that did not holds NaN there)
        self.spent = False  # whether the last step found the CPU budget spent (its row is then measured, the last)
        self.cpu: deque[float] = deque(maxlen=10)  # CPU seconds of the last ten steps taken
        self.efficiency = math.nan  # |w_T| gained per unit of step norm √ε, averaged over the steps taken
        self.best: tuple[float, int, torch.Tensor] | None = None  # (score, step, w)
        self.at = step0  # the last step taken
        self.skipped = 0  # consecutive steps skipped for a non-finite direction
        self.forced: deque[bool] = deque(maxlen=5)  # of the last five steps, which the budget's floor took although
        # the check rejected them
        self.short = 0  # consecutive steps whose floor was above the cap (the budget's deadline out of reach)
        self.linear: deque[float] = deque(maxlen=10)  # of the last ten steps, the ε each would have had in the
        # linear regime (trust.linear_eps): what the check alone would let the walk take, without a budget's floor

    @property
    def tol(self) -> float:
        return self.cfg.arrive_tol or math.sqrt(self.cfg.eps)

    def target_norm(self) -> float:
        return float(self.w[self.watch].norm()) if self.watch is not None else float("nan")

    def record(self, step: int, phase: str, step_length: float, mu: float, times: tuple[float, float, float],
               evaluate: bool, measure: bool = True) -> Step:
        """The row of the current point: D(w, w_ref) when `measure`, and accuracy and loss when also `evaluate`
        (NaN otherwise); the group norms always."""
        ev, w, nan = self.evaluation, self.w, float("nan")
        dist, loss, acc = nan, nan, nan
        self.measured = measure
        if measure:
            with self.share.timed():
                x = ev.x[: ev.distance_batch]
                if self._ref_out is None:
                    self._ref_out = mapped_outputs(self.model, self.w_ref, x, self.cfg.phi)
                dist = functional_distance(self.model, w, None, x, self.cfg.phi, ref=self._ref_out)
                loss, acc = ev.scores(self.model, w) if evaluate else (nan, nan)
        norms = group_norms(w, self.groups)
        return Step(step, phase, self.length, step_length, dist, self.target_norm(), int((norms == 0).sum()),
                    acc, loss, mu, self.eps, *times, group_norms=norms.tolist())

    def cap(self, step: int) -> float:
        """The largest trust region at this step: cfg.eps, or its cosine decay to eps_final over max_steps (or over
        the path's budget, whichever runs out first)."""
        cfg = self.cfg
        if cfg.eps_final <= 0:
            return cfg.eps
        frac = (step - self.step0 - 1) / max(cfg.max_steps - 1, 1)
        frac = min(max(frac, self.progress()), 1.0) if self.progress is not None else frac
        return cfg.eps_final + (cfg.eps - cfg.eps_final) * 0.5 * (1 + math.cos(math.pi * frac))

    def direction(self, w: torch.Tensor) -> torch.Tensor:
        """v(w), zero on the frozen coordinates."""
        v = self.field(w)
        return v if self.frozen is None else torch.where(self.frozen, torch.zeros_like(v), v)

    def tangent(self, w: torch.Tensor, v: torch.Tensor, cap: float) -> Tried | None:
        """The self-checked step at w toward v on a fresh probe batch: solve at ε, measure, shrink ε and solve again
        until a step holds (at most MAX_REJECTS times; then the smallest is taken). None when the metric is not
        finite at w."""
        cfg = self.cfg
        x, _ = self.probe(cfg.probe)
        t0 = time.perf_counter()
        if cfg.solver == "gram":
            M = Metric(self.model, w, x, cfg.phi, free=None if self.frozen is None else ~self.frozen)
            K, Jv = M.gram_jvp(v)
            JT, y0, forward = M.vjp, M.outputs(), lambda t: M.change(t, y0)
        else:
            J = jacobian_fast(self.model, w, x, cfg.phi)
            if self.frozen is not None:
                J[:, self.frozen] = 0
            K, Jv, JT = gram(J.double()), J.double() @ v.double(), (lambda u: J.T @ u.to(J.dtype))
            ref = mapped_outputs(self.model, w, x, cfg.phi)
            forward = lambda t: functional_distance(self.model, w + t, None, x, cfg.phi, ref=ref)  # noqa: E731
        if not (torch.isfinite(K).all() and torch.isfinite(Jv).all()):  # w left the model's finite range
            return None
        t1 = time.perf_counter()
        wanted = self.eps_floor(self) if self.eps_floor is not None and cfg.adaptive else 0.0
        floor = min(wanted, cap)
        solve, t_check, eps = prepare_exact_gram(K, Jv, JT, v, cfg.beta), 0.0, max(min(self.eps, cap), floor)
        for rejected in range(MAX_REJECTS + 1):
            res = solve(eps)
            t2 = time.perf_counter()
            check = Check(max(res.quad, 0.0), forward(res.theta))
            t_check += time.perf_counter() - t2
            if not cfg.adaptive or check.accepted or rejected == MAX_REJECTS or eps <= floor:
                break
            eps = max(next_eps(eps, check, cap), floor)
        t_solve = time.perf_counter() - t1 - t_check
        self.eps = eps if not (cfg.adaptive and check.accepted) else max(next_eps(eps, check, cap), floor)
        forced = cfg.adaptive and not check.accepted and eps <= floor
        return Tried(res.theta, math.sqrt(check.predicted), res.mu, eps, check, rejected, t1 - t0, t_solve, t_check,
                     forced, wanted > cap)

    def __iter__(self) -> Iterator[Step]:
        cfg = self.cfg
        if self.step0 == 0:
            start = self.record(0, self.phase, 0.0, float("nan"), (0.0, 0.0, 0.0), True)
            yield start
            if not self._finite(start):
                return
        self._score(self.step0)
        last = self.step0 + cfg.max_steps
        for step in range(self.step0 + 1, last + 1):
            rec = self.step(step, last)
            if rec is None and self.status is Status.RUNNING:  # skipped: a non-finite direction
                continue
            if rec is None:  # diverged, or nothing left to change
                if self.status is Status.ARRIVED and self.target is not None:
                    yield self._snap(step - 1)
                break
            self.at = step
            yield rec
            if not self._finite(rec):
                return
            if self.target is not None and self.target_norm() <= self.tol:
                self.status, self.reason = Status.ARRIVED, "arrived"
                yield self._snap(step)
                return
            if step % cfg.eval_every == 0:
                self._score(step)
            if rec.distance > cfg.max_distance:
                self.status, self.reason = self._out_of_budget(), "distance budget"
                break
            if self.spent or (self.progress is not None and self.progress() >= 1.0):  # the step's view, or now
                self.status, self.reason = self._out_of_budget(), "CPU budget"
                break
        else:
            self.status, self.reason = self._out_of_budget(), "max steps"
        if self.status is not Status.DIVERGED:
            yield from self._back_to_best()

    def project(self, reason: str) -> Step:
        """End a path that has not arrived (MISSED, for `reason`) on its target hyperplane: w_T := 0 exactly, a
        step the check does not see, and its record."""
        self.status, self.reason = Status.MISSED, reason
        return self._snap(self.at)

    def _snap(self, step: int) -> Step:
        """w_T := 0 exactly, and its record."""
        self.w[self.target] = 0.0
        self.snapshots.append((step, self.w.clone()))
        return self.record(step, "snap", 0.0, float("nan"), (0.0, 0.0, 0.0), True)

    def _score(self, step: int) -> None:
        if self.keep_best is None:
            return
        score = float(self.keep_best(self.w))
        if self.best is None or score < self.best[0]:
            self.best = (score, step, self.w.clone())

    def _back_to_best(self) -> Iterator[Step]:
        """When `keep_best` is given and the end scores worse than the best point seen: go back to that point."""
        if self.keep_best is None or self.best is None:
            return
        step = self.at
        end = float(self.keep_best(self.w))
        if end <= self.best[0]:
            return
        self.w = self.best[2].clone()
        self.snapshots.append((step, self.w.clone()))
        self.reason += f"; back to step {self.best[1]} (score {self.best[0]:.4g} against {end:.4g} at the end)"
        yield self.record(step, "best", 0.0, float("nan"), (0.0, 0.0, 0.0), True)

    def step(self, step: int, last: int) -> Step | None:
        """One self-checked tangent step w ← w + θ and its record; None when the direction is zero (nothing left to
        change: status ARRIVED on a path with a target, DONE otherwise), when it is not finite (the step is skipped;
        DIVERGED after MAX_SKIPPED in a row) or when the metric is not finite (DIVERGED)."""
        cfg, t0 = self.cfg, time.perf_counter()
        v = self.direction(self.w)
        if not torch.isfinite(v).all():  # a field's fresh batch overflowed: skip the step, draw again next one
            self.skipped += 1
            if self.skipped > MAX_SKIPPED:
                self.status, self.reason = Status.DIVERGED, "the direction is not finite at these weights"
            return None
        self.skipped = 0
        if not bool(v.any()):
            self.status = Status.ARRIVED if self.target is not None else Status.DONE
            self.reason = "nothing left to change (the direction is zero)"
            return None
        cpu0, before = time.process_time(), self.target_norm()
        tried = self.tangent(self.w, v, self.cap(step))
        if tried is None or not (torch.isfinite(tried.theta).all() and math.isfinite(tried.step_length)):
            self.status, self.reason = Status.DIVERGED, "the metric is not finite at these weights"
            return None
        self.w = self.w + tried.theta
        self.forced.append(tried.forced)
        self.short = self.short + 1 if tried.short else 0
        self.linear.append(linear_eps(tried.eps, tried.check))
        if self.frozen is not None:
            self.w[self.frozen] = self.frozen_values  # θ is 0 there already; guard against drift
        self.length += tried.step_length
        self._measure(before, tried.eps, time.process_time() - cpu0)
        arrived = self.target is not None and self.target_norm() <= self.tol
        self.spent = self.progress is not None and self.progress() >= 1.0  # the budget ends the path after this step
        ending = arrived or step == last or self.spent
        due = step % cfg.eval_every == 0 or ending
        measure = ending or self.share.allows(1.0 if due else 0.5)  # D between due steps within half the share
        rec = self.record(step, self.phase, tried.step_length, tried.mu, (tried.t_metric, tried.t_solve, 0.0),
                          due and measure, measure)
        rec.eps, rec.linearity = tried.eps, tried.check.linearity
        rec.rejected, rec.t_check = tried.rejected, tried.t_check
        rec.t_other = time.perf_counter() - t0 - tried.t_metric - tried.t_solve - tried.t_check
        if step % cfg.snapshot_every == 0:
            self.snapshots.append((step, self.w.clone()))
        return rec

    def _measure(self, before: float, eps: float, cpu: float) -> None:
        """Keep the step's CPU seconds and, on a path with a target, how much of |w_T| it removed per √ε."""
        self.cpu.append(cpu)
        gained = (before - self.target_norm()) / math.sqrt(eps)
        if self.target is not None and math.isfinite(gained):
            self.efficiency = gained if math.isnan(self.efficiency) else 0.9 * self.efficiency + 0.1 * gained

    def cpu_to_arrive(self) -> float:
        """CPU seconds the walk would still need to arrive in the linear regime, estimated from its last steps:
        (|w_T| − tol) / (efficiency · √ε_lin) steps of cpu_per_step() each, ε_lin the geometric mean of the ε its
        last steps would have had in the linear regime (trust.linear_eps). nan before it can be measured."""
        left, gain, per_step = self.target_norm() - self.tol, self.efficiency, self.cpu_per_step()
        if left <= 0:
            return 0.0
        if not (gain > 0 and per_step > 0 and self.linear and min(self.linear) > 0):
            return math.nan
        eps = math.exp(sum(math.log(e) for e in self.linear) / len(self.linear))
        return left / (gain * math.sqrt(eps)) * per_step

    def cpu_per_step(self) -> float:
        """Mean CPU seconds of the last ten steps (nan before the first)."""
        return sum(self.cpu) / len(self.cpu) if self.cpu else math.nan

    def _finite(self, rec: Step) -> bool:
        """False (status DIVERGED) when the weights or the net's outputs are no longer finite numbers."""
        if torch.isfinite(self.w).all() and (math.isfinite(rec.distance) or not self.measured):
            return True
        self.status, self.reason = Status.DIVERGED, "the net's outputs are not finite at these weights"
        return False

    def _out_of_budget(self) -> Status:
        return Status.MISSED if self.target is not None else Status.DONE
