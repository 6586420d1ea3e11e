"""Sparsify: walk to whole zero filters, relax inside the hyperplane; and candidate paths to the same sparsity.

    cfg = SparsifyConfig()          # the benchmarked setting (PRESETS["recommended"]); PRESETS["literal"]: the paper's
    meta = run_meta("sparsify", ckpt, dataset, train.source, len(test))   # geodesic.store.runs
    out = run_sparsify(ckpt.model, ckpt.w, ckpt.groups, cfg, train, Evaluation(test.x, test.y), writer=RunWriter(meta))
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..core.metric import functional_distance, mapped_outputs
from ..core.objectives import CHOICE, KEEP, PROBE, PULL, RELAX, TRIAL, BatchSampler, restore, sparsify, with_pull
from ..core.params import Group, group_mask, group_norms
from ..core.path import MAX_STEPS, Evaluation, PathConfig, RecordShare, Step, require
from ..core.path import Path as Walk
from ..core.targets import STRATEGIES, choose_groups
from ..infra.lifecycle import Budget, Phase, Record, Sink, Status, Stop, execute, within
from ..store.data import Split
from ..store.source import Source
from .baselines import descend
from .presets import SPARSIFY_PRESETS


@dataclass(frozen=True)
class SparsifyConfig:
    """A sparsify run: zero `filters` groups chosen by `strategy`; walk toward {w_T = 0} pulling the free weights
    toward the start's function with relative strength `pull` (ρ; 0: the literal algorithm); then geodesic restore
    steps inside the hyperplane (v = −∇D(w, w_start), T frozen) with a trust region decaying (cosine) from
    `relax_eps` to `relax_eps_final`, for the rest of the budget (`relax_steps`: at most that many; 0: none).

    The defaults are the benchmarked setting (bench/results/sparsify-*.md): filters balanced across layers, fewer
    and larger walk steps (ε = 0.1) with a weak target term (β = 0.001), pull ρ = 2, a relaxation from ε = 0.3,
    all within `seconds` of CPU time (the walk must arrive within half of it, else it is projected and restored by
    descent; the relaxation has what the walk leaves, and its ε schedule follows that time, so that it completes
    when the budget does: on lenet60 at 50 of 60 filters in 900 CPU s, ~3,400 relaxation steps keep 0.7 point more
    on Fashion-MNIST and 0.2 on MNIST than the 600 it was capped at before, bench/results/budget-lenet60.md). Every
    walk step checks itself (geodesic.core.trust): ε is where the walk starts and the most it grows to. The relaxation ends on its best point
    by D(w, w_start) on KEEP_IMAGES fixed training images, so it never leaves the net further from the dense
    function than it found it at arrival. The probe and pull batches are the largest the run uses: under a budget
    too small for MIN_WALK_STEPS steps at them, both are halved (fit_batches). `PRESETS["literal"]` is the paper's
    algorithm as written."""

    filters: int = 50
    strategy: str = "balanced"
    pull: float = 2.0
    pull_batch: int = 256  # images per pull / restore gradient
    relax_steps: int | None = None  # at most this many relaxation steps (None: as the budget allows; 0: none)
    relax_eps: float = 0.3
    relax_eps_final: float = 0.002
    seconds: float = 900.0  # CPU seconds for the run: the walk has half (sparsify_phases), the relaxation the rest
    path: PathConfig = field(default_factory=lambda: PathConfig(eps=0.1, beta=0.001, max_steps=MAX_STEPS))

    def validate(self) -> "SparsifyConfig":
        checks = [
            (self.strategy in STRATEGIES, f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}"),
            (self.filters >= 1, f"filters must be >= 1, got {self.filters}"),
            (0 <= self.pull <= 1e6, f"pull must be in [0, 1e6], got {self.pull}"),
            (1 <= self.pull_batch <= 100_000, f"pull_batch must be in [1, 100000], got {self.pull_batch}"),
            (0 < self.relax_eps <= 1e6, f"relax_eps must be in (0, 1e6], got {self.relax_eps}"),
            (self.relax_steps is None or 0 <= self.relax_steps <= 1_000_000,
             f"relax_steps must be in [0, 1000000] or None (as the budget allows), got {self.relax_steps}"),
            (0 < self.seconds <= 10**7, f"seconds must be in (0, 1e7], got {self.seconds}"),
            (self.relax_steps == 0 or 0 < self.relax_eps_final <= self.relax_eps,
             f"relax_eps_final must be in (0, relax_eps = {self.relax_eps}], got {self.relax_eps_final}"),
        ]
        require(checks)
        self.path.validate()
        return self

    def as_dict(self) -> dict:
        return asdict(self)


# experiments/presets.py's settings as configs; "recommended" is SparsifyConfig(), the default
PRESETS: dict[str, SparsifyConfig] = {
    name: SparsifyConfig(**{**fields, "path": PathConfig(**fields["path"])}) for name, fields in SPARSIFY_PRESETS.items()
}


KEEP_IMAGES = 512  # fixed unlabeled training images on which the relaxation keeps its best point


def recommended(filters: int = 50) -> SparsifyConfig:
    """The benchmarked setting (the default) toward `filters` zero groups."""
    return replace(PRESETS["recommended"], filters=filters)


def target_groups(model: nn.Module, w0: torch.Tensor, groups: list[Group], cfg: SparsifyConfig,
                  train: Split) -> list[Group]:
    """The cfg.filters groups a run with cfg zeroes: cfg.strategy's choice, on a probe batch of its own stream
    (CHOICE) where the strategy reads the net's outputs."""
    probe = train.batch(cfg.path.probe, torch.Generator().manual_seed(cfg.path.seed + CHOICE))[0]
    return choose_groups(cfg.strategy, model, w0, groups, cfg.filters, probe, cfg.path.phi, cfg.path.seed)


