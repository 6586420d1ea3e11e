"""Damage to a net and resistance to it (experiment 2, first half).

Operators: zero a fraction of weights, ablate whole filters, add Gaussian noise. Each returns the damaged vector
and the boolean mask of damaged coordinates. For a given seed the damage does not depend on the weights it hits
(the same coordinates are zeroed, the same filters ablated with `among="all"`, the same noise vector added with a
fixed `reference`), so one damage can be applied equally to several nets. `frozen` says which coordinates a
recovery holds at their damaged values (they stay broken).

Resistance: one seeded damage applied equally to several nets; for each net drop = acc(w) − acc(damaged w),
mean ± sd over seeds (`run_damage`, a run of one phase "damage", one row per net, level and seed; `summarize`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import pandas as pd
import torch
from torch import nn

from ..core.params import Group, ParamSpec, group_mask, group_norms, spec_of
from ..core.path import Evaluation
from ..infra.lifecycle import Phase, Row, Status, Stop, execute
from ..store.data import Split
from ..store.runs import RunWriter
from .damage_kinds import AMONG, KINDS


def layer_mask(spec: ParamSpec, layers: list[str] | None) -> torch.Tensor:
    """Coordinates of the named layers' parameters (all parameters when `layers` is None)."""
    mask = torch.zeros(spec.n, dtype=torch.bool)
    for name in spec.names:
        if layers is None or name.rsplit(".", 1)[0] in layers:
            mask[spec.slice(name)] = True
    if layers is not None and not mask.any():
        known = sorted({n.rsplit(".", 1)[0] for n in spec.names})
        raise ValueError(f"no parameters in layers {layers}; the model has {known}")
    return mask


