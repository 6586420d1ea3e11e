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
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
from safetensors.torch import save_file
from torch import nn

from .baselines import finetune
from .data import Split
from .metric import model_fn, output_map
from .objectives import BatchSampler, Field, learn, restore, with_pull
from .params import flatten, spec_of
from .path import Evaluation, Path, PathConfig
from .runs import RunWriter, _atomic_write_bytes
from .train import train

DIRECTIONS = ("labels", "teacher")
PHASES = ("walk", "relax", "line", "finetune", "joint")
Row = dict
OnRow = Callable[[Row], None]


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
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        self.path.validate()
        return self

    def as_dict(self) -> dict:
        return asdict(self)


class Stopped(Exception):
    """Raised inside a phase when the stop event is set."""


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


def evaluate_points(model: nn.Module, points: torch.Tensor, test_a: Split, test_b: Split, phase: str,
                    stop: threading.Event | None = None, on_row: OnRow | None = None) -> list[Row]:
    """One row per point w_i (i = 0 … N) of a path (N+1, n): t = i/N and the scores on both tasks."""
    rows, N = [], len(points) - 1
    for i, w in enumerate(points):
        _check_stop(stop)
        rows.append({"phase": phase, "step": i, "t": i / N, **scores_both(model, w, test_a, test_b)})
        if on_row:
            on_row(rows[-1])
    return rows


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped


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


def relax(model: nn.Module, start: torch.Tensor, sample: Callable[[], torch.Tensor], iters: int, lr: float,
          phi: str = "sqrt_probs", x_fixed: torch.Tensor | None = None, eval_every: int = 20,
          stop: threading.Event | None = None, on_row: OnRow | None = None) -> tuple[torch.Tensor, list[Row]]:
    """Minimize E = N Σ_i D(w_i, w_{i+1}) over the inner points of `start` (N+1, n), ends fixed.

    Each iteration draws a batch x = sample() and takes one Adam step (lr cosine-decayed to 0) on E(x). Rows
    hold the minibatch energy every iteration and, every `eval_every` iterations and at both ends, (E, L) on
    `x_fixed`. Returns (the relaxed path (N+1, n), rows); a stop request returns the path reached so far.
    """
    ends = start[[0, -1]].detach()
    inner = start[1:-1].detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([inner], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / iters)))
    N = start.shape[0] - 1
    rows: list[Row] = []

    def emit(it: int, energy: float) -> None:
        row = {"phase": "relax", "step": it, "energy": energy, "energy_fixed": math.nan, "length": math.nan}
        if x_fixed is not None and (it % eval_every == 0 or it == iters):
            row["energy_fixed"], row["length"] = path_energy(model, current(), x_fixed, phi)
        rows.append(row)
        if on_row:
            on_row(row)

    def current() -> torch.Tensor:
        return torch.cat([ends[:1], inner.detach(), ends[1:]])

    emit(0, math.nan)
    for it in range(1, iters + 1):
        if stop is not None and stop.is_set():
            break
        x = sample()
        with torch.no_grad():
            o_ends = path_outputs(model, ends, x, phi)
        o = torch.cat([o_ends[:1], path_outputs(model, inner, x, phi), o_ends[1:]])
        energy = N * (o[1:] - o[:-1]).pow(2).sum() / x.shape[0]
        opt.zero_grad(set_to_none=True)
        energy.backward()
        opt.step()
        sched.step()
        emit(it, energy.item())
    return current(), rows


# --- the walk ----------------------------------------------------------------------------------


def walk_field(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
               cfg: MergeConfig) -> Field:
    """v(w) = d_B(w) + ρ |d_B(w)| p̂(w): d_B = −∇CE_B (labels) or −∇D(w, w_B) on B's images (teacher);
    p̂ ∝ −∇D(w, w_A) on A's images."""
    seed, phi = cfg.path.seed, cfg.path.phi
    sampler_b = BatchSampler.of(train_b, seed + 1)
    if cfg.direction == "labels":
        base = learn(model, sampler_b, cfg.learn_batch)
    else:
        base = restore(model, w_b, sampler_b, cfg.learn_batch, phi)
    return with_pull(base, model, w_a, BatchSampler.of(train_a, seed + 2), cfg.pull, cfg.pull_batch, phi)