def target_walk(model: nn.Module, w0: torch.Tensor, groups: list[Group], target: torch.Tensor, cfg: SparsifyConfig,
                pull: BatchSampler, probe: BatchSampler, evaluation: Evaluation, **kwargs) -> Walk:
    """The walk from w0 toward {w_T = 0}: v = −w_T, pulled on the free weights toward w0's function (cfg.pull on
    cfg.pull_batch images a step from `pull`), its metric on `probe` batches; kwargs go to Walk."""
    field_ = with_pull(sparsify(target), model, w0, pull, cfg.pull, cfg.pull_batch, cfg.path.phi, only=~target)
    return Walk(model, w0, field_, cfg.path, probe, evaluation, groups, target=target, **kwargs)


def path_phase(path: Walk) -> Phase:
    """A path as a phase of a run: its Step rows, its end, its snapshots and its current point."""
    return Phase(path.phase, (s.row() for s in path), lambda: path.status, lambda: path.snapshots, lambda: path.w)


def sparsify_phases(model: nn.Module, w0: torch.Tensor, groups: list[Group], chosen: list[Group],
                    cfg: SparsifyConfig, train: Split, evaluation: Evaluation,
                    budget: Budget | None = None, notes: dict | None = None) -> Iterator[Phase]:
    """The phases of a sparsify run, created lazily: the walk to {w_T = 0}, then (if it arrived) the relaxation,
    of cfg.relax_steps steps at most (None: no count; then a budget is needed); under a budget it ends when the
    budget is spent, and its ε schedule follows the budget (relax_progress), so that it completes there whatever a
    step costs.

    Under a CPU `budget` the walk must arrive within WALK_SHARE of it: its ε never falls below what arrives by
    then (walk_floor). A walk that has not arrived by then, that could not arrive by then even at its largest step
    (cfg.path.eps) SHORT_LIMIT steps in a row, or that the floor has forced out of the linear regime in FORCED_LIMIT
    of its last five steps (the budget cannot carry it without changing the function), ends MISSED (`notes`, when
    given, gets "budget_to_arrive": the budget its steps so far say it would arrive within, deadline_phase): the
    better of its own point and the start, projected onto {w_T = 0}, is restored by descent on D toward the start's
    function for the rest of the budget (restore_phase): a metric step from a net that far from its function buys
    less than a cheap gradient step (bench/results/sweep-checked-front-resnet8-fashion-mnist.md)."""
    target, seed = group_mask(chosen, w0.numel()), cfg.path.seed
    pull_sampler = BatchSampler.of(train, seed + PULL)
    # with no finishing steps allowed (relax_steps 0: the literal algorithm) the walk has the whole budget, as written
    relaxes = cfg.relax_steps != 0
    if budget is None and cfg.relax_steps is None:
        raise ValueError("a relaxation without a CPU budget needs a step count (relax_steps)")
    deadline = None if budget is None else budget.seconds * (WALK_SHARE if relaxes else 1.0)
    share = None if budget is None else RECORD_SHARE
    walk = target_walk(model, w0, groups, target, cfg, pull_sampler, BatchSampler.of(train, seed + PROBE), evaluation,
                       eps_floor=None if budget is None else walk_floor(budget, deadline), record_share=share)
    yield deadline_phase(walk, budget, deadline, notes) if budget is not None and relaxes else path_phase(walk)
    keep = keep_score(model, w0, train, seed, cfg)
    if walk.status is Status.MISSED and relaxes and walk.target_norm() == 0.0:  # projected
        start = torch.where(target, torch.zeros_like(w0), w0)
        start = walk.w if keep(walk.w) <= keep(start) else start
        yield restore_phase(model, w0, walk, start, target, cfg, train, evaluation, budget)
        return
    progress = None if budget is None else relax_progress(budget, walk)
    if walk.status is Status.ARRIVED and relaxes and (progress is None or progress() < 1.0):
        # its steps are meant to change the function (back toward the dense one), so they follow their ε schedule
        # unchecked: checked, lenet60 at 50 of 60 filters ended at 0.8622 where the schedule gives 0.8803 (3 seeds,
        # 120 CPU s); keep_best measures instead what the relaxation is for, and it ends on its best point
        steps = MAX_STEPS if cfg.relax_steps is None else cfg.relax_steps  # None: the budget ends it (progress)
        relax_cfg = replace(cfg.path, max_steps=steps, eps=cfg.relax_eps, eps_final=cfg.relax_eps_final,
                            adaptive=False)
        field_ = restore(model, w0, pull_sampler, cfg.pull_batch, cfg.path.phi)
        yield path_phase(Walk(model, walk.w, field_, relax_cfg, BatchSampler.of(train, seed + RELAX), evaluation,
                              groups, frozen=target, phase="relax", w_ref=w0, step0=walk.snapshots[-1][0],
                              length0=walk.length, watch=target, keep_best=keep, progress=progress,
                              record_share=share))