def zero_fraction(w: torch.Tensor, spec: ParamSpec, fraction: float, seed: int,
                  layers: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero a random `fraction` of the weights of `layers` (each coordinate hit with probability `fraction`)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    eligible = layer_mask(spec, layers)
    hit = eligible & (torch.rand(w.numel(), generator=g) < fraction)
    return torch.where(hit, torch.zeros_like(w), w), hit


def ablate_groups(w: torch.Tensor, groups: list[Group], count: int, seed: int,
                  among: str = "alive") -> tuple[torch.Tensor, torch.Tensor]:
    """Zero `count` whole groups (filters/neurons) chosen at random.

    among="alive": only nonzero groups can be picked (every pick destroys a working filter);
    among="all": any group (a pick may land on a filter that is already zero and change nothing).
    """
    if among not in AMONG:
        raise ValueError(f"among must be one of {AMONG}, got {among!r}")
    pool = [gr for gr in groups if bool(w[gr.idx].any())] if among == "alive" else list(groups)
    if count != int(count) or not 0 <= count <= len(pool):
        what = "are nonzero" if among == "alive" else "exist"
        raise ValueError(f"cannot ablate {count} filters: {len(pool)} {what}")
    g = torch.Generator().manual_seed(seed)
    pick = [pool[i] for i in torch.randperm(len(pool), generator=g)[: int(count)].tolist()]
    hit = group_mask(pick, w.numel())
    return torch.where(hit, torch.zeros_like(w), w), hit


def add_noise(w: torch.Tensor, spec: ParamSpec, scale: float, seed: int, layers: list[str] | None = None,
              reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """w + scale·σ_p·N(0, 1) on `layers`, σ_p the std of each parameter tensor p of `reference` (default w).

    A fixed `reference` (e.g. the dense net) makes the added vector the same for every net."""
    if not scale >= 0 or scale == float("inf"):
        raise ValueError(f"noise scale must be a finite number >= 0, got {scale}")
    ref = w if reference is None else reference
    if ref.shape != w.shape:
        raise ValueError(f"reference has shape {tuple(ref.shape)}, the weights {tuple(w.shape)}")
    g = torch.Generator().manual_seed(seed)
    out, hit = w.clone(), layer_mask(spec, layers)
    for name in spec.names:
        sl = spec.slice(name)
        if hit[sl].any():
            out[sl] = w[sl] + scale * ref[sl].std() * torch.randn(sl.stop - sl.start, generator=g)
    return out, hit


def damage(w: torch.Tensor, spec: ParamSpec, groups: list[Group], kind: str, level: float, seed: int,
           layers: list[str] | None = None, among: str = "alive",
           reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One entry point: kind "zero" (level = fraction), "ablate" (level = filter count, picked `among` "alive"
    or "all" filters; `layers` ignored), "noise" (level = scale × σ of `reference`'s parameter tensors)."""
    if kind == "zero":
        return zero_fraction(w, spec, level, seed, layers)
    if kind == "ablate":
        return ablate_groups(w, groups, level, seed, among)
    if kind == "noise":
        return add_noise(w, spec, level, seed, layers, reference)
    raise ValueError(f"unknown damage {kind!r}; choose one of {KINDS}")


def frozen(kind: str, mask: torch.Tensor) -> torch.Tensor:
    """The coordinates a recovery holds at their damaged values: the hit ones for "zero" and "ablate"; none for
    "noise" (it touches every coordinate of its layers, so freezing them would leave nothing to move there)."""
    if kind not in KINDS:
        raise ValueError(f"unknown damage {kind!r}; choose one of {KINDS}")
    return mask.clone() if kind in ("zero", "ablate") else torch.zeros_like(mask)


# --- resistance: one damage, several nets -------------------------------------------------------------

# a damage run's mask and frozen coordinates, a recover run's w_ref and frozen: `runs.Run.extra(DAMAGE_FILE)`
DAMAGE_FILE = "damage.safetensors"
_LEVEL_RULES = {"zero": ("a fraction in [0, 1]", lambda x: 0 <= x <= 1),
                "ablate": ("a whole number of filters >= 0", lambda x: 0 <= x < math.inf and x == int(x)),
                "noise": ("a finite scale >= 0", lambda x: 0 <= x < math.inf)}


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
        if self.kind not in KINDS:
            raise ValueError(f"unknown damage {self.kind!r}; choose one of {KINDS}")
        if self.among not in AMONG:
            raise ValueError(f"among must be one of {AMONG}, got {self.among!r}")
        if not self.levels or not self.seeds:
            raise ValueError("give at least one level and one seed")
        rule, ok = _LEVEL_RULES[self.kind]
        for level in self.levels:
            if not ok(level):
                raise ValueError(f"{self.kind} level must be {rule}, got {level}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def recovery_start(model: nn.Module, w: torch.Tensor, groups: list[Group],
                   cfg: DamageConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a recovery from `cfg`'s damage starts: (w_d, mask, frozen), each (n,), of `damage` on the net
    (model, w) at cfg's first level and seed, `layers` and `among` as cfg says. w_d: the damaged weights; mask:
    the coordinates hit; frozen = `frozen(cfg.kind, mask)`, those the recovery holds at their damaged values.
    The CLI's `recover` and the app's damage page both start here."""
    layers = list(cfg.layers) if cfg.layers else None
    w_d, mask = damage(w, spec_of(model), groups, cfg.kind, cfg.levels[0], cfg.seeds[0], layers, cfg.among)
    return w_d, mask, frozen(cfg.kind, mask)


@dataclass
class DamageOutcome:
    table: pd.DataFrame  # one row per (net, level, seed)
    w_damaged: torch.Tensor  # the first net at the first level and seed, damaged
    mask: torch.Tensor  # its damaged coordinates
    status: Status

    def summary(self) -> dict:
        return damage_summary(self.table, self.status)


def damage_summary(table: pd.DataFrame, status: Status) -> dict:
    """Status, row count and the drop (mean ± sd over seeds) of each net at each level."""
    s = summarize(table)
    return {"status": status, "rows": len(table),
            "drop": {f"{r.net} @ {r.level:g}": f"{r.drop_mean:.4f} ± {r.drop_sd:.4f}" for r in s.itertuples()}}


def zero_groups(w: torch.Tensor, groups: list[Group]) -> int:
    """Groups (filters/neurons) whose every coordinate is exactly 0."""
    return int((group_norms(w, groups) == 0).sum()) if groups else 0


def damage_rows(model: nn.Module, nets: dict[str, torch.Tensor], groups: list[Group], cfg: DamageConfig,
                evaluation: Evaluation, reference: torch.Tensor | None = None
                ) -> Iterator[tuple[Row, torch.Tensor, torch.Tensor]]:
    """(row, damaged w, mask) for every level, seed and net. Noise σ comes from `reference` (default: the first
    net), so each seed adds the same vector to every net."""
    spec, ref = spec_of(model), reference if reference is not None else next(iter(nets.values()))
    layers = list(cfg.layers) if cfg.layers else None
    before = {name: evaluation.scores(model, w)[1] for name, w in nets.items()}
    for level in cfg.levels:
        for seed in cfg.seeds:
            for name, w in nets.items():
                w_d, mask = damage(w, spec, groups, cfg.kind, level, seed, layers, cfg.among, ref)
                loss, acc = evaluation.scores(model, w_d)
                row = {"net": name, "kind": cfg.kind, "level": float(level), "seed": seed,
                       "accuracy_before": before[name], "accuracy": acc, "drop": before[name] - acc, "loss": loss,
                       "damaged": int(mask.sum()), "changed": int((w_d != w).sum()),
                       "filters_lost": zero_groups(w_d, groups) - zero_groups(w, groups)}
                yield row, w_d, mask


def run_damage(model: nn.Module, nets: dict[str, torch.Tensor], groups: list[Group], cfg: DamageConfig,
               evaluation: Evaluation, writer: RunWriter | None = None, stop: Stop | None = None,
               on_row: Callable[[Row], None] | None = None, reference: torch.Tensor | None = None) -> DamageOutcome:
    """Damage every net at every level and seed, measure the accuracy drop: one phase "damage", one row per
    (net, level, seed). The run's weights are the first damaged net (w_start: that net undamaged); its mask and
    frozen coordinates go to damage.safetensors as soon as the first row exists. A stop request ends the run
    within one row (STOPPED); an exception keeps the rows so far (INTERRUPTED)."""
    cfg.validate()
    if not nets:
        raise ValueError("give at least one net")
    first = next(iter(nets.values()))
    if writer is not None:
        writer.begin(model, first, config=cfg.as_dict(), nets=list(nets), eval_images=len(evaluation.y))
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []  # the first damaged net and its mask

    def rows() -> Iterator[Row]:
        for row, w_d, mask in damage_rows(model, nets, groups, cfg, evaluation, reference):
            if not kept:
                kept.append((w_d, mask))
                if writer is not None:
                    writer.save_extra(DAMAGE_FILE, {"mask": mask, "frozen": frozen(cfg.kind, mask)})
            yield row

    phase = Phase("damage", rows(), weights=lambda: kept[0][0] if kept else None)
    rec = execute([phase], writer, stop, on_row, lambda r: damage_summary(pd.DataFrame(r.rows), r.status))
    w_d, mask = kept[0] if kept else (first.clone(), torch.zeros(first.numel(), dtype=torch.bool))
    return DamageOutcome(pd.DataFrame(rec.rows), w_d, mask, rec.status)


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
    """Mean and sd (over seeds, ddof 1) of accuracy and drop for each (net, kind, level), in order of first
    appearance."""
    if table.empty:
        return pd.DataFrame(columns=["net", "kind", "level", "accuracy_before", "accuracy_mean", "accuracy_sd",
                                     "drop_mean", "drop_sd", "seeds"])
    g = table.groupby(["net", "kind", "level"], sort=False)
    out = g.agg(accuracy_before=("accuracy_before", "first"), accuracy_mean=("accuracy", "mean"),
                accuracy_sd=("accuracy", "std"), drop_mean=("drop", "mean"), drop_sd=("drop", "std"),
                seeds=("seed", "count")).reset_index()
    return out.fillna({"accuracy_sd": 0.0, "drop_sd": 0.0})
