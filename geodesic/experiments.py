"""Experiments built from paths: sparsify to whole zero filters, and candidate paths to the same sparsity."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator

import torch
from torch import nn

from .baselines import layer_normalized_norms
from .data import Split
from .metric import jacobian_fast
from .objectives import BatchSampler, restore, sparsify, with_pull
from .params import Group, group_mask
from .path import Evaluation, Path, PathConfig, Step
from .runs import RunWriter

STRATEGIES = ("norm", "importance", "balanced", "random")


def choose_groups(strategy: str, model: nn.Module, w: torch.Tensor, groups: list[Group], count: int,
                  probe: torch.Tensor | None = None, phi: str = "sqrt_probs", seed: int = 0) -> list[Group]:
    """Which `count` groups to zero.

    norm: smallest layer-normalized norm; importance: smallest functional importance ‖J_g‖_F (the change of
    the outputs per unit move of the group, on `probe`); balanced: the same fraction of every layer,
    smallest norm within each; random: seeded.
    """
    if not 0 <= count <= len(groups):
        raise ValueError(f"cannot zero {count} groups: the model has {len(groups)}")
    if strategy == "norm":
        score = layer_normalized_norms(w, groups)
    elif strategy == "importance":
        if probe is None:
            raise ValueError("importance needs a probe batch")
        J = jacobian_fast(model, w, probe, phi)
        score = torch.stack([(J[:, g.idx] * w[g.idx]).norm() for g in groups])  # |J_g w_g|: cost of zeroing g
    elif strategy == "balanced":
        score = torch.empty(len(groups))
        layers = sorted({g.layer for g in groups})
        norms = layer_normalized_norms(w, groups)
        for layer in layers:
            sel = [i for i, g in enumerate(groups) if g.layer == layer]
            ranks = norms[sel].argsort().argsort().double()
            score[sel] = ((ranks + 0.5) / len(sel)).float()  # within-layer quantile
    elif strategy == "random":
        score = torch.rand(len(groups), generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    return [groups[i] for i in score.argsort()[:count].tolist()]


@dataclass(frozen=True)
class SparsifyConfig:
    """A sparsify walk: zero `filters` groups chosen by `strategy`, pulling the free weights toward the start's
    function with relative strength `pull` (ρ; 0: the literal algorithm), then `relax_steps` geodesic restore
    steps inside the hyperplane {w_T = 0} (v = −∇D(w, w_start), T frozen) with a trust region decaying from
    `relax_eps` to `relax_eps_final`."""

    filters: int = 50
    strategy: str = "norm"
    pull: float = 0.0
    pull_batch: int = 256
    relax_steps: int = 0
    relax_eps: float = 0.1
    relax_eps_final: float = 0.002  # ε decays (cosine) from relax_eps to this over the relaxation
    path: PathConfig = field(default_factory=PathConfig)

    def validate(self) -> "SparsifyConfig":
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.filters < 1:
            raise ValueError(f"filters must be >= 1, got {self.filters}")
        if self.pull < 0 or not math.isfinite(self.pull):
            raise ValueError(f"pull must be >= 0, got {self.pull}")
        if not self.relax_eps > 0 or not math.isfinite(self.relax_eps):
            raise ValueError(f"relax_eps must be > 0, got {self.relax_eps}")
        if self.relax_steps < 0:
            raise ValueError(f"relax_steps must be >= 0, got {self.relax_steps}")
        self.path.validate()
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def recommended(filters: int = 50) -> SparsifyConfig:
    """The setting the benchmarks recommend for lenet60 (bench/results/sparsify-*.md): filters chosen per layer
    ("balanced"), a walk of fewer, larger steps (ε = 0.1) with a weak target term (β = 0.001) and pull ρ = 2, then
    600 relaxation steps inside the hyperplane with ε decaying from 0.3."""
    return SparsifyConfig(filters=filters, strategy="balanced", pull=2.0, relax_steps=600, relax_eps=0.3,
                          path=PathConfig(eps=0.1, beta=0.001))


def sparsify_paths(model: nn.Module, w0: torch.Tensor, groups: list[Group], chosen: list[Group], cfg: SparsifyConfig,
                   train: Split, evaluation: Evaluation) -> Iterator[Path]:
    """The phases of a sparsify run, created lazily: the walk to {w_T = 0}, then (if it arrived) the relaxation."""
    target = group_mask(chosen, w0.numel())
    pull_sampler = BatchSampler.of(train, cfg.path.seed + 1)
    field_ = with_pull(sparsify(target), model, w0, pull_sampler, cfg.pull, cfg.pull_batch, cfg.path.phi, only=~target)
    walk = Path(model, w0, field_, cfg.path, BatchSampler.of(train, cfg.path.seed), evaluation, groups, target=target)
    yield walk
    if walk.status == "arrived" and cfg.relax_steps > 0:
        relax_cfg = replace(cfg.path, max_steps=cfg.relax_steps, eps=cfg.relax_eps, eps_final=cfg.relax_eps_final)
        yield Path(model, walk.w, restore(model, w0, pull_sampler, cfg.pull_batch, cfg.path.phi), relax_cfg,
                   BatchSampler.of(train, cfg.path.seed + 2), evaluation, groups, frozen=target, phase="relax",
                   w_ref=w0, step0=walk.snapshots[-1][0], length0=walk.length)


@dataclass
class Outcome:
    w: torch.Tensor
    status: str
    steps: list[Step]
    snapshots: list[tuple[int, torch.Tensor]]
    seconds: float

    def summary(self) -> dict:
        last = self.steps[-1]
        evaluated = [s for s in self.steps if not math.isnan(s.accuracy)]
        return {"status": self.status, "steps": last.step, "length": last.length, "distance": last.distance,
                "groups_zero": last.groups_zero, "accuracy": evaluated[-1].accuracy if evaluated else float("nan"),
                "loss": evaluated[-1].loss if evaluated else float("nan"), "seconds": self.seconds}


def drive(paths: Iterator[Path], w_start: torch.Tensor, writer: RunWriter | None = None,
          stop: threading.Event | None = None, on_step: Callable[[Step], None] | None = None) -> Outcome:
    """Run the phases one after another, writing each step to the run folder; `stop` ends within one step.

    On any exception (or KeyboardInterrupt) the steps done so far, the snapshots and the current weights are
    written before it propagates, with status "interrupted".
    """
    t0, steps, snaps = time.perf_counter(), [], []
    path = None
    status = "empty"
    try:
        for path in paths:
            for step in path:
                steps.append(step)
                if writer:
                    writer.add(step.row())
                if on_step:
                    on_step(step)
                if stop is not None and stop.is_set():
                    path.stop()
            snaps += path.snapshots if not snaps else path.snapshots[1:]
            status = path.status if path.phase == "walk" else f"{status}, relaxed" if path.status != "stopped" else "stopped"
            if path.status in ("stopped", "diverged"):
                break
    except BaseException:
        if writer and path is not None:
            snaps += path.snapshots if not snaps else path.snapshots[1:]
            writer.set_snapshots(snaps)
            writer.finish(path.w, w_start, "interrupted", {"steps": steps[-1].step if steps else 0})
        raise
    outcome = Outcome(path.w if path else torch.zeros(0), status, steps, snaps, time.perf_counter() - t0)
    if writer and path is not None:
        writer.set_snapshots(snaps)
    return outcome


def run_sparsify(model: nn.Module, w0: torch.Tensor, groups: list[Group], cfg: SparsifyConfig, train: Split,
                 evaluation: Evaluation, writer: RunWriter | None = None, stop: threading.Event | None = None,
                 on_step: Callable[[Step], None] | None = None, chosen: list[Group] | None = None) -> Outcome:
    """Choose the groups, walk, relax; the run folder gets meta, metrics, snapshots and the final weights."""
    cfg.validate()
    if chosen is None:
        probe = train.batch(cfg.path.probe, torch.Generator().manual_seed(cfg.path.seed + 3))[0]
        chosen = choose_groups(cfg.strategy, model, w0, groups, cfg.filters, probe, cfg.path.phi, cfg.path.seed)
    if writer:
        writer.update(config=cfg.as_dict(), target_groups=[g.name for g in chosen])
    out = drive(sparsify_paths(model, w0, groups, chosen, cfg, train, evaluation), w0, writer, stop, on_step)
    if writer:
        writer.finish(out.w, w0, out.status, out.summary())
    return out


def candidate_configs(base: SparsifyConfig, count: int) -> list[SparsifyConfig]:
    """`count` variations of `base` toward the same number of zero filters: strategies in turn, then seeds."""
    out = []
    for i in range(count):
        strategy = STRATEGIES[i % len(STRATEGIES)] if count > 1 else base.strategy
        out.append(replace(base, strategy=strategy, path=replace(base.path, seed=base.path.seed + i // len(STRATEGIES))))
    return out


def shortest(outcomes: list[Outcome]) -> int:
    """Index of the shortest path among those that arrived (all of them when none arrived)."""
    arrived = [i for i, o in enumerate(outcomes) if o.status.startswith("arrived")]
    pool = arrived or list(range(len(outcomes)))
    return min(pool, key=lambda i: outcomes[i].steps[-1].length)