# of its last five steps, how many the budget's floor may force past the check before the walk is cut: on resnet8 at
# half its groups (240 CPU s) a walk let go to 3 forced steps spent up to 39 steps (a sixth of the budget) before
# its cut, and not one walk arrived; no lenet60 or mlp walk of the fronts had two forced steps within five
FORCED_LIMIT = 2
SHORT_LIMIT = 3  # steps in a row whose floor is above the cap (the deadline out of reach) before the walk is cut


def deadline_phase(walk: Walk, budget: Budget, deadline: float, notes: dict | None = None) -> Phase:
    """The walk as a phase that ends by `deadline` CPU seconds of the budget, or once the deadline is out of its
    reach (SHORT_LIMIT) or its floor has forced FORCED_LIMIT of its last five steps: a walk not arrived then is
    projected onto its hyperplane (Walk.project), as is one that ends MISSED on its own (its step cap, a distance
    budget; the recommended walk has no step cap). `notes` then gets "budget_to_arrive": the CPU seconds spent plus
    what the walk would still need in the linear regime (Walk.cpu_to_arrive), over WALK_SHARE, rounded up to 100 s;
    a rough figure (its steps so far stand for the whole walk), absent when the walk could not measure it."""
    def cut(why: str) -> dict:
        left, need = walk.target_norm(), budget.spent() + walk.cpu_to_arrive()
        if math.isfinite(need):
            budget_to_arrive = 100 * math.ceil(need / WALK_SHARE / 100)
            why += f"; by its steps so far a budget of about {budget_to_arrive} CPU s would let it arrive"
            if notes is not None:
                notes["budget_to_arrive"] = budget_to_arrive
        return walk.project(f"{why} (|w_T| = {left:.3g}); projected onto w_T = 0").row()

    def rows() -> Iterator[dict]:
        for step in walk:
            yield step.row()
            if walk.status is not Status.RUNNING:
                continue
            if walk.short >= SHORT_LIMIT:
                why = (f"the walk cannot arrive within {deadline:.0f} CPU s: {walk.short} steps in a row, even its "
                       f"largest step (ε = {walk.cfg.eps:g}) was too short")
            elif sum(walk.forced) >= FORCED_LIMIT:
                why = (f"the budget cannot carry the walk: {sum(walk.forced)} of its last {len(walk.forced)} steps "
                       f"left the linear regime at the smallest ε that arrives within {deadline:.0f} CPU s")
            elif budget.spent() >= deadline:
                why = f"not arrived within {deadline:.0f} of the budget's {budget.seconds:.0f} CPU s"
            else:
                continue
            yield cut(why)
            return
        if walk.status is Status.MISSED and walk.target_norm() > 0:  # ended on its own: a step cap, a distance budget
            yield cut(f"not arrived ({walk.reason})")
    return Phase(walk.phase, rows(), lambda: walk.status, lambda: walk.snapshots, lambda: walk.w)


