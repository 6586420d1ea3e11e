"""Recovery from damage (experiment 2, second half).

From the damaged net w_d back toward the pre-damage net w_ref, the damaged coordinates F frozen
(`damage.frozen`), under a budget of steps, wall seconds or gradient evaluations:
- geodesic: tangent steps θ = argmin θᵀGθ − βθᵀv s.t. |θ|² ≤ ε with v = −∇_w D(w, w_ref) (`objectives.restore`),
  G and v restricted to the free coordinates (`path.Path`, solver "gram");
- sgd / adam: minibatch descent on the task loss CE(f(x, w), y) with ∇_F := 0.

A recovery is a run of one phase "recover" (`run_recover`); its rows are the recovery curve.

Cost is counted three ways. Seconds: wall time of the steps only (evaluation along the curve is not timed).
Gradient evaluations: per-image backward (or forward-mode) passes. An SGD/Adam step costs its batch b. A geodesic
step costs the restore batch (∇D), the k = B·m rows of J behind K = JJᵀ (m backward passes over the probe batch
B), and 4·B for the J-products (Jv, two Jᵀu in the solve, |Jθ|).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator, Optional

import pandas as pd
import torch
from torch import nn

from ..core.metric import functional_distance
from ..core.objectives import PROBE, PULL, BatchSampler, restore
from ..core.params import Group
from ..core.path import MAX_STEPS, Evaluation, Path, PathConfig, require
from ..infra.lifecycle import Phase, Record, Row, Status, Stop, execute
from ..store.data import Split
from ..store.runs import RunWriter
from .baselines import descend
from .damage import DAMAGE_FILE

METHODS = ("geodesic", "sgd", "adam")
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}


@dataclass(frozen=True)
class RecoveryConfig:
    """A recovery run. Budget: stop at the first of `steps`, `seconds` (timed steps only), `grad_evals`.
    Accuracy and D(w, w_ref) every `eval_every` steps; `within`: "recovered" at accuracy ≥ before − within
    (`stop_when_recovered` ends the run there). Geodesic: `path` (β, ε, probe B, solver) and the restore batch;
    sgd/adam: learning rate (None: 0.01 for SGD with momentum, 1e-3 for Adam), momentum, batch."""

    method: str = "geodesic"
    steps: int | None = 200
    seconds: float | None = None
    grad_evals: int | None = None
    eval_every: int = 5
    within: float = 0.01
    stop_when_recovered: bool = False
    seed: int = 0
    path: PathConfig = field(default_factory=lambda: PathConfig(beta=0.01, eps=0.01, probe=32, solver="gram"))
    restore_batch: int = 256
    lr: float | None = None
    momentum: float = 0.9
    batch: int = 128

    def validate(self) -> "RecoveryConfig":
        checks = [
            (self.method in METHODS, f"unknown method {self.method!r}; choose one of {METHODS}"),
            (any(b is not None for b in (self.steps, self.seconds, self.grad_evals)),
             "give a budget: steps, seconds or grad_evals"),
            (self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.seconds is None or 0 < self.seconds < math.inf, f"seconds must be > 0, got {self.seconds}"),
            (self.grad_evals is None or self.grad_evals >= 1, f"grad_evals must be >= 1, got {self.grad_evals}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (0 <= self.within < 1, f"within must be in [0, 1), got {self.within}"),
            (self.restore_batch >= 1 and self.batch >= 1, "batch sizes must be >= 1"),
            (self.lr is None or 0 < self.lr < math.inf, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
        ]
        require(checks)
        self.path.validate()
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.method, float("nan"))

    def evals_per_step(self, classes: int = 10) -> int:
        """Per-image gradient evaluations of one step (module docstring)."""
        if self.method == "geodesic":
            return self.restore_batch + self.path.probe * classes + 4 * self.path.probe
        return self.batch

    def as_dict(self) -> dict:
        return {**asdict(self), "learning_rate": self.learning_rate, "evals_per_step": self.evals_per_step()}


def geodesic_restore(model: nn.Module, w_ref: torch.Tensor, w: torch.Tensor, frozen: torch.Tensor,
                     cfg: RecoveryConfig, train: Split, groups: list[Group]) -> tuple[Path, Iterator[torch.Tensor]]:
    """The restore path from w (frozen held) toward the function of w_ref, and an iterator of its points.

    The path's own evaluation is cut to one image (accuracy and D are measured by `Recovery`, untimed)."""
    max_steps = cfg.steps if cfg.steps is not None else MAX_STEPS  # the other budget ends it
    pcfg = replace(cfg.path, seed=cfg.seed, max_steps=max_steps, eval_every=max_steps, snapshot_every=max_steps)
    x1, y1 = train.x[:1], train.y[:1]
    field_ = restore(model, w_ref, BatchSampler.of(train, cfg.seed + PULL), cfg.restore_batch, pcfg.phi)
    path = Path(model, w, field_, pcfg, BatchSampler.of(train, cfg.seed + PROBE), Evaluation(x1, y1, distance_batch=1),
                groups, frozen=frozen if bool(frozen.any()) else None, phase="restore", w_ref=w_ref)

    def points() -> Iterator[torch.Tensor]:
        steps = iter(path)
        next(steps)  # the record of the start
        for _ in steps:
            yield path.w

    return path, points()


