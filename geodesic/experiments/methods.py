"""The methods a sweep compares, each a run of phases under one CPU budget, ending on the same masked net.

    geodesic   the recommended sparsify run (walk + relaxation), cut when the budget is spent
    magnitude  zero the smallest layer-normalized groups, nothing else
    finetune   magnitude, then Adam on the labels with the zeroed groups held at 0
    distill    magnitude, then Adam toward the dense net's outputs (no labels)
    fip        the authors' published method (geodesic.experiments.fip): no labels

Every method ends with the phase "mask": its target set to exactly 0 (a geodesic walk cut before it arrived, or
fip, is projected onto {w_T = 0} there) and the net scored on the full evaluation set, outside the budget.
A variant "<method>+recal" (e.g. "magnitude+recal") is the same method whose mask phase first re-estimates every
BatchNorm's running statistics for the masked net on recalibrate.IMAGES unlabeled training images
(geodesic.experiments.recalibrate), also outside the budget: like the mask and the scoring it is a fixed cost of one forward
pass, the same for every method and budget (on resnet8 0.4–0.5 CPU s, bench/results/recal-resnet8-fashion-mnist.md;
the mask row records it as recal_seconds). The distance to the dense net is measured against the dense net with its own
statistics. Without BatchNorm the variant equals its method.
The budget is CPU seconds of this process (time.process_time), which other load on the machine does not eat;
give each run one torch thread so that CPU seconds are comparable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
from torch import nn

from ..core.metric import functional_distance, mapped_outputs
from ..core.params import Group, group_mask
from ..core.path import Evaluation
from ..core.targets import smallest_groups
from ..infra.lifecycle import Budget, Phase, Status, within
from ..store.data import Split
from .baselines import finetune, magnitude_prune
from .choices import SWEEP_METHODS
from .fip import fip
from .recalibrate import images as recal_images
from .recalibrate import recalibrate
from .sparsify import DESCENT_BATCH, budgeted, fit_batches, recommended, sparsify_phases, target_groups

METHODS = SWEEP_METHODS
RECAL = "+recal"  # suffix of a method's variant with BatchNorm recalibration before the mask's scoring
VARIANTS = tuple(m + RECAL for m in METHODS)
BATCH = 128  # images per fine-tuning / distillation step
FIP_BATCH = 200


@dataclass
class Counter:
    """What a method did: optimizer or path steps, and images through a backward pass (gradient evaluations;
    a metric step counts probe × classes rows of J plus its pull batch)."""

    steps: int = 0
    grads: int = 0
    seconds: float = 0.0  # CPU seconds spent before the final mask and evaluation
    config: dict | None = None  # the geodesic's SparsifyConfig as it ran (its batches fitted to the budget)


def parse_method(name: str) -> tuple[str, bool]:
    """(method, recalibrate BatchNorm?) of a sweep method name: "magnitude" → ("magnitude", False),
    "magnitude+recal" → ("magnitude", True); ValueError for a name that is neither."""
    base = name.removesuffix(RECAL)
    if base not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}, each also with {RECAL}")
    return base, base != name


def mask_phase(model: nn.Module, w0: torch.Tensor, target: torch.Tensor, current: Callable[[], torch.Tensor],
               evaluation: Evaluation, last_step: Callable[[], int], recal: torch.Tensor | None = None) -> Phase:
    """The last phase of every method: w_T := 0, then (given images `recal`) the BatchNorm statistics
    re-estimated on them for the masked net, then accuracy, loss and D(w, w0) on the evaluation set, w0 with the
    dense net's statistics. It runs also after the method diverged, on its last weights (NaN scores when those
    are not finite)."""
    box: dict[str, torch.Tensor] = {}

    def rows():
        w = torch.where(target, torch.zeros_like(current()), current())
        box["w"] = w
        dense = mapped_outputs(model, w0, evaluation.x)  # before the statistics change
        extra = {}
        if recal is not None:
            t0 = time.process_time()
            recalibrate(model, w, recal)
            extra["recal_seconds"] = time.process_time() - t0
        loss, acc = evaluation.scores(model, w)
        yield {"step": last_step(), "phase": "mask", "accuracy": acc, "loss": loss,
               "distance": functional_distance(model, w, None, evaluation.x, ref=dense), "target_norm": 0.0,
               **extra}

    return Phase("mask", rows(), lambda: Status.DONE, list, lambda: box.get("w"), final=True)


def one_shot(name: str, work: Callable[[], torch.Tensor], done: Callable[[], int]) -> Phase:
    """A phase that runs `work()` (a baseline's whole descent) and records one row."""
    box: dict[str, torch.Tensor] = {}

    def rows():
        box["w"] = work()
        yield {"step": done(), "phase": name}

    return Phase(name, rows(), lambda: Status.DONE, list, lambda: box.get("w"))


@dataclass
class Task:
    """What every method is given: the dense net, its groups, how many to zero, training images (labels read by
    finetune only), the evaluation set and a seed; the CPU budget comes as a `Budget`."""

    model: nn.Module
    w0: torch.Tensor
    groups: list[Group]
    count: int
    train: Split
    evaluation: Evaluation
    seed: int


def geodesic_phases(t: Task, budget: Budget, counter: Counter) -> tuple[list[Group], Iterator[Phase]]:
    """recommended(count) with the task's seed; its relaxation for what the walk left of the budget, its ε
    schedule following that time; evaluation every 50 steps on 1,000
    images, first and last snapshot only (a sweep keeps many runs)."""
    cfg = recommended(t.count)
    cfg = replace(cfg, path=replace(cfg.path, seed=t.seed, eval_every=50, snapshot_every=10**6, max_steps=10**4))
    chosen = target_groups(t.model, t.w0, t.groups, cfg, t.train)
    quick = Evaluation(t.evaluation.x[:1000], t.evaluation.y[:1000])
    cfg = fit_batches(t.model, t.w0, t.groups, chosen, cfg, t.train, quick, budget)
    counter.config = cfg.as_dict()
    per_step = {"walk": cfg.path.probe * _classes(t) + cfg.pull_batch, "restore": DESCENT_BATCH}
    per_step["relax"] = per_step["walk"]

    def counted(phase: Phase) -> Phase:
        def rows():
            for row in phase.rows:
                if row is not None and row.get("phase") in per_step:
                    counter.steps, counter.grads = counter.steps + 1, counter.grads + per_step[row["phase"]]
                yield row

        return Phase(phase.name, rows(), phase.end, phase.snapshots, phase.weights)

    phases = sparsify_phases(t.model, t.w0, t.groups, chosen, cfg, t.train, quick, budget)
    return chosen, budgeted((counted(phase) for phase in phases), budget)


def _classes(t: Task) -> int:
    with torch.no_grad():
        return int(t.model(t.evaluation.x[:1]).shape[-1])


def baseline_phases(method: str, t: Task, budget: Budget, counter: Counter) -> tuple[list[Group], Iterator[Phase]]:
    """magnitude pruning, then (finetune, distill) Adam for the rest of the budget; or fip from the dense net."""
    chosen = smallest_groups(t.w0, t.groups, t.count)
    mask = group_mask(chosen, t.w0.numel())
    pruned, _ = magnitude_prune(t.w0, t.groups, t.count)
    if method == "magnitude":
        return chosen, iter([])

    def descent() -> torch.Tensor:
        teacher = t.w0 if method == "distill" else None
        w, counter.steps = finetune(t.model, pruned, mask, t.train, cpu_seconds=max(budget.left(), 1e-3), seed=t.seed,
                                    batch=BATCH, w_teacher=teacher)
        counter.grads = counter.steps * BATCH
        return w

    def walk() -> torch.Tensor:
        w, counter.steps = fip(t.model, t.w0, mask, t.train, cpu_seconds=max(budget.left(), 1e-3), seed=t.seed,
                               batch=FIP_BATCH)
        counter.grads = counter.steps * FIP_BATCH
        return w

    return chosen, iter([one_shot(method, walk if method == "fip" else descent, lambda: counter.steps)])


def method_phases(method: str, t: Task, budget: Budget, counter: Counter) -> tuple[list[Group], Iterator[Phase]]:
    """(the groups the method zeroes, its phases ending with "mask"); `method` may be a "+recal" variant."""
    method, recal = parse_method(method)
    chosen, phases = (geodesic_phases if method == "geodesic" else
                      lambda *a: baseline_phases(method, *a))(t, budget, counter)
    target = group_mask(chosen, t.w0.numel())
    box = {"w": t.w0}

    def tracked() -> Iterator[Phase]:
        for phase in phases:
            yield Phase(phase.name, phase.rows, phase.end, phase.snapshots, _remember(phase, box))
        counter.seconds = budget.spent()
        yield mask_phase(t.model, t.w0, target, lambda: box["w"], t.evaluation, lambda: counter.steps,
                         recal_images(t.train, t.seed) if recal else None)

    start_w = t.w0 if method in ("geodesic", "fip") else torch.where(target, torch.zeros_like(t.w0), t.w0)
    box["w"] = start_w
    return chosen, tracked()


def _remember(phase: Phase, box: dict) -> Callable[[], torch.Tensor | None]:
    def weights() -> torch.Tensor | None:
        w = phase.weights()
        if w is not None:
            box["w"] = w
        return w

    return weights


__all__ = ["METHODS", "RECAL", "VARIANTS", "Budget", "Counter", "Task", "method_phases", "parse_method", "within"]