def walk_path(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
              test_a: Split, cfg: MergeConfig) -> Path:
    """The walk from w_A: probe batches (the metric) from A's training images, accuracy on A's test images."""
    ev = head(test_a, cfg.eval_size)
    return Path(model, w_a, walk_field(model, w_a, w_b, train_a, train_b, cfg), cfg.path,
                BatchSampler.of(train_a, cfg.path.seed), TimedEvaluation(ev.x, ev.y), [])


def walk(path: Path, model: nn.Module, ev_b: Evaluation, stop: threading.Event | None = None,
         on_row: OnRow | None = None) -> Iterator[Row]:
    """The walk's rows: each Step (accuracy and loss on A every k steps) plus accuracy_b and loss_b on B's
    evaluation data at the same steps; a stop request ends it within one step (path.status "stopped")."""
    for s in path:
        row = s.row()
        row.pop("group_norms")
        loss_b, acc_b = ev_b.scores(model, path.w) if not math.isnan(s.accuracy) else (math.nan, math.nan)
        row.update(accuracy_b=acc_b, loss_b=loss_b)
        if on_row:
            on_row(row)
        yield row
        if stop is not None and stop.is_set():
            path.stop()


# --- baselines ---------------------------------------------------------------------------------


def joint_train(model: nn.Module, train_a: Split, train_b: Split, epochs: int, seed: int = 0, lr: float = 1e-3,
                batch: int = 128, stop: threading.Event | None = None,
                progress: Callable[[int, int, float], None] | None = None) -> tuple[torch.Tensor, dict]:
    """Train a fresh copy of the architecture, initialized with `seed` (as models.build does), on A ∪ B with
    the same 10 outputs for both tasks; returns (flat weights, train's summary)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = type(model)()
    info = train(fresh, concat(train_a, train_b), epochs, seed, lr=lr, batch=batch, progress=progress,
                 should_stop=lambda: stop is not None and stop.is_set())
    return flatten(fresh), info


# --- one run -----------------------------------------------------------------------------------


@dataclass
class MergeOutcome:
    w: torch.Tensor  # the run's main result: the walk's end, else the relaxed path's best point, else the line's
    status: str
    rows: list[Row]
    summary: dict
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # the walk's
    relaxed: torch.Tensor | None = None  # (N+1, n)
    baselines: dict[str, torch.Tensor] = field(default_factory=dict)  # "finetune", "joint"


class _Run:
    """The state of a run_merge call, so that an interruption can write what exists."""

    def __init__(self, model: nn.Module, w_a: torch.Tensor, writer: RunWriter | None, stop: threading.Event | None,
                 on_row: OnRow | None):
        self.model, self.w_a, self.writer, self.stop, self.user_on_row = model, w_a, writer, stop, on_row
        self.rows: list[Row] = []
        self.summary: dict = {}
        self.snapshots: list[tuple[int, torch.Tensor]] = []
        self.relaxed: torch.Tensor | None = None
        self.baselines: dict[str, torch.Tensor] = {}
        self.candidates: dict[str, torch.Tensor] = {}  # phase -> its best weights, in order of preference

    def on_row(self, row: Row) -> None:
        self.rows.append(row)
        if self.writer:
            self.writer.add(row)
        if self.user_on_row:
            self.user_on_row(row)

    @property
    def w(self) -> torch.Tensor:
        for key in ("walk", "relax", "line"):
            if key in self.candidates:
                return self.candidates[key]
        return self.w_a

    def save(self, status: str) -> None:
        if not self.writer:
            return
        self.writer.set_snapshots(self.snapshots)
        extra = {**({"relaxed": self.relaxed.float().contiguous()} if self.relaxed is not None else {}),
                 **{k: v.float().contiguous() for k, v in self.baselines.items()}}
        if extra:
            _atomic_write_bytes(self.writer.dir / "paths.safetensors", lambda t: save_file(extra, str(t)))
        self.writer.finish(self.w, self.w_a, status, {**self.summary, "status": status})


def run_merge(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, train_a: Split, train_b: Split,
              test_a: Split, test_b: Split, cfg: MergeConfig, writer: RunWriter | None = None,
              stop: threading.Event | None = None, on_row: OnRow | None = None) -> MergeOutcome:
    """Run the phases in `cfg.phases` in order; rows go to the run folder (column "phase": walk, relax,
    relax-path, line, finetune, joint) and to `on_row`.

    Final scores use all of test_a/test_b; the walk and fine-tuning score `cfg.eval_size` images per task on
    the way. The run folder gets meta.json (kind "merge"), metrics.parquet, the walk's snapshots,
    final.safetensors (w: the walk's end, else the relaxed path's best point, else the line's) and
    paths.safetensors (the relaxed path, the baselines' weights). A stop request ends the run within one
    step (status "stopped"); on an exception what was done is written with status "interrupted".
    """
    cfg.validate()
    n = spec_of(model).n
    if w_a.numel() != n or w_b.numel() != n:
        raise ValueError(f"weights have {w_a.numel()} and {w_b.numel()} entries; the model has {n}")
    if writer:
        writer.update(config=cfg.as_dict())
    run, t0, status = _Run(model, w_a, writer, stop, on_row), time.perf_counter(), "done"
    phases = {"walk": _walk_phase, "relax": _relax_phase, "line": _line_phase, "finetune": _finetune_phase,
              "joint": _joint_phase}
    try:
        for name in cfg.phases:
            phases[name](run, w_b, train_a, train_b, test_a, test_b, cfg)
    except Stopped:
        status = "stopped"
    except BaseException:
        run.summary["seconds"] = time.perf_counter() - t0
        run.save("interrupted")
        raise
    if status == "done" and stop is not None and stop.is_set():
        status = "stopped"
    run.summary["seconds"] = time.perf_counter() - t0
    run.save(status)
    return MergeOutcome(run.w, status, run.rows, {**run.summary, "status": status}, run.snapshots, run.relaxed,
                        run.baselines)


def _final_scores(run: _Run, prefix: str, w: torch.Tensor, test_a: Split, test_b: Split) -> None:
    s = scores_both(run.model, w, test_a, test_b)
    run.summary.update({f"{prefix}_accuracy_a": s["accuracy"], f"{prefix}_accuracy_b": s["accuracy_b"]})


def _walk_phase(run: _Run, w_b, train_a, train_b, test_a, test_b, cfg: MergeConfig) -> None:
    t0 = time.perf_counter()
    path = walk_path(run.model, run.w_a, w_b, train_a, train_b, test_a, cfg)
    b = head(test_b, cfg.eval_size)
    ev_b = TimedEvaluation(b.x, b.y)
    last: Row = {}
    try:
        for last in walk(path, run.model, ev_b, run.stop, run.on_row):
            pass
    finally:
        run.snapshots, run.candidates["walk"] = path.snapshots, path.w
    t_eval = path.evaluation.seconds + ev_b.seconds
    run.summary.update(walk_status=path.status, walk_steps=last.get("step", 0), walk_length=path.length,
                       walk_distance_a=last.get("distance", math.nan),
                       walk_seconds=time.perf_counter() - t0 - t_eval, walk_eval_seconds=t_eval)
    _final_scores(run, "walk", path.w, test_a, test_b)
    _check_stop(run.stop)


def _both_tasks_sampler(train_a: Split, train_b: Split, size: int, seed: int) -> Callable[[], torch.Tensor]:
    a, b = BatchSampler.of(train_a, seed), BatchSampler.of(train_b, seed + 1)
    return lambda: torch.cat([a(size)[0], b(size)[0]])


def _relax_phase(run: _Run, w_b, train_a, train_b, test_a, test_b, cfg: MergeConfig) -> None:
    t0, seed = time.perf_counter(), cfg.path.seed + 10
    x_fixed = _both_tasks_sampler(train_a, train_b, 256, seed + 2)()
    start = straight_line(run.w_a, w_b, cfg.points)
    relaxed, rows = relax(run.model, start, _both_tasks_sampler(train_a, train_b, cfg.relax_batch, seed),
                          cfg.relax_iters, cfg.relax_lr, cfg.path.phi, x_fixed, cfg.relax_eval_every, run.stop,
                          run.on_row)
    run.relaxed = relaxed
    seconds = time.perf_counter() - t0
    run.summary.update(relax_iters=rows[-1]["step"], relax_energy_start=rows[0]["energy_fixed"],
                       relax_energy_end=rows[-1]["energy_fixed"], relax_length_end=rows[-1]["length"],
                       relax_seconds=seconds)
    _check_stop(run.stop)
    points = evaluate_points(run.model, relaxed, test_a, test_b, "relax-path", run.stop, run.on_row)
    _record_best(run, "relax", relaxed, points)


def _line_phase(run: _Run, w_b, train_a, train_b, test_a, test_b, cfg: MergeConfig) -> None:
    line = straight_line(run.w_a, w_b, cfg.points)
    points = evaluate_points(run.model, line, test_a, test_b, "line", run.stop, run.on_row)
    _record_best(run, "line", line, points)
    mid = min(points, key=lambda r: abs(r["t"] - 0.5))
    run.summary.update(line_mid_t=mid["t"], line_mid_accuracy_a=mid["accuracy"], line_mid_accuracy_b=mid["accuracy_b"])


def _record_best(run: _Run, prefix: str, path: torch.Tensor, points: list[Row]) -> None:
    i = best_on_both(points)
    run.candidates[prefix] = path[i]
    run.summary.update({f"{prefix}_best_t": points[i]["t"], f"{prefix}_best_accuracy_a": points[i]["accuracy"],
                        f"{prefix}_best_accuracy_b": points[i]["accuracy_b"]})


def _finetune_phase(run: _Run, w_b, train_a, train_b, test_a, test_b, cfg: MergeConfig) -> None:
    """Adam on CE_B from w_A with nothing frozen; scores on both tasks every eval_every steps (forgetting)."""
    ev_a, ev_b, every = head(test_a, cfg.eval_size), head(test_b, cfg.eval_size), cfg.path.eval_every
    t0, t_eval = time.perf_counter(), 0.0

    def on_step(done: int, w: torch.Tensor) -> None:
        nonlocal t_eval
        _check_stop(run.stop)
        if done % every == 0 or done == cfg.finetune_steps:
            t1 = time.perf_counter()
            run.on_row({"phase": "finetune", "step": done, **scores_both(run.model, w, ev_a, ev_b)})
            t_eval += time.perf_counter() - t1

    run.on_row({"phase": "finetune", "step": 0, **scores_both(run.model, run.w_a, ev_a, ev_b)})
    w, steps = finetune(run.model, run.w_a, torch.zeros_like(run.w_a, dtype=torch.bool), train_b,
                        steps=cfg.finetune_steps, lr=cfg.finetune_lr, batch=cfg.batch, seed=cfg.path.seed,
                        on_step=on_step)
    run.baselines["finetune"] = w
    run.summary.update(finetune_steps=steps, finetune_seconds=time.perf_counter() - t0 - t_eval)
    _final_scores(run, "finetune", w, test_a, test_b)


def _joint_phase(run: _Run, w_b, train_a, train_b, test_a, test_b, cfg: MergeConfig) -> None:
    """Joint training from the seed-0 initialization on A ∪ B; a row of training loss every 100 steps."""
    def progress(step: int, total: int, loss: float) -> None:
        if step % 100 == 0 or step == total:
            run.on_row({"phase": "joint", "step": step, "train_loss": loss})

    w, info = joint_train(run.model, train_a, train_b, cfg.joint_epochs, cfg.joint_seed, cfg.joint_lr, cfg.batch,
                          run.stop, progress)
    _check_stop(run.stop)
    run.baselines["joint"] = w
    s = scores_both(run.model, w, test_a, test_b)
    run.summary.update(joint_epochs=cfg.joint_epochs, joint_steps=info["steps"], joint_seconds=info["seconds"],
                       joint_accuracy_a=s["accuracy"], joint_accuracy_b=s["accuracy_b"])
    run.on_row({"phase": "joint", "step": info["steps"], **s})