def first_within(curve: pd.DataFrame, before: float, within: float = 0.01) -> dict:
    """The first evaluated row with accuracy ≥ before − within: its step, seconds, grad_evals and accuracy
    (NaN for all when the curve never gets there)."""
    keys = ("step", "seconds", "grad_evals", "accuracy")
    if curve.empty or "accuracy" not in curve:
        return {k: float("nan") for k in keys}
    hit = curve[curve["accuracy"] >= before - within - 1e-12]
    if hit.empty:
        return {k: float("nan") for k in keys}
    return {k: float(hit.iloc[0][k]) for k in keys}


class Recovery:
    """Iterate to recover: row 0 is the damaged net (untimed), then one item per step, a curve row every
    `eval_every` steps and at the last step, None in between. `w` is the current point; `status` how it ended:
    ARRIVED (recovered, with `stop_when_recovered`), DONE (budget spent) or DIVERGED (the geodesic path)."""

    def __init__(self, model: nn.Module, w_ref: torch.Tensor, w_damaged: torch.Tensor, frozen: torch.Tensor | None,
                 cfg: RecoveryConfig, train: Split, evaluation: Evaluation, groups: list[Group] | None = None):
        self.model, self.cfg, self.evaluation = model.eval(), cfg.validate(), evaluation
        self.w_ref, self.w = w_ref.detach().clone(), w_damaged.detach().clone()
        self.frozen = torch.zeros(w_ref.numel(), dtype=torch.bool) if frozen is None else frozen.to(torch.bool)
        self.train, self.groups = train, groups or []
        self.before = evaluation.scores(model, self.w_ref)[1]
        self.status = Status.RUNNING
        self.path: Path | None = None

    def points(self) -> Iterator[torch.Tensor]:
        c = self.cfg
        if c.method == "geodesic":
            self.path, pts = geodesic_restore(self.model, self.w_ref, self.w, self.frozen, c, self.train, self.groups)
            return pts
        return descend(self.model, self.w, self.frozen, self.train, c.method, c.learning_rate, c.batch, c.seed,
                       c.momentum)

    def row(self, step: int, seconds: float, evals: int) -> Row:
        ev = self.evaluation
        loss, acc = ev.scores(self.model, self.w)
        dist = functional_distance(self.model, self.w, self.w_ref, ev.x[: ev.distance_batch], self.cfg.path.phi)
        return {"method": self.cfg.method, "step": step, "seconds": seconds, "grad_evals": evals, "accuracy": acc,
                "loss": loss, "distance": dist, "recovered": acc >= self.before - self.cfg.within - 1e-12,
                "length": self.path.length if self.path is not None else float("nan")}

    def exhausted(self, step: int, seconds: float, evals: int) -> bool:
        c = self.cfg
        return ((c.steps is not None and step >= c.steps) or (c.seconds is not None and seconds >= c.seconds)
                or (c.grad_evals is not None and evals >= c.grad_evals))

    def __iter__(self) -> Iterator[Optional[Row]]:
        c, per = self.cfg, self.cfg.evals_per_step()
        step, seconds, evals = 0, 0.0, 0
        yield self.row(0, 0.0, 0)
        points = self.points()
        while True:
            t0 = time.perf_counter()
            w = next(points, None)
            seconds += time.perf_counter() - t0
            if w is None:  # the geodesic path ended before the budget (it diverged)
                diverged = self.path is not None and self.path.status is Status.DIVERGED
                self.status = Status.DIVERGED if diverged else Status.DONE
                return
            self.w = w.detach().clone()
            step, evals = step + 1, evals + per
            done = self.exhausted(step, seconds, evals)
            row = self.row(step, seconds, evals) if step % c.eval_every == 0 or done else None
            yield row
            if row is not None and c.stop_when_recovered and row["recovered"]:
                self.status = Status.ARRIVED
                return
            if done:
                self.status = Status.DONE
                return


