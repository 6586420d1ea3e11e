"""Damage resistance and recovery from damage (experiment 2).

Resistance: one seeded damage (`damage.damage`) applied equally to several nets; for each net
drop = acc(w) − acc(damaged w), mean ± sd over seeds.

Recovery: from the damaged net w_d back toward the pre-damage net w_ref, the damaged coordinates F frozen
(`damage.frozen`), under a budget of steps, wall seconds or gradient evaluations:
- geodesic: tangent steps θ = argmin θᵀGθ − βθᵀv s.t. |θ|² ≤ ε with v = −∇_w D(w, w_ref) (`objectives.restore`),
  G and v restricted to the free coordinates (`path.Path`, solver "gram");
- sgd / adam: minibatch descent on the task loss CE(f(x, w), y) with ∇_F := 0.

Cost is counted three ways. Seconds: wall time of the steps only (evaluation along the curve is not timed).
Gradient evaluations: per-image backward (or forward-mode) passes. An SGD/Adam step costs its batch b. A geodesic
step costs the restore batch (∇D), the k = B·m rows of J behind K = JJᵀ (m backward passes over the probe batch
B), and 4·B for the J-products (Jv, two Jᵀu in the solve, |Jθ|).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path as FsPath
from typing import Callable, Iterator

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import damage as dmg
from .baselines import descend
from .data import Split
from .metric import functional_distance, model_fn
from .objectives import BatchSampler, restore
from .params import Group, group_norms, spec_of
from .path import Evaluation, Path, PathConfig
from .runs import RunWriter, _atomic_write_bytes

METHODS = ("geodesic", "sgd", "adam")
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}
DAMAGE_FILE = "damage.safetensors"


# --- damage resistance ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DamageConfig:
    """One kind of damage at several levels and seeds. `among` (ablate): pick filters among "all" (the same
    filters in every net; a pick may hit one already zero) or only "alive" (nonzero) ones. `layers`: zero/noise
    only these layers (None: all)."""

    kind: str = "zero"
    levels: tuple[float, ...] = (0.3,)
    seeds: tuple[int, ...] = (0,)
    layers: tuple[str, ...] | None = None
    among: str = "all"

    def validate(self) -> "DamageConfig":
        if self.kind not in dmg.KINDS:
            raise ValueError(f"unknown damage {self.kind!r}; choose one of {dmg.KINDS}")
        if self.among not in dmg.AMONG:
            raise ValueError(f"among must be one of {dmg.AMONG}, got {self.among!r}")
        if not self.levels or not self.seeds:
            raise ValueError("give at least one level and one seed")
        for level in self.levels:
            bad = {"zero": not 0 <= level <= 1, "ablate": level < 0 or level != int(level),
                   "noise": not 0 <= level < math.inf}[self.kind]
            if bad:
                rule = {"zero": "a fraction in [0, 1]", "ablate": "a whole number of filters >= 0",
                        "noise": "a finite scale >= 0"}[self.kind]
                raise ValueError(f"{self.kind} level must be {rule}, got {level}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DamageOutcome:
    table: pd.DataFrame  # one row per (net, level, seed)
    w_damaged: torch.Tensor  # the first net at the first level and seed, damaged
    mask: torch.Tensor  # its damaged coordinates
    status: str

    def summary(self) -> dict:
        s = summarize(self.table)
        return {"status": self.status, "rows": len(self.table),
                "drop": {f"{r.net} @ {r.level:g}": f"{r.drop_mean:.4f} ± {r.drop_sd:.4f}" for r in s.itertuples()}}


def zero_groups(w: torch.Tensor, groups: list[Group]) -> int:
    """Groups (filters/neurons) whose every coordinate is exactly 0."""
    return int((group_norms(w, groups) == 0).sum()) if groups else 0


def damage_rows(model: nn.Module, nets: dict[str, torch.Tensor], groups: list[Group], cfg: DamageConfig,
                evaluation: Evaluation, reference: torch.Tensor | None = None
                ) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor]]:
    """(row, damaged w, mask) for every level, seed and net. Noise σ comes from `reference` (default: the first
    net), so each seed adds the same vector to every net."""
    spec, ref = spec_of(model), reference if reference is not None else next(iter(nets.values()))
    layers = list(cfg.layers) if cfg.layers else None
    before = {name: evaluation.scores(model, w)[1] for name, w in nets.items()}
    for level in cfg.levels:
        for seed in cfg.seeds:
            for name, w in nets.items():
                w_d, mask = dmg.damage(w, spec, groups, cfg.kind, level, seed, layers, cfg.among, ref)
                loss, acc = evaluation.scores(model, w_d)
                row = {"net": name, "kind": cfg.kind, "level": float(level), "seed": seed,
                       "accuracy_before": before[name], "accuracy": acc, "drop": before[name] - acc, "loss": loss,
                       "damaged": int(mask.sum()), "changed": int((w_d != w).sum()),
                       "filters_lost": zero_groups(w_d, groups) - zero_groups(w, groups)}
                yield row, w_d, mask


def save_damage(directory: str | FsPath, tensors: dict[str, torch.Tensor]) -> None:
    """Write <run>/damage.safetensors (masks as uint8, weights as float32), atomically."""
    out = {k: (v.to(torch.uint8) if v.dtype == torch.bool else v.float()).contiguous() for k, v in tensors.items()}
    _atomic_write_bytes(FsPath(directory) / DAMAGE_FILE, lambda t: save_file(out, str(t)))


def run_damage(model: nn.Module, nets: dict[str, torch.Tensor], groups: list[Group], cfg: DamageConfig,
               evaluation: Evaluation, writer: RunWriter | None = None, stop: threading.Event | None = None,
               on_row: Callable[[dict], None] | None = None, reference: torch.Tensor | None = None) -> DamageOutcome:
    """Damage every net at every level and seed, measure the accuracy drop; the run folder gets one metrics row
    per (net, level, seed), final.safetensors (w: the first damaged net, w_start: that net undamaged) and
    damage.safetensors (mask, frozen). On an exception the rows so far are kept with status "interrupted"."""
    cfg.validate()
    if not nets:
        raise ValueError("give at least one net")
    first = next(iter(nets.values()))
    if writer:
        writer.update(config=cfg.as_dict(), nets=list(nets), eval_images=len(evaluation.y))
    rows, kept, status = [], None, "done"

    def keep(w_d: torch.Tensor, mask: torch.Tensor) -> None:
        if writer:
            save_damage(writer.dir, {"mask": mask, "frozen": dmg.frozen(cfg.kind, mask)})
            writer.finish(w_d, first, "running")

    try:
        for row, w_d, mask in damage_rows(model, nets, groups, cfg, evaluation, reference):
            if kept is None:
                kept = (w_d, mask)
                keep(w_d, mask)
            rows.append(row)
            if writer:
                writer.add(row)
            if on_row:
                on_row(row)
            if stop is not None and stop.is_set():
                status = "stopped"
                break
    except BaseException:
        if writer:
            writer.update(status="interrupted", summary={"rows": len(rows)})
        raise
    if kept is None:
        kept = (first.clone(), torch.zeros(first.numel(), dtype=torch.bool))
    out = DamageOutcome(pd.DataFrame(rows), kept[0], kept[1], status)
    if writer:
        writer.update(status=status, summary=out.summary())
    return out


def resistance(model: nn.Module, nets: dict[str, torch.Tensor], test: Split | Evaluation, kind: str,
               levels: list[float], seeds: list[int], groups: list[Group] | None = None,
               layers: list[str] | None = None, among: str = "all",
               reference: torch.Tensor | None = None) -> pd.DataFrame:
    """The per-seed resistance table (see `damage_rows`) of one damage kind; `summarize` gives mean ± sd."""
    cfg = DamageConfig(kind, tuple(levels), tuple(seeds), tuple(layers) if layers else None, among)
    ev = test if isinstance(test, Evaluation) else Evaluation(test.x, test.y)
    groups = groups if groups is not None else []
    return run_damage(model, nets, groups, cfg, ev, reference=reference).table


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (over seeds, ddof 1) of accuracy and drop for each (net, kind, level), in order of first appearance."""
    if table.empty:
        return pd.DataFrame(columns=["net", "kind", "level", "accuracy_before", "accuracy_mean", "accuracy_sd",
                                     "drop_mean", "drop_sd", "seeds"])
    g = table.groupby(["net", "kind", "level"], sort=False)
    out = g.agg(accuracy_before=("accuracy_before", "first"), accuracy_mean=("accuracy", "mean"),
                accuracy_sd=("accuracy", "std"), drop_mean=("drop", "mean"), drop_sd=("drop", "std"),
                seeds=("seed", "count")).reset_index()
    return out.fillna({"accuracy_sd": 0.0, "drop_sd": 0.0})


