"""Mean network between two tasks: a net good on task A (w_A) and on task B, from two nets of one architecture.

- walk: from w_A along v = −∇_w CE_B(w) (`objectives.learn`; or, with direction="teacher", v = −∇_w D(w, w_B) on
  B's images) plus a pull ρ|v| p̂ toward w_A's function on A's images (`objectives.with_pull`), while the
  metric's probe batch comes from A's inputs: learn B, keep A.
- relaxation: the path w_0 = w_A, w_1 … w_{N−1}, w_N = w_B, started on the straight line; Adam over the inner
  points on fresh minibatches of both tasks' images minimizes the discrete energy E = N Σ_i D(w_i, w_{i+1})
  with the ends fixed (its minimizers approximate the geodesic between the two functions).
- baselines: the straight line (weight averaging; its midpoint ½(w_A + w_B) in particular), fine-tuning w_A
  on B (forgetting), joint training on A ∪ B from the common initialization (the same 10 outputs serve both
  tasks; the upper bound).

On a path, the point picked is the one best on both tasks: argmax_i min(acc_A(w_i), acc_B(w_i)).

A merge is a run (`run_merge`) of the phases in `MergeConfig.phases`, in order, each a generator of rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ..core.metric import model_fn, output_map
from ..core.objectives import LEARN_B, PROBE, PULL_A, RELAX_PATH, BatchSampler, Field, learn, restore, with_pull
from ..core.params import flatten, spec_of
from ..core.path import Evaluation, Path, PathConfig, require
from ..core.train import train, train_steps
from ..infra.lifecycle import Phase, Record, Row, Status, Stop, execute
from ..store.data import Split
from ..store.runs import RunWriter
from .baselines import descend

DIRECTIONS = ("labels", "teacher")
PHASES = ("walk", "relax", "line", "finetune", "joint")
PATHS_FILE = "paths.safetensors"  # the relaxed path (N+1, n) and the baselines' weights
ENERGY_BATCH = 2  # the fixed batch the relaxation's energy is measured on: this offset from the relaxation's seed


def default_path() -> PathConfig:
    """With MergeConfig's defaults, the walk that met ≥ 95 % / ≥ 87 % for lenet60 MNIST → Fashion-MNIST
    (bench/results/merge.md)."""
    return PathConfig(beta=0.01, eps=0.5, eps_final=0.002, max_steps=300, eval_every=25, snapshot_every=10)


@dataclass(frozen=True)
class MergeConfig:
    """One merge run: which phases, and the hyperparameters of each (all recorded in meta.json)."""

    phases: tuple[str, ...] = ("walk", "relax", "line")
    direction: str = "labels"  # walk direction: "labels" v = −∇CE_B; "teacher" v = −∇D(w, w_B) on B's images
    pull: float = 0.5  # ρ: pull toward w_A's function on A's images, relative to |v|
    learn_batch: int = 256  # B images per direction gradient
    pull_batch: int = 256  # A images per pull gradient
    eval_size: int = 2000  # test images per task for accuracy along the walk and fine-tuning (0: all)
    path: PathConfig = field(default_factory=default_path)
    points: int = 8  # N: segments of the relaxed path and of the straight line
    relax_iters: int = 150
    relax_lr: float = 1e-3  # Adam, cosine-decayed to 0
    relax_batch: int = 128  # images of each task per relaxation iteration
    relax_eval_every: int = 20  # energy on a fixed batch every k iterations
    finetune_steps: int = 300
    finetune_lr: float = 1e-3
    joint_epochs: int = 2
    joint_lr: float = 1e-3
    joint_seed: int = 0  # initialization of the jointly trained net (the shipped checkpoints used 0)
    batch: int = 128  # minibatch of fine-tuning and joint training

    def validate(self) -> "MergeConfig":
        bad = [p for p in self.phases if p not in PHASES]
        checks = [
            (bool(self.phases) and not bad, f"phases must be a non-empty subset of {PHASES}, got {self.phases}"),
            (len(set(self.phases)) == len(self.phases), f"phases repeat: {self.phases}"),
            (self.direction in DIRECTIONS, f"direction must be one of {DIRECTIONS}, got {self.direction!r}"),
            (self.pull >= 0 and math.isfinite(self.pull), f"pull must be a finite number >= 0, got {self.pull}"),
            (self.learn_batch >= 1 and self.pull_batch >= 1, "learn_batch and pull_batch must be >= 1"),
            (self.eval_size >= 0, f"eval_size must be >= 0 (0: all), got {self.eval_size}"),
            (self.points >= 2, f"points (segments N) must be >= 2, got {self.points}"),
            (self.relax_iters >= 1, f"relax_iters must be >= 1, got {self.relax_iters}"),
            (self.relax_lr > 0 and math.isfinite(self.relax_lr), f"relax_lr must be > 0, got {self.relax_lr}"),
            (self.relax_batch >= 1 and self.relax_eval_every >= 1, "relax_batch and relax_eval_every must be >= 1"),
            (self.finetune_steps >= 1, f"finetune_steps must be >= 1, got {self.finetune_steps}"),
            (self.joint_epochs >= 1, f"joint_epochs must be >= 1, got {self.joint_epochs}"),
            (self.finetune_lr > 0 and self.joint_lr > 0 and math.isfinite(self.finetune_lr + self.joint_lr),
             "finetune_lr and joint_lr must be > 0"),
            (self.batch >= 1, f"batch must be >= 1, got {self.batch}"),
        ]
        require(checks)
        self.path.validate()
        return self

    def as_dict(self) -> dict:
        return asdict(self)


# --- data and evaluation -----------------------------------------------------------------------


def concat(a: Split, b: Split) -> Split:
    """The union of two splits (images and labels stacked; labels keep their own meaning in each task)."""
    return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), f"{a.name}+{b.name}", a.split,
                 a.source if a.source == b.source else f"{a.source}+{b.source}")


def head(split: Split, size: int) -> Split:
    """The first `size` examples (all when size is 0)."""
    return split if size == 0 else Split(split.x[:size], split.y[:size], split.name, split.split, split.source)


@dataclass
class TimedEvaluation(Evaluation):
    """An Evaluation that adds the seconds spent scoring to `seconds` (to report a walk's time without them)."""

    seconds: float = 0.0

    def scores(self, model: nn.Module, w: torch.Tensor) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = super().scores(model, w)
        self.seconds += time.perf_counter() - t0
        return out


def scores_both(model: nn.Module, w: torch.Tensor, test_a: Split, test_b: Split) -> dict:
    """{"accuracy", "loss"} on task A and {"accuracy_b", "loss_b"} on task B at w."""
    loss_a, acc_a = Evaluation(test_a.x, test_a.y).scores(model, w)
    loss_b, acc_b = Evaluation(test_b.x, test_b.y).scores(model, w)
    return {"accuracy": acc_a, "loss": loss_a, "accuracy_b": acc_b, "loss_b": loss_b}


def best_on_both(rows: list[Row]) -> int:
    """Index of the row with the largest min(accuracy on A, accuracy on B)."""
    return max(range(len(rows)), key=lambda i: min(rows[i]["accuracy"], rows[i]["accuracy_b"]))


def point_rows(model: nn.Module, points: torch.Tensor, test_a: Split, test_b: Split, phase: str) -> Iterator[Row]:
    """One row per point w_i (i = 0 … N) of a path (N+1, n): t = i/N and the scores on both tasks."""
    N = len(points) - 1
    for i, w in enumerate(points):
        yield {"phase": phase, "step": i, "t": i / N, **scores_both(model, w, test_a, test_b)}


# --- the straight line and the relaxation ------------------------------------------------------


def straight_line(w_a: torch.Tensor, w_b: torch.Tensor, points: int) -> torch.Tensor:
    """w_i = (1 − i/N) w_A + (i/N) w_B for i = 0 … N, shape (N+1, n): weight averaging."""
    t = torch.linspace(0, 1, points + 1, dtype=w_a.dtype)[:, None]
    return (1 - t) * w_a + t * w_b


def path_outputs(model: nn.Module, points: torch.Tensor, x: torch.Tensor, phi: str) -> torch.Tensor:
    """φ f(x, w_i) for every point, shape (N+1, B, m)."""
    f, out = model_fn(model), output_map(phi)
    return torch.stack([out(f(w, x)) for w in points])


def path_energy(model: nn.Module, points: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs") -> tuple[float, float]:
    """(E, L) on the batch x: E = N Σ_i D(w_i, w_{i+1}), L = Σ_i √D(w_i, w_{i+1}); E ≥ L², equal iff evenly spaced."""
    with torch.no_grad():
        o = path_outputs(model, points, x, phi)
        d = (o[1:] - o[:-1]).pow(2).sum((1, 2)) / x.shape[0]
    return float(len(d) * d.sum()), float(d.sqrt().sum())


class Relaxation:
    """Minimize E = N Σ_i D(w_i, w_{i+1}) over the inner points of `start` (N+1, n), ends fixed.

    Iterate to relax: each iteration draws a batch x = sample() and takes one Adam step (lr cosine-decayed to 0)
    on E(x). Rows hold the minibatch energy every iteration (row 0: the start) and, every `eval_every`
    iterations and at both ends, (E, L) on `x_fixed`. `points` is the current path (N+1, n).
    """

    def __init__(self, model: nn.Module, start: torch.Tensor, sample: Callable[[], torch.Tensor], iters: int,
                 lr: float, phi: str = "sqrt_probs", x_fixed: torch.Tensor | None = None, eval_every: int = 20):
        self.model, self.sample, self.iters, self.phi = model, sample, iters, phi
        self.x_fixed, self.eval_every = x_fixed, eval_every
        self.ends = start[[0, -1]].detach()
        self.inner = start[1:-1].detach().clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.inner], lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / iters)))

    @property
    def points(self) -> torch.Tensor:
        return torch.cat([self.ends[:1], self.inner.detach(), self.ends[1:]])

    def row(self, it: int, energy: float) -> Row:
        row = {"phase": "relax", "step": it, "energy": energy, "energy_fixed": math.nan, "length": math.nan}
        if self.x_fixed is not None and (it % self.eval_every == 0 or it == self.iters):
            row["energy_fixed"], row["length"] = path_energy(self.model, self.points, self.x_fixed, self.phi)
        return row

    def step(self) -> float:
        """One Adam step on E(x) for a fresh batch; returns E(x) before the step."""
        x, N = self.sample(), self.ends.shape[0] + self.inner.shape[0] - 1
        with torch.no_grad():
            o_ends = path_outputs(self.model, self.ends, x, self.phi)
        o = torch.cat([o_ends[:1], path_outputs(self.model, self.inner, x, self.phi), o_ends[1:]])
        energy = N * (o[1:] - o[:-1]).pow(2).sum() / x.shape[0]
        self.opt.zero_grad(set_to_none=True)
        energy.backward()
        self.opt.step()
        self.sched.step()
        return energy.item()

    def __iter__(self) -> Iterator[Row]:
        yield self.row(0, math.nan)
        for it in range(1, self.iters + 1):
            yield self.row(it, self.step())