DESCENT_BATCH, DESCENT_LR = 128, 1e-3  # the restore by descent: Adam's images per step and learning rate
DESCENT_EVAL = 25  # its steps between two records of accuracy and D (at least the path's eval_every)
# under a budget, the most of a phase's CPU time its record (D on the distance batch, accuracy on the evaluation set)
# may take (core.path.RecordShare): measured every step and every eval_every steps, it took 19% of a lenet60
# relaxation step (0.025 s of D, 0.17 s of accuracy and keep score every ten steps, against 0.22 s a step) and 15% of
# resnet8's restore by descent, steps the baselines beside it spend on their method
RECORD_SHARE = 0.05


def restore_phase(model: nn.Module, w0: torch.Tensor, walk: Walk, start: torch.Tensor, target: torch.Tensor,
                  cfg: SparsifyConfig, train: Split, evaluation: Evaluation, budget: Budget) -> Phase:
    """Adam on D(w, w0) = |φ f(x, w) − φ f(x, w0)|² over fresh unlabeled batches (distillation toward the start's
    function), w_T held at 0, from `start` until the budget is spent, at a constant learning rate (as the distill
    baseline): a restore has little time, and on resnet8 at half its groups 572 steps reached 0.8478 at a constant
    rate against 0.8299 with a cosine decay to 0 (seed 0, Fashion-MNIST). A row per step; accuracy, D and the group
    norms every DESCENT_EVAL steps (or the path's eval_every, if more) while they take at most RECORD_SHARE of its
    CPU time, and at the end."""
    points = descend(model, start, target, train, "adam", DESCENT_LR, DESCENT_BATCH, cfg.path.seed + RELAX,
                     w_teacher=w0, phi=cfg.path.phi)
    box = {"w": start}
    x = evaluation.x[: evaluation.distance_batch]
    ref = mapped_outputs(model, w0, x, cfg.path.phi)
    zero = int((group_norms(start, walk.groups) == 0).sum())  # the held groups stay at zero
    every, share = max(DESCENT_EVAL, cfg.path.eval_every), RecordShare(RECORD_SHARE)

    def row(step: int, w: torch.Tensor, evaluate: bool, seconds: float) -> dict:
        if not evaluate:  # most steps: only what the step was (the group norms and scores cost a pass each)
            return Step(step, "restore", walk.length, 0.0, math.nan, 0.0, zero, math.nan, math.nan, math.nan,
                        math.nan, 0.0, 0.0, seconds).row()
        with share.timed():
            loss, acc = evaluation.scores(model, w)
            dist = functional_distance(model, w, None, x, cfg.path.phi, ref=ref)
            norms = group_norms(w, walk.groups)
        return Step(step, "restore", walk.length, 0.0, dist, 0.0, int((norms == 0).sum()), acc, loss, math.nan,
                    math.nan, 0.0, 0.0, seconds, group_norms=norms.tolist()).row()

    def rows() -> Iterator[dict]:
        step = walk.at
        while budget.left() > 0:
            t0 = time.perf_counter()
            box["w"], step = next(points), step + 1
            if budget.left() > 0:
                due = (step - walk.at) % every == 0 and share.allows()
                yield row(step, box["w"], due, time.perf_counter() - t0)
        yield row(step, box["w"], True, 0.0)

    return Phase("restore", rows(), lambda: Status.DONE, lambda: [(walk.at, start)], lambda: box["w"])