# --- recovery ------------------------------------------------------------------------------------


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
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
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
    max_steps = cfg.steps if cfg.steps is not None else 10**9
    pcfg = replace(cfg.path, seed=cfg.seed, max_steps=max_steps, eval_every=max_steps, snapshot_every=max_steps)
    x1, y1 = train.x[:1], train.y[:1]
    path = Path(model, w, restore(model, w_ref, BatchSampler.of(train, cfg.seed + 1), cfg.restore_batch, pcfg.phi),
                pcfg, BatchSampler.of(train, cfg.seed), Evaluation(x1, y1, distance_batch=1), groups,
                frozen=frozen if bool(frozen.any()) else None, phase="restore", w_ref=w_ref)

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
    """Iterate to recover: yields one curve row per evaluation (step 0 = the damaged net, untimed); `w` is the
    current point, `status` why it ended ("budget", "recovered", "stopped", "diverged")."""

    def __init__(self, model: nn.Module, w_ref: torch.Tensor, w_damaged: torch.Tensor, frozen: torch.Tensor | None,
                 cfg: RecoveryConfig, train: Split, evaluation: Evaluation, groups: list[Group] | None = None):
        self.model, self.cfg, self.evaluation = model.eval(), cfg.validate(), evaluation
        self.w_ref, self.w = w_ref.detach().clone(), w_damaged.detach().clone()
        self.frozen = torch.zeros(w_ref.numel(), dtype=torch.bool) if frozen is None else frozen.to(torch.bool)
        self.train, self.groups = train, groups or []
        self.before = evaluation.scores(model, self.w_ref)[1]
        self.status = "running"
        self.path: Path | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """End after the current step."""
        self._stop.set()

    def points(self) -> Iterator[torch.Tensor]:
        c = self.cfg
        if c.method == "geodesic":
            self.path, pts = geodesic_restore(self.model, self.w_ref, self.w, self.frozen, c, self.train, self.groups)
            return pts
        return descend(self.model, self.w, self.frozen, self.train, c.method, c.learning_rate, c.batch, c.seed,
                       c.momentum)

    def row(self, step: int, seconds: float, evals: int) -> dict:
        ev = self.evaluation
        loss, acc = ev.scores(self.model, self.w)
        dist = functional_distance(self.model, self.w, self.w_ref, ev.x[: ev.distance_batch], self.cfg.path.phi)
        row = {"method": self.cfg.method, "step": step, "seconds": seconds, "grad_evals": evals, "accuracy": acc,
               "loss": loss, "distance": dist, "recovered": acc >= self.before - self.cfg.within - 1e-12,
               "length": self.path.length if self.path is not None else float("nan")}
        return row

    def exhausted(self, step: int, seconds: float, evals: int) -> bool:
        c = self.cfg
        return ((c.steps is not None and step >= c.steps) or (c.seconds is not None and seconds >= c.seconds)
                or (c.grad_evals is not None and evals >= c.grad_evals))

    def __iter__(self) -> Iterator[dict]:
        c, per = self.cfg, self.cfg.evals_per_step()
        step, seconds, evals = 0, 0.0, 0
        yield self.row(0, 0.0, 0)
        points = self.points()
        while True:
            if self._stop.is_set():
                self.status = "stopped"
                return
            t0 = time.perf_counter()
            w = next(points, None)
            seconds += time.perf_counter() - t0
            if w is None:
                self.status = self.path.status if self.path is not None and self.path.status == "diverged" else "budget"
                return
            self.w = w.detach().clone()
            step, evals = step + 1, evals + per
            done = self.exhausted(step, seconds, evals)
            if step % c.eval_every == 0 or done:
                row = self.row(step, seconds, evals)
                yield row
                if c.stop_when_recovered and row["recovered"]:
                    self.status = "recovered"
                    return
            if done:
                self.status = "budget"
                return