def relax(model: nn.Module, start: torch.Tensor, sample: Callable[[], torch.Tensor], iters: int, lr: float,
          phi: str = "sqrt_probs", x_fixed: torch.Tensor | None = None,
          eval_every: int = 20) -> tuple[torch.Tensor, list[Row]]:
    """A whole `Relaxation`: (the relaxed path (N+1, n), its rows)."""
    r = Relaxation(model, start, sample, iters, lr, phi, x_fixed, eval_every)
    rows = list(r)
    return r.points, rows


# --- the walk ----------------------------------------------------------------------------------


def walk_field(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
               cfg: MergeConfig) -> Field:
    """v(w) = d_B(w) + ρ |d_B(w)| p̂(w): d_B = −∇CE_B (labels) or −∇D(w, w_B) on B's images (teacher);
    p̂ ∝ −∇D(w, w_A) on A's images."""
    seed, phi = cfg.path.seed, cfg.path.phi
    sampler_b = BatchSampler.of(train_b, seed + LEARN_B)
    if cfg.direction == "labels":
        base = learn(model, sampler_b, cfg.learn_batch)
    else:
        base = restore(model, w_b, sampler_b, cfg.learn_batch, phi)
    return with_pull(base, model, w_a, BatchSampler.of(train_a, seed + PULL_A), cfg.pull, cfg.pull_batch, phi)


