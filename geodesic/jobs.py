"""Background jobs for the app: a thread-safe registry of engine runs in worker threads (no streamlit here).

Importing this module does not import torch (the app draws its first page while torch loads in the background);
the job bodies import the engine when they are built.

A `Job` holds its rows (one dict per Step), a stop event (checked by the path between steps), a pause gate
(the job's step callback blocks while paused) and, when it writes one, the run folder. `Registry.start`
runs `fn(job)` in a daemon thread; an exception ends the job with status "error" and the traceback kept.

The job bodies below only wire engine calls together (checkpoint → data → path → run folder):
`sparsify_job`, `candidates_job`, `damage_job`, `two_tasks_job`; and the two-weight playground model.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "assets" / "checkpoints"
ACTIVE = ("queued", "running", "paused")


def runs_root() -> Path:
    """Where run folders go: $GEODESIC_RUNS (read at call time) or <repo>/runs."""
    return Path(os.environ.get("GEODESIC_RUNS", REPO / "runs"))


@dataclass
class Job:
    """One background run. `rows` grow while it runs; read them with `frame()` from any thread."""

    id: str
    kind: str
    params: dict
    status: str = "queued"  # queued → running ⇄ paused → done | stopped | error
    rows: list[dict] = field(default_factory=list)
    run_dirs: list[Path] = field(default_factory=list)
    error: str | None = None
    result: Any = None
    info: dict = field(default_factory=dict)  # free-form progress notes (phase, current run, …)
    started: float = field(default_factory=time.time)
    ended: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    _resume: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._resume.set()

    @property
    def run_dir(self) -> Path | None:
        return self.run_dirs[-1] if self.run_dirs else None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def add(self, row: dict) -> None:
        with self._lock:
            self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        with self._lock:
            return pd.DataFrame(list(self.rows))

    def stop(self) -> None:
        """Ask the job to end; the path notices before its next step (a paused job wakes up to stop)."""
        self.stop_event.set()
        self._resume.set()

    def pause(self) -> None:
        with self._lock:
            if self.status == "running":
                self._resume.clear()
                self.status = "paused"

    def resume(self) -> None:
        with self._lock:
            if self.status == "paused":
                self.status = "running"
                self._resume.set()

    def _end(self, status: str) -> None:
        with self._lock:
            self.status, self.ended = status, time.time()

    def gate(self) -> None:
        """Called by the job between steps: blocks while paused, returns at once when stopping."""
        self._resume.wait()


class Registry:
    """Jobs by id, each in its own daemon thread."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self, kind: str, fn: Callable[[Job], Any], params: dict | None = None) -> Job:
        with self._lock:
            job = Job(f"{kind}-{next(self._ids)}", kind, dict(params or {}))
            self._jobs[job.id] = job

        def body() -> None:
            with job._lock:
                if job.status == "queued":
                    job.status = "running"
            try:
                job.result = fn(job)
                job._end("stopped" if job.stop_event.is_set() else "done")
            except BaseException as e:  # noqa: BLE001 — reported on the job, never swallowed silently
                job.error = f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
                job._end("error")

        threading.Thread(target=body, name=f"geodesic-{job.id}", daemon=True).start()
        return job

    def list(self, kind: str | None = None) -> list[Job]:
        """Jobs (of one kind), newest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in reversed(jobs) if kind is None or j.kind == kind]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def stop(self, job_id: str) -> None:
        job = self.get(job_id)
        if job is not None:
            job.stop()

    def latest(self, kind: str) -> Job | None:
        jobs = self.list(kind)
        return jobs[0] if jobs else None


def wait(job: Job, timeout: float = 60.0, poll: float = 0.05) -> Job:
    """Block until the job is no longer active (for tests and scripts)."""
    t0 = time.time()
    while job.active and time.time() - t0 < timeout:
        time.sleep(poll)
    return job


# --- job bodies: engine calls wired together ------------------------------------------------------


def step_row(step, **extra) -> dict:
    """A Step as a flat row (group norms kept as a list) plus extra columns."""
    return {**step.row(), **extra}


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None):
    """(model, card, w0, groups); raises models.CheckpointError with a readable message."""
    from . import models
    from .params import flatten

    model, card = models.load(path, model_name)
    return model, card, flatten(model), models.filter_groups(model)


def load_splits(dataset: str, source: str = "bundled", eval_size: int | None = None):
    from . import data

    train, test = data.load(dataset, "train", source), data.load(dataset, "test", source)
    if eval_size:
        test.x, test.y = test.x[:eval_size], test.y[:eval_size]
    return train, test


def sparsify_job(checkpoint: str, cfg, dataset: str, model_name: str | None = None, source: str = "bundled",
                 eval_size: int = 500, root: Path | None = None, meta: dict | None = None) -> Callable[[Job], Any]:
    """A job body: one `run_sparsify` with a run folder; rows stream into the job, pause/stop honoured."""
    from .experiments import run_sparsify
    from .path import Evaluation
    from .runs import RunWriter

    def body(job: Job):
        model, card, w0, groups = load_checkpoint(checkpoint, model_name)
        train, test = load_splits(dataset, source, eval_size)
        writer = RunWriter({"kind": "sparsify", "model": card["model"], "checkpoint": str(checkpoint),
                            "dataset": dataset, "data_source": train.source, "eval_images": len(test),
                            "source": "app", **(meta or {})}, root=root or runs_root())
        job.run_dirs.append(writer.dir)
        job.info.update(groups=[g.name for g in groups], eval_images=len(test), data_source=train.source)

        def on_step(s) -> None:
            job.add(step_row(s, run=writer.id))
            job.gate()

        return run_sparsify(model, w0, groups, cfg, train, Evaluation(test.x, test.y), writer=writer,
                            stop=job.stop_event, on_step=on_step).summary()

    return body


def candidates_job(checkpoint: str, base, count: int, dataset: str, model_name: str | None = None,
                   source: str = "bundled", eval_size: int = 500, root: Path | None = None) -> Callable[[Job], Any]:
    """A job body: `count` candidate paths (experiments.candidate_configs) one after another, each a run folder."""
    from .experiments import candidate_configs

    group = f"cand-{time.strftime('%H%M%S')}-{os.getpid() % 1000}"

    def body(job: Job):
        job.info["group"] = group
        summaries = []
        for i, cfg in enumerate(candidate_configs(base, count)):
            if job.stop_event.is_set():
                break
            job.info["current"] = f"{i + 1}/{count} ({cfg.strategy}, seed {cfg.path.seed})"
            meta = {"candidate": i, "group": group, "strategy": cfg.strategy}
            summaries.append(sparsify_job(checkpoint, cfg, dataset, model_name, source, eval_size, root, meta)(job))
        return summaries

    return body


def damage_job(checkpoint: str, dataset: str, kind: str, level: float, seed: int, steps: int, beta: float,
               eps: float, probe: int, lr: float | None = None, eval_every: int = 5, source: str = "bundled",
               eval_size: int = 500, phi: str = "sqrt_probs", batch: int = 128,
               methods: tuple[str, ...] = ("geodesic", "sgd"), root: Path | None = None) -> Callable[[Job], Any]:
    """A job body: damage the net, then race the recovery `methods` (recovery.run_recover: geodesic restore with
    the damaged coordinates frozen, SGD/Adam holding the same coordinates) at the same time, one worker thread
    each, for the same number of steps; every method writes its own run folder. `lr`: SGD/Adam learning rate
    (None: the method's default)."""
    from . import damage as dmg
    from .params import spec_of
    from .path import Evaluation, PathConfig
    from .recovery import RecoveryConfig, run_recover
    from .runs import RunWriter

    def body(job: Job):
        model, card, w0, groups = load_checkpoint(checkpoint)
        train, test = load_splits(dataset, source, eval_size)
        ev = Evaluation(test.x, test.y)
        w_d, mask = dmg.damage(w0, spec_of(model), groups, kind, level, seed)
        frozen = mask if kind in ("zero", "ablate") else None  # noise touches whole layers: nothing to freeze
        _, acc0 = ev.scores(model, w0)
        _, acc_d = ev.scores(model, w_d)
        job.info.update(acc_before=acc0, acc_damaged=acc_d, damaged=int(mask.sum()), n=w0.numel(),
                        eval_images=len(test), frozen=int(frozen.sum()) if frozen is not None else 0)
        errors: list[BaseException] = []

        def race(method: str) -> None:
            cfg = RecoveryConfig(method=method, steps=steps, eval_every=eval_every, seed=seed, batch=batch,
                                 lr=None if method == "geodesic" else lr,
                                 path=PathConfig(phi=phi, beta=beta, eps=eps, probe=probe, solver="gram"))
            writer = RunWriter({"kind": "recover", "model": card["model"], "checkpoint": str(checkpoint),
                                "dataset": dataset, "data_source": train.source, "source": "app",
                                "damage": {"kind": kind, "level": level, "seed": seed}}, root=root or runs_root())
            job.run_dirs.append(writer.dir)

            def on_row(row: dict) -> None:
                job.add({**row, "run": writer.id})
                job.gate()

            try:  # a model of its own: functional_call and the metric's hooks swap state on the module
                run_recover(copy.deepcopy(model), w0, w_d, frozen, cfg, train, ev, groups, writer, job.stop_event,
                            on_row)
            except BaseException as e:  # re-raised in the job's thread below
                errors.append(e)
                job.stop_event.set()

        threads = [threading.Thread(target=race, args=(m,), name=f"{job.id}-{m}", daemon=True) for m in methods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return {"acc_before": acc0, "acc_damaged": acc_d}

    return body


def two_tasks_job(checkpoint: str, task_a: str, task_b: str, steps: int, beta: float, eps: float, probe: int,
                  seed: int, pull: float = 0.5, phases: tuple[str, ...] = ("walk",), checkpoint_b: str | None = None,
                  eval_every: int = 5, source: str = "bundled", eval_size: int = 500, phi: str = "sqrt_probs",
                  batch: int = 256, root: Path | None = None) -> Callable[[Job], Any]:
    """A job body: `merge.run_merge` from a task-A net. The walk learns task B (v = −∇CE_B, plus a pull of
    strength ρ toward A's function) while the metric's probe batch comes from task A, with ε decaying (cosine)
    to 0.002; "line" (weight averaging with the task-B net) and "finetune" (Adam on B, `steps` steps) are the
    baselines. Rows carry accuracy on both tasks; the run folder is the merge format."""
    from .merge import MergeConfig, run_merge
    from .path import PathConfig
    from .runs import RunWriter

    def body(job: Job):
        model, card, w_a, _ = load_checkpoint(checkpoint)
        if any(p in phases for p in ("line", "relax")) or checkpoint_b is not None:
            if checkpoint_b is None:
                raise ValueError("the straight line and the relaxed path need the task-B net: give checkpoint_b")
            _, card_b, w_b, _ = load_checkpoint(checkpoint_b)
            if card_b["model"] != card["model"]:
                raise ValueError(f"the task-B net is a {card_b['model']}, not a {card['model']}")
        else:
            w_b = w_a  # no phase uses it
        train_a, test_a = load_splits(task_a, source, eval_size)
        train_b, test_b = load_splits(task_b, source, eval_size)
        path = PathConfig(phi=phi, beta=beta, eps=eps, eps_final=min(0.002, eps), probe=probe, seed=seed,
                          max_steps=steps, eval_every=eval_every)
        cfg = MergeConfig(phases=tuple(phases), pull=pull, learn_batch=batch, eval_size=eval_size, finetune_steps=steps,
                          path=path)
        writer = RunWriter({"kind": "merge", "model": card["model"], "checkpoint": str(checkpoint),
                            "checkpoint_b": str(checkpoint_b), "dataset": task_a, "task_b": task_b,
                            "data_source": train_a.source, "eval_images": len(test_a), "source": "app"},
                           root=root or runs_root())
        job.run_dirs.append(writer.dir)
        job.info.update(eval_images=len(test_a))

        def on_row(row: dict) -> None:
            job.add(row)
            job.info["phase"] = row.get("phase")
            job.gate()

        out = run_merge(model, w_a, w_b, train_a, train_b, test_a, test_b, cfg, writer, job.stop_event, on_row)
        return out.summary

    return body


# --- the two-weight playground --------------------------------------------------------------------


def two_weight_net(w1: float = 1.0, w2: float = 1.0):
    """f(x, w) = tanh(w1·x + w2·x²) as an nn.Module on inputs (x, x²): two weights, one output; the sparse
    axis is w2 = 0 (f = tanh(w1·x)). A Linear layer, so the engine's fast Jacobian applies."""
    import torch
    from torch import nn

    class TwoWeightNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1, bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[w1, w2]]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(x))

    return TwoWeightNet()


