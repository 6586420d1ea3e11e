"""Background jobs for the app: a thread-safe registry of engine runs in worker threads (no streamlit here).

Importing this module imports neither torch nor pandas (the app draws its first page while they load in the
background); a job body imports the engine when it is built.

A `Job` holds its rows (one dict per recorded step), a stop event (the engine's run loop checks `is_set()`
between rows: the same interface as `geodesic.infra.lifecycle.Stop`), a pause gate (its `on_row` callback blocks
while paused) and, when it writes one, the run folder. `Registry.start` runs `fn(job)` in a daemon thread; an
exception ends the job with status ERROR and the traceback kept. A job's status is a
`geodesic.infra.lifecycle.Status`, as a run folder's is.

The job bodies only wire engine calls together, as the CLI does (checkpoint → data → run folder → one run
function): `sparsify_job`, `candidates_job`, `damage_job`, `two_tasks_job`. Each takes a `Source` (what to
start from) and the engine's config object for its run.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from geodesic.infra.lifecycle import Status
from geodesic.store import source

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "assets" / "checkpoints"
ACTIVE = (Status.QUEUED, Status.RUNNING, Status.PAUSED)


def runs_root() -> Path:
    """Where run folders go: `geodesic.store.runs.default_root()` ($GEODESIC_RUNS read at call time, or <repo>/runs)."""
    from geodesic.store.runs import default_root  # torch- and pandas-free at import

    return default_root()


@dataclass
class Job:
    """One background run. `rows` grow while it runs; read them with `frame()` from any thread."""

    id: str
    kind: str
    params: dict
    status: Status = Status.QUEUED  # QUEUED → RUNNING ⇄ PAUSED → DONE | DIVERGED | STOPPED | ERROR
    rows: list[dict] = field(default_factory=list)
    run_dirs: list[Path] = field(default_factory=list)
    error: str | None = None
    result: Any = None
    info: dict = field(default_factory=dict)  # free-form progress notes (phase, current run, …)
    started: float = field(default_factory=time.time)
    ended: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)  # passed to the engine as `stop=`
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
        import pandas as pd

        with self._lock:
            rows = list(self.rows)
        return pd.DataFrame(rows)

    def stop(self) -> None:
        """Ask the job to end; the run notices before its next row (a paused job wakes up to stop)."""
        self.stop_event.set()
        self._resume.set()

    def pause(self) -> None:
        with self._lock:
            if self.status is Status.RUNNING:
                self._resume.clear()
                self.status = Status.PAUSED

    def resume(self) -> None:
        with self._lock:
            if self.status is Status.PAUSED:
                self.status = Status.RUNNING
                self._resume.set()

    def _end(self, status: Status) -> None:
        with self._lock:
            self.status, self.ended = status, time.time()

    def gate(self) -> None:
        """Called by the job between rows: blocks while paused, returns at once when stopping."""
        self._resume.wait()

    def on_row(self, **extra) -> Callable[[dict], None]:
        """A run's `on_row`: keeps each row (plus the `extra` columns), then waits here while paused."""
        def take(row: dict) -> None:
            self.add({**row, **extra})
            self.gate()

        return take


def end_status(job: Job) -> Status:
    """How a job whose body returned ended: STOPPED on a stop request, DIVERGED when the run it returns (a
    summary, its "status" a Status or its text) diverged, else DONE."""
    if job.stop_event.is_set():
        return Status.STOPPED
    run = job.result.get("status") if isinstance(job.result, dict) else None
    return Status.DIVERGED if run == Status.DIVERGED else Status.DONE


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
                if job.status is Status.QUEUED:
                    job.status = Status.RUNNING
            try:
                job.result = fn(job)
                job._end(end_status(job))
            except BaseException as e:  # noqa: BLE001 — reported on the job, never swallowed silently
                job.error = f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}"
                job._end(Status.ERROR)

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


@dataclass(frozen=True)
class Source(source.Source):
    """`geodesic.store.source.Source` with the app's defaults: the bundled subsets, 500 test images."""

    data_source: str = "bundled"
    eval_size: int | None = 500