@dataclass
class RecoveryOutcome:
    w: torch.Tensor
    status: Status
    curve: pd.DataFrame
    before: float  # accuracy of w_ref on the evaluation set
    within: float

    def summary(self) -> dict:
        c, hit = self.curve, first_within(self.curve, self.before, self.within)
        if c.empty:
            return {"status": self.status, "accuracy_before": self.before, "steps": 0}
        return {"status": self.status, "accuracy_before": self.before, "accuracy_damaged": float(c["accuracy"].iloc[0]),
                "accuracy": float(c["accuracy"].iloc[-1]), "best_accuracy": float(c["accuracy"].max()),
                "steps": int(c["step"].iloc[-1]), "seconds": float(c["seconds"].iloc[-1]),
                "grad_evals": int(c["grad_evals"].iloc[-1]), "distance": float(c["distance"].iloc[-1]),
                **{f"within_{k}": v for k, v in hit.items() if k != "accuracy"}}


def recovery_phase(rec: Recovery) -> Phase:
    """A recovery as the phase "recover" of a run: its curve rows, how it ended and its current point."""
    return Phase("recover", rec, lambda: rec.status, weights=lambda: rec.w)


def run_recover(model: nn.Module, w_ref: torch.Tensor, w_damaged: torch.Tensor, frozen: torch.Tensor | None,
                cfg: RecoveryConfig, train: Split, evaluation: Evaluation, groups: list[Group] | None = None,
                writer: RunWriter | None = None, stop: Stop | None = None,
                on_row: Callable[[Row], None] | None = None) -> RecoveryOutcome:
    """Recover as a run of one phase "recover": meta (config, accuracies, status, summary), metrics.parquet (the
    curve), the final net (w: recovered, w_start: damaged) and damage.safetensors (w_ref, frozen). A stop
    request ends it within one step (STOPPED); on an exception the curve so far and the current weights are
    written (INTERRUPTED)."""
    rec = Recovery(model, w_ref, w_damaged, frozen, cfg, train, evaluation, groups)
    if writer is not None:
        writer.begin(model, w_damaged, config=cfg.as_dict(), eval_images=len(evaluation.y),
                     frozen=int(rec.frozen.sum()))
        writer.save_extra(DAMAGE_FILE, {"w_ref": w_ref, "frozen": rec.frozen})

    def outcome(r: Record) -> RecoveryOutcome:
        w = r.w if r.w is not None else rec.w
        return RecoveryOutcome(w, r.status, pd.DataFrame(r.rows), rec.before, cfg.within)

    return outcome(execute([recovery_phase(rec)], writer, stop, on_row, lambda r: outcome(r).summary()))