def playground_points(count: int = 8):
    """Fixed inputs (count, 2) = (x, x²) for x evenly spaced in [−1.5, 1.5]."""
    import torch

    x = torch.linspace(-1.5, 1.5, count)
    return torch.stack([x, x**2], 1)


def playground(w_start: tuple[float, float], beta: float, eps: float, max_steps: int = 200, grid: int = 41,
               span: float = 2.5, ellipse_grid: int = 7, points: int = 8) -> dict[str, pd.DataFrame]:
    """Everything the Playground draws, from engine calls on TwoWeightNet with φ = identity:

    contours: D(w, w_start) on a grid (metric.functional_distance); ellipses: the metric G = JᵀJ at grid
    points (metric.jacobian_fast) as its eigen-axes; path: geodesic.path.Path with the sparsify field
    toward w2 = 0, the tangent θ of each step (tangent.solve_exact inside the path).
    """
    import torch

    from .metric import functional_distance, jacobian_fast
    from .objectives import sparsify
    from .path import Evaluation, Path as GPath, PathConfig

    model, X = two_weight_net(*w_start), playground_points(points)
    w0 = torch.tensor(w_start, dtype=torch.float32)
    axis = torch.linspace(-span, span, grid)
    rows = [{"w1": float(a), "w2": float(b), "distance": functional_distance(model, torch.stack([a, b]), w0, X, "logits")}
            for b in axis for a in axis]
    ell = []
    for a in torch.linspace(-span, span, ellipse_grid)[1:-1]:
        for b in torch.linspace(-span, span, ellipse_grid)[1:-1]:
            J = jacobian_fast(model, torch.stack([a, b]), X, "logits").double()
            lam, U = torch.linalg.eigh(J.T @ J)
            ell.append({"w1": float(a), "w2": float(b), "lam1": float(lam[0]), "lam2": float(lam[1]),
                        "u1x": float(U[0, 0]), "u1y": float(U[1, 0]), "u2x": float(U[0, 1]), "u2y": float(U[1, 1])})
    cfg = PathConfig(phi="logits", beta=beta, eps=eps, probe=points, max_steps=max_steps, eval_every=max_steps,
                     snapshot_every=1, solver="explicit")
    target = torch.tensor([False, True])
    path = GPath(model, w0, sparsify(target), cfg, lambda size: (X, torch.zeros(len(X), dtype=torch.long)),
                 Evaluation(X, torch.zeros(len(X), dtype=torch.long), distance_batch=points), [], target=target)
    steps = [{"step": s.step, "phase": s.phase, "length": s.length, "distance": s.distance, "mu": s.mu}
             for s in path]
    snaps = {st: w for st, w in path.snapshots}
    trace = pd.DataFrame(steps).drop_duplicates("step", keep="last")
    trace["w1"] = [float(snaps[s][0]) for s in trace["step"]]
    trace["w2"] = [float(snaps[s][1]) for s in trace["step"]]
    return {"contours": pd.DataFrame(rows), "ellipses": pd.DataFrame(ell), "path": trace.reset_index(drop=True),
            "status": pd.DataFrame([{"status": path.status, "steps": int(trace["step"].max())}])}


def warm_metric() -> None:
    """One tiny metric (K, Jθ, Jᵀu) so that a run's first step does not pay torch's one-time set-up
    (forward-mode AD loads and scripts its decompositions on first use: ~2 s on this CPU)."""
    import torch

    from .metric import Metric

    model = two_weight_net()
    m = Metric(model, torch.zeros(2), playground_points(4), "logits")
    m.gram()
    m.vjp(m.jvp(torch.ones(2)))


def default_threads() -> int:
    """Torch threads for app jobs: $GEODESIC_THREADS or 1 (the server and the browser need the rest)."""
    return int(os.environ.get("GEODESIC_THREADS", "1"))


__all__ = ["Job", "Registry", "wait", "runs_root", "sparsify_job", "candidates_job", "damage_job", "two_tasks_job",
           "playground", "two_weight_net"]