def sparsify_job(source: Source, cfg, root: Path | None = None, meta: dict | None = None) -> Callable[[Job], Any]:
    """One `experiments.run_sparsify` (cfg: a SparsifyConfig) into a run folder under `root` (None: the
    engine's default); rows stream into the job, pause and stop honoured."""
    from geodesic.core.path import Evaluation
    from geodesic.experiments.sparsify import run_sparsify
    from geodesic.store.runs import RunWriter, run_meta

    def body(job: Job):
        ckpt, dataset, train, test = source.open()
        writer = RunWriter({**run_meta("sparsify", ckpt, dataset, train.source, len(test), source="app"),
                            **(meta or {})}, root=root)
        job.run_dirs.append(writer.dir)
        ev = Evaluation(test.x, test.y)
        job.info.update(groups=[g.name for g in ckpt.groups], eval_images=len(test), data_source=train.source,
                        eval_every=cfg.path.eval_every, distance_batch=ev.distance_batch)
        out = run_sparsify(ckpt.model, ckpt.w, ckpt.groups, cfg, train, ev, writer=writer, stop=job.stop_event,
                           on_row=job.on_row(run=writer.id))
        return out.summary()

    return body


def candidates_job(source: Source, base, count: int, root: Path | None = None, backend: str = "ray",
                   workers: int | None = None) -> Callable[[Job], Any]:
    """`count` candidate paths (`experiments.candidate_configs(base, count)`) in parallel on the engine's backend
    (`experiments.run_candidates`: a local Ray on 127.0.0.1 by default), each a sparsify run folder of one group
    under `root`; the page reads the folders as they are written. Stop cancels the paths still running."""
    from geodesic.experiments.sparsify import candidate_configs, candidate_name, run_candidates
    from geodesic.store.runs import default_root

    group, configs = f"cand-{time.strftime('%H%M%S')}-{os.getpid() % 1000}", candidate_configs(base, count)

    def body(job: Job):
        folder, prefix = Path(root or default_root()), f"{group}-"
        job.info.update(group=group, done=0, total=count, backend=backend)
        job.run_dirs.extend(folder / (prefix + candidate_name(i, cfg)) for i, cfg in enumerate(configs))

        def done(row: dict) -> None:
            job.info["done"] += 1
            job.add({"step": job.info["done"], "run": row["path"], **row})

        return run_candidates(source, configs, folder, {"source": "app", "group": group}, backend, None,
                              workers or min(count, os.cpu_count() or 1), job.stop_event, done, prefix)

    return body