def keep_score(model: nn.Module, w0: torch.Tensor, train: Split, seed: int,
               cfg: SparsifyConfig) -> Callable[[torch.Tensor], float]:
    """w ↦ D(w, w0) on KEEP_IMAGES training images drawn once (no labels): the relaxation's score of a point."""
    x = train.batch(min(KEEP_IMAGES, len(train)), torch.Generator().manual_seed(seed + KEEP))[0]
    ref = mapped_outputs(model, w0, x, cfg.path.phi)
    return lambda w: functional_distance(model, w, None, x, cfg.path.phi, ref=ref)


def budgeted(phases: Iterator[Phase], budget: Budget) -> Iterator[Phase]:
    """The phases of a sparsify run cut when the budget is spent (a cut walk has MISSED its target); the restore by
    descent ends itself there, after a last evaluated row."""
    for phase in phases:
        yield phase if phase.name == "restore" else within(phase, budget, Status.MISSED if phase.name == "walk"
                                                           else Status.DONE)


WALK_SHARE = 0.5  # of a budget, the CPU seconds by which the walk must arrive; the rest is the relaxation's

# the fewest walk steps the budget's walk share must hold at the batches a run starts with: lenet60's walks to 50 of
# 60 filters arrive in 72 to 79 steps (bench/out/sweeps/front-fashion-mnist-side), resnet8's need about 430, so with
# less room than this no walk of the zoo could arrive; lenet60, the mlp and resnet8 at their sweep budgets have more
MIN_WALK_STEPS = 50
MIN_PROBE, MIN_PULL = 8, 32  # the smallest batches fitting halves to (a metric of 8·classes rows; a 32-image pull)