@dataclass
class RecoveryOutcome:
    w: torch.Tensor
    status: str
    curve: pd.DataFrame
    before: float  # accuracy of w_ref on the evaluation set
    within: float

    def summary(self) -> dict:
        c, hit = self.curve, first_within(self.curve, self.before, self.within)
        return {"status": self.status, "accuracy_before": self.before, "accuracy_damaged": float(c["accuracy"].iloc[0]),
                "accuracy": float(c["accuracy"].iloc[-1]), "best_accuracy": float(c["accuracy"].max()),
                "steps": int(c["step"].iloc[-1]), "seconds": float(c["seconds"].iloc[-1]),
                "grad_evals": int(c["grad_evals"].iloc[-1]), "distance": float(c["distance"].iloc[-1]),
                **{f"within_{k}": v for k, v in hit.items() if k != "accuracy"}}


def run_recover(model: nn.Module, w_ref: torch.Tensor, w_damaged: torch.Tensor, frozen: torch.Tensor | None,
                cfg: RecoveryConfig, train: Split, evaluation: Evaluation, groups: list[Group] | None = None,
                writer: RunWriter | None = None, stop: threading.Event | None = None,
                on_row: Callable[[dict], None] | None = None) -> RecoveryOutcome:
    """Recover and write the run folder: meta (config, accuracies, status, summary), metrics.parquet (the
    curve), final.safetensors (w: recovered, w_start: damaged) and damage.safetensors (w_ref, frozen). On an
    exception the curve so far and the current weights are written with status "interrupted"."""
    rec = Recovery(model, w_ref, w_damaged, frozen, cfg, train, evaluation, groups)
    if writer:
        writer.update(config=cfg.as_dict(), eval_images=len(evaluation.y), frozen=int(rec.frozen.sum()))
        save_damage(writer.dir, {"w_ref": w_ref, "frozen": rec.frozen})
    rows: list[dict] = []
    try:
        for row in rec:
            rows.append(row)
            if writer:
                writer.add(row)
            if on_row:
                on_row(row)
            if stop is not None and stop.is_set():
                rec.stop()
    except BaseException:
        if writer:
            writer.finish(rec.w, w_damaged, "interrupted", {"steps": rows[-1]["step"] if rows else 0})
        raise
    out = RecoveryOutcome(rec.w, rec.status, pd.DataFrame(rows), rec.before, cfg.within)
    if writer:
        writer.finish(out.w, w_damaged, out.status, out.summary())
    return out


def load_damage(directory: str | FsPath) -> dict[str, torch.Tensor]:
    """damage.safetensors of a damage or recover run folder, masks back as bool."""
    p = FsPath(directory) / DAMAGE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{directory} has no {DAMAGE_FILE}: not a damage run folder")
    return {k: (v.to(torch.bool) if v.dtype == torch.uint8 else v) for k, v in load_file(str(p)).items()}