def race(job: Job, runs: dict[str, Callable[[], Any]]) -> None:
    """Run each callable in a worker thread of its own, all at the same time; the first error stops the others
    (through the job's stop event) and is raised here once all have ended."""
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 — re-raised in the job's thread below
            errors.append(e)
            job.stop_event.set()

    threads = [threading.Thread(target=guarded, args=(fn,), name=f"{job.id}-{name}", daemon=True)
               for name, fn in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def damage_job(source: Source, damage, cfg, methods: tuple[str, ...] = ("geodesic", "sgd"),
               root: Path | None = None) -> Callable[[Job], Any]:
    """Damage the net (damage: a DamageConfig, its first level and seed), then race `recovery.run_recover`
    for each of `methods` at the same time, one worker thread and one run folder each. cfg: the RecoveryConfig
    every method shares (`method` set per run; `lr` is the baselines', the geodesic restore has none)."""
    from geodesic.core.path import Evaluation
    from geodesic.experiments.recovery import run_recover
    from geodesic.store.runs import RunWriter, run_meta

    def body(job: Job):
        ckpt, dataset, train, test = source.open()
        ev = Evaluation(test.x, test.y)
        w_d, frozen = damaged(job, ckpt, damage, ev)
        job.info.update(eval_images=len(test), data_source=train.source, eval_every=cfg.eval_every,
                        batch=cfg.batch, momentum=cfg.momentum)

        def recover(method: str) -> None:
            writer = RunWriter(run_meta("recover", ckpt, dataset, train.source, method=method,
                                        damage=damage.as_dict(), source="app"), root=root)
            job.run_dirs.append(writer.dir)
            run = replace(cfg, method=method, lr=None if method == "geodesic" else cfg.lr)
            # a model of its own: functional_call and the metric's hooks swap state on the module
            run_recover(copy.deepcopy(ckpt.model), ckpt.w, w_d, frozen, run, train, ev, ckpt.groups, writer,
                        job.stop_event, job.on_row(run=writer.id))

        race(job, {m: (lambda m=m: recover(m)) for m in methods})
        return {"acc_before": job.info["acc_before"], "acc_damaged": job.info["acc_damaged"]}

    return body


def damaged(job: Job, ckpt, damage, ev) -> tuple:
    """(damaged weights, frozen coordinates) of `experiments.damage.recovery_start`, the CLI's recover's start;
    the accuracies before and after and the counts go to the job's info."""
    from geodesic.experiments.damage import recovery_start

    w_d, mask, frozen = recovery_start(ckpt.model, ckpt.w, ckpt.groups, damage)
    job.info.update(acc_before=ev.scores(ckpt.model, ckpt.w)[1], acc_damaged=ev.scores(ckpt.model, w_d)[1],
                    damaged=int(mask.sum()), frozen=int(frozen.sum()), n=ckpt.w.numel())
    return w_d, frozen


def two_tasks_job(source: Source, task_b: str, cfg, checkpoint_b: str | None = None,
                  root: Path | None = None) -> Callable[[Job], Any]:
    """`merge.run_merge` (cfg: a MergeConfig) from the task-A net of `source` toward learning `task_b`; the
    phases that need the task-B net ("line", "relax") take it from `checkpoint_b`. Rows carry accuracy on
    both tasks; the run folder is the merge format."""
    from geodesic.experiments.merge import run_merge
    from geodesic.store.inputs import splits
    from geodesic.store.runs import RunWriter, run_meta

    def body(job: Job):
        a, task_a, train_a, test_a = source.open()
        w_b = task_b_weights(a, cfg.phases, checkpoint_b, source.arch)
        train_b, test_b = splits(task_b, source.data_source, source.eval_size)
        writer = RunWriter(run_meta("merge", a, task_a, train_a.source, len(test_a), checkpoint_b=str(checkpoint_b),
                                    task_b=task_b, source="app"), root=root)
        job.run_dirs.append(writer.dir)
        job.info.update(eval_images=len(test_a), data_source=train_a.source, eval_every=cfg.path.eval_every,
                        eps_final=cfg.path.eps_final, line_points=cfg.points + 1)
        keep = job.on_row()

        def on_row(row: dict) -> None:
            job.info["phase"] = row.get("phase")
            keep(row)

        return run_merge(a.model, a.w, w_b, train_a, train_b, test_a, test_b, cfg, writer, job.stop_event,
                         on_row).summary

    return body


def task_b_weights(a, phases: tuple[str, ...], checkpoint_b: str | None, arch: str | None = None):
    """The task-B net's flat weights for the phases that use it (a's own weights when none does); `arch`: the
    user's architecture both nets share (None: a zoo model)."""
    from geodesic.store.inputs import open_checkpoint

    if checkpoint_b is None:
        if any(p in phases for p in ("line", "relax")):
            raise ValueError("the straight line and the relaxed path need the task-B net: give checkpoint_b")
        return a.w  # no phase uses it
    b = open_checkpoint(checkpoint_b, arch=arch)
    if arch is None and b.name != a.name:
        raise ValueError(f"the task-B net is a {b.name}, not a {a.name}")
    if b.w.numel() != a.w.numel():  # one architecture (the same factory) gives one weight vector length
        raise ValueError(f"the task-B net has {b.w.numel():,} weights, the task-A net {a.w.numel():,}")
    return b.w


__all__ = ["Job", "Registry", "wait", "runs_root", "Source", "sparsify_job", "candidates_job",
           "damage_job", "two_tasks_job"]


def sequence_job(spec, seed: int = 0, root: Path | None = None) -> Callable[[Job], Any]:
    """Each method of `spec` (a sequence_cells.SequenceSpec) learning its task sequence in turn, one run folder
    each under `root` (None: the engine's default), grouped; rows (one per task learned, with the method) stream
    into the job, and each method's ACC, BWT, FWT and forgetting join job.info["scores"] as it ends."""
    from geodesic.experiments.sequence_cells import run_cell
    from geodesic.store.runs import default_root
    from geodesic.store.tasks import parse

    def body(job: Job):
        group = f"seq-{time.strftime('%H%M%S')}-{os.getpid() % 1000}"
        job.info.update(names=[t.name for t in parse(spec.tasks, spec.task_seed)], scenario=spec.scenario,
                        methods=list(spec.methods), scores=[], group=group)
        folder = Path(root) if root is not None else default_root()
        for method in spec.methods:
            if job.stop_event.is_set():
                break
            job.info["method"] = method
            row = run_cell(spec, method, seed, str(folder), job.stop_event, job.on_row(method=method),
                           run_id=f"{group}-{method}", group=group, source="app")
            job.run_dirs.append(Path(row["dir"]))
            if row.get("status") == Status.ERROR.value:
                raise RuntimeError(f"{method}: {row.get('error')}")
            job.info["scores"].append({k: row.get(k) for k in ("method", "ACC", "BWT", "FWT", "forgetting",
                                                               "seconds", "steps")})
        return {"group": group, "scores": job.info["scores"]}

    return body