def fit_batches(model: nn.Module, w0: torch.Tensor, groups: list[Group], chosen: list[Group], cfg: SparsifyConfig,
                train: Split, evaluation: Evaluation, budget: Budget) -> SparsifyConfig:
    """cfg with its probe batch B and pull batch halved together (not below MIN_PROBE, MIN_PULL) until
    MIN_WALK_STEPS walk steps fit the walk's share of the budget, c · MIN_WALK_STEPS ≤ WALK_SHARE · seconds. c is a
    trial walk step's CPU seconds at the given batches (on batches of its own, from the budget; the lesser of two
    when the first, which pays the cold start, does not fit), scaled at each halving by the mean of the two ratios
    (a step's metric grows with B, its pull with the pull batch). The given batches are the largest a run uses, as
    cfg.path.eps is the largest step: a net whose step costs little keeps them. A literal walk (fixed ε, no
    relaxation) keeps its batches as written."""
    if not cfg.path.adaptive or cfg.relax_steps == 0:
        return cfg
    room = WALK_SHARE * budget.seconds / MIN_WALK_STEPS
    probe, pull = cfg.path.probe, cfg.pull_batch
    trial = trial_steps(model, w0, groups, chosen, cfg, train, evaluation)
    cost = next(trial)
    cost = min(cost, next(trial)) if cost > room else cost  # lenet60's first step: 0.95 CPU s, then 0.28
    while cost > room and (probe > MIN_PROBE or pull > MIN_PULL):
        halved = max(probe // 2, min(probe, MIN_PROBE)), max(pull // 2, min(pull, MIN_PULL))
        cost *= (halved[0] / probe + halved[1] / pull) / 2
        probe, pull = halved
    return replace(cfg, pull_batch=pull, path=replace(cfg.path, probe=probe))


def trial_steps(model: nn.Module, w0: torch.Tensor, groups: list[Group], chosen: list[Group], cfg: SparsifyConfig,
                train: Split, evaluation: Evaluation) -> Iterator[float]:
    """CPU seconds of successive walk steps from w0 at cfg's batches (the direction with its pull, the checked
    tangent, the record as a budgeted walk keeps it), on batches of their own stream (TRIAL): the run's walk draws
    what it would have drawn."""
    target, seed = group_mask(chosen, w0.numel()), cfg.path.seed + TRIAL
    walk = target_walk(model, w0, groups, target, cfg, BatchSampler.of(train, seed), BatchSampler.of(train, seed + 1),
                       evaluation, record_share=RECORD_SHARE)
    for step in itertools.count(1):
        cpu0 = time.process_time()
        walk.step(step, 0)
        yield time.process_time() - cpu0


def walk_floor(budget: Budget, deadline: float) -> Callable[[Walk], float]:
    """Walk ↦ the smallest ε that still arrives by `deadline` CPU seconds of the budget, from the walk's measured
    CPU seconds per step and |w_T| removed per unit of √ε: ε ≥ (|w_T| / (steps left · efficiency))², steps left
    being 0.9 of what the deadline allows. 0 until both are measured, or while the walk is not gaining."""
    def floor(walk: Walk) -> float:
        per_step, gain = walk.cpu_per_step(), walk.efficiency
        if not (per_step > 0 and gain > 0):
            return 0.0
        steps = max(0.9 * (deadline - budget.spent()) / per_step, 1.0)
        return (max(walk.target_norm() - walk.tol, 0.0) / (steps * gain)) ** 2
    return floor


def relax_progress(budget: Budget, walk: Walk) -> Callable[[], float]:
    """() ↦ the fraction spent of what the walk left of the budget, less two of its steps (the relaxation's last
    keep score and record then fit): the relaxation's ε schedule follows it, and the relaxation ends at 1."""
    start = budget.spent()
    reserve = 2 * walk.cpu_per_step() if math.isfinite(walk.cpu_per_step()) else 0.0
    share = budget.seconds - start - reserve
    return (lambda: math.inf) if share <= 0 else (lambda: (budget.spent() - start) / share)


@dataclass
class Outcome:
    """A finished sparsify run: the final weights, its status, one row per step, the kept snapshots and the
    config it ran (its batches fitted to the budget, fit_batches)."""

    w: torch.Tensor
    status: Status
    rows: list[dict]
    snapshots: list[tuple[int, torch.Tensor]]
    seconds: float
    config: SparsifyConfig | None = None
    notes: dict = field(default_factory=dict)  # what the phases found beside their rows (sparsify_phases)

    def summary(self) -> dict:
        return {**sparsify_summary(self.rows, self.status, self.seconds), **self.notes}


def sparsify_summary(rows: list[dict], status: Status, seconds: float) -> dict:
    """Status, steps, length, distance, zero groups and the last evaluated accuracy/loss of a sparsify run."""
    if not rows:
        return {"status": status, "steps": 0, "seconds": seconds}
    last = rows[-1]
    evaluated = [r for r in rows if not math.isnan(r["accuracy"])]
    measured = [r for r in rows if not math.isnan(r["distance"])]
    return {"status": status, "steps": last["step"], "length": last["length"],
            "distance": measured[-1]["distance"] if measured else math.nan,
            "groups_zero": last["groups_zero"], "accuracy": evaluated[-1]["accuracy"] if evaluated else math.nan,
            "loss": evaluated[-1]["loss"] if evaluated else math.nan, "seconds": seconds,
            "restore_steps": sum(r["phase"] == "restore" for r in rows)}


def run_sparsify(model: nn.Module, w0: torch.Tensor, groups: list[Group], cfg: SparsifyConfig, train: Split,
                 evaluation: Evaluation, writer: Sink | None = None, stop: Stop | None = None,
                 on_row: Callable[[dict], None] | None = None, chosen: list[Group] | None = None) -> Outcome:
    """Choose the groups, walk, relax; the run folder gets every row and snapshot as they come, then the final
    net. A stop request ends it within one step (status STOPPED)."""
    cfg.validate()
    if not cfg.filters <= len(groups):
        raise ValueError(f"cannot zero {cfg.filters} groups: the model has {len(groups)}")
    if chosen is None:
        chosen = target_groups(model, w0, groups, cfg, train)
    t0, budget = time.perf_counter(), Budget(cfg.seconds)
    cfg = fit_batches(model, w0, groups, chosen, cfg, train, evaluation, budget)  # what the run uses is recorded
    if writer is not None:
        writer.begin(model, w0, config=cfg.as_dict(), target_groups=[g.name for g in chosen])

    notes: dict = {}

    def summary(rec: Record) -> dict:
        return {**sparsify_summary(rec.rows, rec.status, time.perf_counter() - t0), **notes}

    phases = budgeted(sparsify_phases(model, w0, groups, chosen, cfg, train, evaluation, budget, notes), budget)
    rec = execute(phases, writer, stop, on_row, summary)
    return Outcome(rec.w if rec.w is not None else w0.clone(), rec.status, rec.rows, rec.snapshots,
                   time.perf_counter() - t0, cfg, notes)


def candidate_configs(base: SparsifyConfig, count: int) -> list[SparsifyConfig]:
    """`count` variations of `base` toward the same number of zero filters: strategies in turn, then seeds."""
    out = []
    for i in range(count):
        strategy = STRATEGIES[i % len(STRATEGIES)] if count > 1 else base.strategy
        out.append(replace(base, strategy=strategy, path=replace(base.path, seed=base.path.seed + i // len(STRATEGIES))))
    return out


def shortest(summaries: list[dict]) -> int:
    """Index of the shortest path (summary "length") among those whose "status" is arrived (all of them when none
    arrived)."""
    arrived = [i for i, r in enumerate(summaries) if r.get("status") == Status.ARRIVED]  # a str Enum: "arrived" too
    pool = arrived or list(range(len(summaries)))
    return min(pool, key=lambda i: _length(summaries[i]))


def _length(summary: dict) -> float:
    value = summary.get("length")
    return value if isinstance(value, (int, float)) and not math.isnan(value) else math.inf


def run_candidate(source: Source, cfg: SparsifyConfig, root: str, run_id: str, meta: dict) -> dict:
    """One candidate path into the run folder root/run_id (a task for a backend: it opens its own inputs);
    its summary."""
    from ..infra import threads
    from ..store.runs import RunWriter, run_meta

    threads.configure()
    ckpt, dataset, train, test = source.open()
    writer = RunWriter({**run_meta("sparsify", ckpt, dataset, train.source, len(test)), **meta}, root=root,
                       run_id=run_id)
    out = run_sparsify(ckpt.model, ckpt.w, ckpt.groups, cfg, train, Evaluation(test.x, test.y), writer=writer)
    return {k: (v.value if isinstance(v, Status) else v) for k, v in out.summary().items()}


def candidate_name(i: int, cfg: SparsifyConfig) -> str:
    return f"path{i}-{cfg.strategy}-seed{cfg.path.seed}"


def run_candidates(source: Source, configs: list[SparsifyConfig], root: str | os.PathLike, meta: dict,
                   backend: str = "ray", address: str | None = None, workers: int | None = None,
                   stop: Stop | None = None, on_done: Callable[[dict], None] | None = None,
                   prefix: str = "") -> list[dict]:
    """Candidate paths in parallel on a backend (`geodesic.infra.backend`: local Ray by default), each a run folder
    root/<prefix><candidate name> of the group meta["group"] (default: root's name); one summary row per path
    ("path": its folder name; status "error" with the message for a path that raised; None for one cancelled
    by `stop`), in the order of `configs`."""
    from ..infra.backend import open_backend

    root, source = Path(root).resolve(), source.absolute()
    names = [prefix + candidate_name(i, cfg) for i, cfg in enumerate(configs)]
    meta = {"group": root.name, **meta}
    args = [(source, cfg, str(root), names[i], {**meta, "candidate": i, "strategy": cfg.strategy})
            for i, cfg in enumerate(configs)]
    rows: list[dict | None] = [None] * len(configs)
    with open_backend(backend, address, workers) as pool:
        for i, result in pool.map(run_candidate, args, stop=stop):
            if isinstance(result, BaseException):
                result = {"status": Status.ERROR.value, "error": f"{type(result).__name__}: {result}"}
            rows[i] = {"path": names[i], "strategy": configs[i].strategy, "seed": configs[i].path.seed, **result}
            if on_done is not None:
                on_done(rows[i])
    return rows
