"""A path: repeated tangent steps from a start point along a direction field, one `Step` record per step.

At w_t, on a fresh probe batch, solve θ_t = argmin θᵀG θ − β θᵀv(w_t) s.t. |θ|² ≤ ε and move
w_{t+1} = w_t + θ_t. Stop rules: arrival (|w_T| ≤ arrive_tol, then w_T := 0 exactly), max steps, distance
budget, a stop request; a non-finite step is rejected and ε halved.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from torch import nn

from .lifecycle import Status
from .metric import Metric, functional_distance, jacobian_fast, mapped_outputs, model_fn
from .objectives import Field, Sampler
from .params import Group, group_norms
from .tangent import solve_exact, solve_exact_gram
from .train import scores

SOLVERS = ("gram", "explicit")
MAX_BETA = 1e6  # beyond this β·v overflows float32 in the solve; steps are Euclidean long before
MAX_EPS = 1e4  # |θ| ≤ 100: any larger step leaves every trained net's finite range
MAX_PROBE = 1024


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
    eps: float = 0.01  # trust region |θ|² ≤ ε
    eps_final: float = 0.0  # > 0: ε decays from eps to eps_final over max_steps (cosine); 0: constant
    probe: int = 32  # probe batch size B (k = B·m rows of J)
    seed: int = 0  # probe-batch sampling seed
    max_steps: int = 400
    arrive_tol: float = 0.0  # |w_T| at which to snap to zero; 0 means √ε (one step away)
    max_distance: float = math.inf  # stop when D(w, w_start) exceeds this
    eval_every: int = 10  # loss/accuracy on the evaluation set every k steps
    snapshot_every: int = 5  # keep the weight vector every k steps
    solver: str = "gram"  # "gram": K = JJᵀ layer by layer, J never stored; "explicit": J from jacobian_fast

    def validate(self) -> "PathConfig":
        checks = [
            (0 < self.beta <= MAX_BETA, f"beta must be in (0, {MAX_BETA:g}], got {self.beta}"),
            (0 < self.eps <= MAX_EPS, f"eps must be in (0, {MAX_EPS:g}] (a step of norm up to √ε), got {self.eps}"),
            (0 <= self.eps_final <= self.eps, f"eps_final must be in [0, eps = {self.eps}], got {self.eps_final}"),
            (1 <= self.probe <= MAX_PROBE,
             f"probe batch must be in [1, {MAX_PROBE}] (K = JJᵀ has (B·classes)² entries), got {self.probe}"),
            (1 <= self.max_steps <= 10**7, f"max_steps must be in [1, 10^7], got {self.max_steps}"),
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
    eps: float
    t_jacobian: float  # seconds: metric (K or J), solve, everything else
    t_solve: float
    t_other: float
    group_norms: list[float] = field(default_factory=list)

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


class Path:
    """Iterate to walk; `w` is the current point, `snapshots` the kept (step, w) pairs, `status` how it ended
    (ARRIVED; MISSED when a path with a target ran out of steps or distance, DONE for one without; DIVERGED) and
    `reason` the stop rule in words. To stop early, stop iterating (the run loop closes the generator)."""

    def __init__(self, model: nn.Module, w_start: torch.Tensor, field: Field, cfg: PathConfig, probe: Sampler,
                 evaluation: Evaluation, groups: list[Group], target: torch.Tensor | None = None,
                 frozen: torch.Tensor | None = None, phase: str = "walk", w_ref: torch.Tensor | None = None,
                 step0: int = 0, length0: float = 0.0, watch: torch.Tensor | None = None):
        self.model, self.field, self.cfg = model.eval(), field, cfg.validate()
        self.probe, self.evaluation, self.groups = probe, evaluation, groups
        self.w = w_start.detach().clone()
        self.w_ref = (w_start if w_ref is None else w_ref).detach().clone()
        self.target = target.to(torch.bool) if target is not None else None
        watch = watch if watch is not None else target  # coordinates whose norm each Step records as |w_T|
        self.watch = watch.to(torch.bool) if watch is not None else None
        self.frozen = frozen.to(torch.bool) if frozen is not None else None
        self.phase, self.eps, self.eps_halvings = phase, cfg.eps, 0
        self.step0 = step0
        self.snapshots: list[tuple[int, torch.Tensor]] = [(step0, self.w.clone())]
        self.frozen_values = self.w[self.frozen].clone() if self.frozen is not None else None
        self.status, self.reason = Status.RUNNING, ""
        self.length = length0
        self._ref_out: torch.Tensor | None = None  # φ f(x, w_ref) on the distance batch, computed once

    @property
    def tol(self) -> float:
        return self.cfg.arrive_tol or math.sqrt(self.cfg.eps)

    def target_norm(self) -> float:
        return float(self.w[self.watch].norm()) if self.watch is not None else float("nan")

    def record(self, step: int, phase: str, step_length: float, mu: float, times: tuple[float, float, float],
               evaluate: bool) -> Step:
        ev, w = self.evaluation, self.w
        if self._ref_out is None:
            self._ref_out = mapped_outputs(self.model, self.w_ref, ev.x[: ev.distance_batch], self.cfg.phi)
        dist = functional_distance(self.model, w, None, ev.x[: ev.distance_batch], self.cfg.phi, ref=self._ref_out)
        loss, acc = ev.scores(self.model, w) if evaluate else (float("nan"), float("nan"))
        norms = group_norms(w, self.groups)
        return Step(step, phase, self.length, step_length, dist, self.target_norm(), int((norms == 0).sum()),
                    acc, loss, mu, self.eps, *times, group_norms=norms.tolist())

    def tangent(self, w: torch.Tensor) -> tuple[torch.Tensor, float, float, float, float]:
        """(θ, |Jθ|, μ, seconds for the metric, seconds for the solve) at w on a fresh probe batch."""
        x, _ = self.probe(self.cfg.probe)
        v = self.field(w)
        rejected = (torch.full_like(w, float("nan")), float("nan"), float("nan"), 0.0, 0.0)
        if not torch.isfinite(v).all():
            return rejected
        if self.frozen is not None:
            v = torch.where(self.frozen, torch.zeros_like(v), v)
        t0 = time.perf_counter()
        if self.cfg.solver == "gram":
            M = Metric(self.model, w, x, self.cfg.phi, free=None if self.frozen is None else ~self.frozen)
            K, Jv = M.gram_jvp(v)
            t1 = time.perf_counter()
            if not (torch.isfinite(K).all() and torch.isfinite(Jv).all()):  # w left the model's finite range
                return rejected
            res = solve_exact_gram(K, Jv, M.vjp, v, self.cfg.beta, self.eps)
            step_len = math.sqrt(max(res.quad, 0.0))  # |Jθ| from the solve's eigenbasis
        else:
            J = jacobian_fast(self.model, w, x, self.cfg.phi)
            if self.frozen is not None:
                J[:, self.frozen] = 0
            t1 = time.perf_counter()
            if not torch.isfinite(J).all():
                return rejected
            res = solve_exact(J, v, self.cfg.beta, self.eps)
            step_len = float((J @ res.theta).norm())
        return res.theta, step_len, res.mu, t1 - t0, time.perf_counter() - t1

    def __iter__(self) -> Iterator[Step]:
        cfg = self.cfg
        if self.step0 == 0:
            start = self.record(0, self.phase, 0.0, float("nan"), (0.0, 0.0, 0.0), True)
            yield start
            if not self._finite(start):
                return
        last = self.step0 + cfg.max_steps
        for step in range(self.step0 + 1, last + 1):
            rec = self.step(step, last)
            if rec is None:  # rejected: ε halved
                if self.status is Status.DIVERGED:
                    return
                continue
            yield rec
            if not self._finite(rec):
                return
            if self.target is not None and self.target_norm() <= self.tol:
                self.w[self.target] = 0.0
                self.snapshots.append((step, self.w.clone()))
                self.status, self.reason = Status.ARRIVED, "arrived"
                yield self.record(step, "snap", 0.0, float("nan"), (0.0, 0.0, 0.0), True)
                return
            if rec.distance > cfg.max_distance:
                self.status, self.reason = self._out_of_budget(), "distance budget"
                return
        self.status, self.reason = self._out_of_budget(), "max steps"

    def step(self, step: int, last: int) -> Step | None:
        """One tangent step w ← w + θ and its record; None when θ is not finite (ε is halved, and the status is
        DIVERGED once ε < 1e-12)."""
        cfg, t0 = self.cfg, time.perf_counter()
        if cfg.eps_final > 0 and self.eps_halvings == 0:
            frac = (step - self.step0 - 1) / max(cfg.max_steps - 1, 1)
            self.eps = cfg.eps_final + (cfg.eps - cfg.eps_final) * 0.5 * (1 + math.cos(math.pi * frac))
        theta, step_len, mu, t_jac, t_solve = self.tangent(self.w)
        if not (torch.isfinite(theta).all() and math.isfinite(step_len)):
            self.eps /= 2
            self.eps_halvings += 1
            if self.eps < 1e-12:
                self.status, self.reason = Status.DIVERGED, "no finite step at any ε"
            return None
        self.w = self.w + theta
        if self.frozen is not None:
            self.w[self.frozen] = self.frozen_values  # θ is 0 there already; guard against drift
        self.length += step_len
        arrived = self.target is not None and self.target_norm() <= self.tol
        evaluate = step % cfg.eval_every == 0 or step == last or arrived
        rec = self.record(step, self.phase, step_len, mu, (t_jac, t_solve, 0.0), evaluate)
        rec.t_other = time.perf_counter() - t0 - t_jac - t_solve  # field, update and this record
        if step % cfg.snapshot_every == 0:
            self.snapshots.append((step, self.w.clone()))
        return rec

    def _finite(self, rec: Step) -> bool:
        """False (status DIVERGED) when the weights or the net's outputs are no longer finite numbers."""
        if torch.isfinite(self.w).all() and math.isfinite(rec.distance):
            return True
        self.status, self.reason = Status.DIVERGED, "the net's outputs are not finite at these weights"
        return False

    def _out_of_budget(self) -> Status:
        return Status.MISSED if self.target is not None else Status.DONE