def walk_path(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
              test_a: Split, cfg: MergeConfig) -> Path:
    """The walk from w_A: probe batches (the metric) from A's training images, accuracy on A's test images."""
    ev = head(test_a, cfg.eval_size)
    return Path(model, w_a, walk_field(model, w_a, w_b, train_a, train_b, cfg), cfg.path,
                BatchSampler.of(train_a, cfg.path.seed + PROBE), TimedEvaluation(ev.x, ev.y), [])


def walk(path: Path, model: nn.Module, ev_b: Evaluation) -> Iterator[Row]:
    """The walk's rows: each Step (accuracy and loss on A every k steps) plus accuracy_b and loss_b on B's
    evaluation data at the same steps."""
    for s in path:
        row = s.row()
        row.pop("group_norms")
        loss_b, acc_b = ev_b.scores(model, path.w) if not math.isnan(s.accuracy) else (math.nan, math.nan)
        row.update(accuracy_b=acc_b, loss_b=loss_b)
        yield row


# --- baselines ---------------------------------------------------------------------------------


def fresh_net(model: nn.Module, seed: int) -> nn.Module:
    """A new instance of the architecture, initialized with `seed` (as zoo.build does)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return type(model)()


def joint_train(model: nn.Module, train_a: Split, train_b: Split, epochs: int, seed: int = 0, lr: float = 1e-3,
                batch: int = 128) -> tuple[torch.Tensor, dict]:
    """Train a fresh copy of the architecture (`fresh_net`) on A ∪ B with the same 10 outputs for both tasks;
    returns (flat weights, train's summary)."""
    fresh = fresh_net(model, seed)
    info = train(fresh, concat(train_a, train_b), epochs, seed, lr=lr, batch=batch)
    return flatten(fresh), info


# --- one run -----------------------------------------------------------------------------------


@dataclass
class MergeOutcome:
    w: torch.Tensor  # the run's main result: the walk's end, else the relaxed path's best point, else the line's
    status: Status
    rows: list[Row]
    summary: dict
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # the walk's
    relaxed: torch.Tensor | None = None  # (N+1, n)
    baselines: dict[str, torch.Tensor] = field(default_factory=dict)  # "finetune", "joint"


class Merge:
    """The phases of one merge run and what they made so far: the summary, the relaxed path, the baselines'
    weights and each path's best point. `phase(name)` is the named phase, a generator of rows."""

    def __init__(self, model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
                 test_a: Split, test_b: Split, cfg: MergeConfig, writer: RunWriter | None = None):
        self.model, self.w_a, self.w_b, self.cfg, self.writer = model, w_a, w_b, cfg, writer
        self.train_a, self.train_b, self.test_a, self.test_b = train_a, train_b, test_a, test_b
        self.summary: dict = {}
        self.walked: Path | None = None
        self.relaxed: torch.Tensor | None = None
        self.baselines: dict[str, torch.Tensor] = {}
        self.best: dict[str, torch.Tensor] = {}  # "relax", "line" -> the path's point best on both tasks

    @property
    def w(self) -> torch.Tensor:
        """The run's result so far: the walk's current point, else the relaxed path's best, else the line's."""
        if self.walked is not None:
            return self.walked.w
        return self.best.get("relax", self.best.get("line", self.w_a))

    def phase(self, name: str) -> Phase:
        """The named phase; the walk's path is made here, so that its snapshots and status exist from the start."""
        if name == "walk":
            path = self.walked = walk_path(self.model, self.w_a, self.w_b, self.train_a, self.train_b, self.test_a,
                                           self.cfg)
            return Phase(name, self._walk(path), lambda: path.status, lambda: path.snapshots, lambda: self.w)
        return Phase(name, getattr(self, f"_{name}")(), weights=lambda: self.w)

    def _final_scores(self, prefix: str, w: torch.Tensor) -> None:
        s = scores_both(self.model, w, self.test_a, self.test_b)
        self.summary.update({f"{prefix}_accuracy_a": s["accuracy"], f"{prefix}_accuracy_b": s["accuracy_b"]})

    def _save_paths(self) -> None:
        tensors = {**({"relaxed": self.relaxed} if self.relaxed is not None else {}), **self.baselines}
        if self.writer is not None and tensors:
            self.writer.save_extra(PATHS_FILE, tensors)

    def _walk(self, path: Path) -> Iterator[Row]:
        """From w_A, learning B and pulled toward A's function; the summary follows it row by row."""
        b, t0 = head(self.test_b, self.cfg.eval_size), time.perf_counter()
        ev_b = TimedEvaluation(b.x, b.y)
        for row in walk(path, self.model, ev_b):
            t_eval = path.evaluation.seconds + ev_b.seconds
            self.summary.update(walk_steps=row["step"], walk_length=path.length, walk_distance_a=row["distance"],
                                walk_seconds=time.perf_counter() - t0 - t_eval, walk_eval_seconds=t_eval)
            yield row
        self.summary["walk_status"] = path.status
        self._final_scores("walk", path.w)

    def _relax(self) -> Iterator[Row]:
        """The relaxed path from the straight line, then its points scored ("relax-path")."""
        cfg, seed = self.cfg, self.cfg.path.seed + RELAX_PATH
        x_fixed = _both_tasks_sampler(self.train_a, self.train_b, 256, seed + ENERGY_BATCH)()
        t0, rows = time.perf_counter(), []
        relaxation = Relaxation(self.model, straight_line(self.w_a, self.w_b, cfg.points),
                                _both_tasks_sampler(self.train_a, self.train_b, cfg.relax_batch, seed),
                                cfg.relax_iters, cfg.relax_lr, cfg.path.phi, x_fixed, cfg.relax_eval_every)
        for row in relaxation:
            rows.append(row)
            yield row
        self.relaxed = relaxation.points
        self.summary.update(relax_iters=rows[-1]["step"], relax_energy_start=rows[0]["energy_fixed"],
                            relax_energy_end=rows[-1]["energy_fixed"], relax_length_end=rows[-1]["length"],
                            relax_seconds=time.perf_counter() - t0)
        self._save_paths()
        yield from self._best_point("relax", "relax-path", self.relaxed)

    def _line(self) -> Iterator[Row]:
        """The straight line A→B at N+1 points; its midpoint is weight averaging."""
        rows = yield from self._best_point("line", "line", straight_line(self.w_a, self.w_b, self.cfg.points))
        mid = min(rows, key=lambda r: abs(r["t"] - 0.5))
        self.summary.update(line_mid_t=mid["t"], line_mid_accuracy_a=mid["accuracy"],
                            line_mid_accuracy_b=mid["accuracy_b"])

    def _best_point(self, prefix: str, phase: str, path: torch.Tensor):
        """Rows of the path's points; then its best point on both tasks goes to `best` and the summary."""
        rows: list[Row] = []
        for row in point_rows(self.model, path, self.test_a, self.test_b, phase):
            rows.append(row)
            yield row
        i = best_on_both(rows)
        self.best[prefix] = path[i]
        self.summary.update({f"{prefix}_best_t": rows[i]["t"], f"{prefix}_best_accuracy_a": rows[i]["accuracy"],
                             f"{prefix}_best_accuracy_b": rows[i]["accuracy_b"]})
        return rows

    def _finetune(self) -> Iterator[Optional[Row]]:
        """Adam on CE_B from w_A with nothing held (`baselines.descend`); both tasks scored every eval_every
        steps (forgetting), None between."""
        cfg, every = self.cfg, self.cfg.path.eval_every
        ev_a, ev_b = head(self.test_a, cfg.eval_size), head(self.test_b, cfg.eval_size)
        t0, t_eval, w = time.perf_counter(), 0.0, self.w_a
        yield {"phase": "finetune", "step": 0, **scores_both(self.model, w, ev_a, ev_b)}
        points = descend(self.model, w, torch.zeros_like(w, dtype=torch.bool), self.train_b, "adam",
                         cfg.finetune_lr, cfg.batch, cfg.path.seed)
        for step in range(1, cfg.finetune_steps + 1):
            w = next(points)
            if step % every and step != cfg.finetune_steps:
                yield None
                continue
            t1 = time.perf_counter()
            row = {"phase": "finetune", "step": step, **scores_both(self.model, w, ev_a, ev_b)}
            t_eval += time.perf_counter() - t1
            yield row
        self.baselines["finetune"] = w.clone()
        self.summary.update(finetune_steps=cfg.finetune_steps, finetune_seconds=time.perf_counter() - t0 - t_eval)
        self._save_paths()
        self._final_scores("finetune", w)

    def _joint(self) -> Iterator[Optional[Row]]:
        """Joint training from the `joint_seed` initialization on A ∪ B: a row of training loss every 100 steps,
        None between, then the scores on both tasks."""
        cfg, fresh = self.cfg, fresh_net(self.model, self.cfg.joint_seed)
        t0, step = time.perf_counter(), 0
        for step, total, loss in train_steps(fresh, concat(self.train_a, self.train_b), cfg.joint_epochs,
                                             cfg.joint_seed, cfg.joint_lr, cfg.batch):
            yield {"phase": "joint", "step": step, "train_loss": loss} if step % 100 == 0 or step == total else None
        seconds, w = time.perf_counter() - t0, flatten(fresh)
        self.baselines["joint"] = w
        self._save_paths()
        s = scores_both(self.model, w, self.test_a, self.test_b)
        self.summary.update(joint_epochs=cfg.joint_epochs, joint_steps=step, joint_seconds=seconds,
                            joint_accuracy_a=s["accuracy"], joint_accuracy_b=s["accuracy_b"])
        yield {"phase": "joint", "step": step, **s}


def _both_tasks_sampler(train_a: Split, train_b: Split, size: int, seed: int) -> Callable[[], torch.Tensor]:
    a, b = BatchSampler.of(train_a, seed), BatchSampler.of(train_b, seed + LEARN_B)
    return lambda: torch.cat([a(size)[0], b(size)[0]])


def run_merge(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
              test_a: Split, test_b: Split, cfg: MergeConfig, writer: RunWriter | None = None,
              stop: Stop | None = None, on_row: Callable[[Row], None] | None = None) -> MergeOutcome:
    """Run the phases in `cfg.phases` in order; rows go to the run folder (column "phase": walk, relax,
    relax-path, line, finetune, joint) and to `on_row`.

    Final scores use all of test_a/test_b; the walk and fine-tuning score `cfg.eval_size` images per task on
    the way. The run folder gets meta.json (kind "merge"), metrics.parquet, the walk's snapshots, the final
    net (w: the walk's end, else the relaxed path's best point, else the line's; w_start: w_A) and
    paths.safetensors (the relaxed path, the baselines' weights). A stop request ends the run within one
    step (STOPPED; the summary holds what the finished phases and the walk so far measured); on an exception
    what was done is written (INTERRUPTED).
    """
    cfg.validate()
    n = spec_of(model).n
    if w_a.numel() != n or w_b.numel() != n:
        raise ValueError(f"weights have {w_a.numel()} and {w_b.numel()} entries; the model has {n}")
    if writer is not None:
        writer.begin(model, w_a, config=cfg.as_dict())
    run, t0, final = Merge(model, w_a, w_b, train_a, train_b, test_a, test_b, cfg, writer), time.perf_counter(), {}

    def summary(rec: Record) -> dict:  # once: the run folder's summary is the outcome's
        final.update(run.summary, seconds=time.perf_counter() - t0, phases=dict(rec.phases), status=rec.status)
        return final

    rec = execute((run.phase(name) for name in cfg.phases), writer, stop, on_row, summary)
    return MergeOutcome(rec.w if rec.w is not None else run.w, rec.status, rec.rows, final or summary(rec),
                        rec.snapshots, run.relaxed, run.baselines)
