"""One run lifecycle for every experiment: a run is named phases of rows, written to one run folder.

    status = execute(phases, folder, stop, on_row)

A `Phase` is a name, an iterator of rows (one dict per recorded step; `None` for a step it does not record)
and how it ended (`end()`, read once its rows run out). `execute` is the one loop: it writes each row (and
each new snapshot) to the run folder as it comes, calls `on_row`, and between any two rows checks the one
way to stop, a `Stop`; then the run folder gets its final weights and status. An exception (Ctrl-C
included) writes what exists with status INTERRUPTED before it propagates. Sparsify, candidate paths,
damage, recovery and the two-task walk all run through it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional

if TYPE_CHECKING:  # torch-free at import: the app reads statuses before the engine has loaded
    import torch

Row = dict
Snapshot = tuple[int, "torch.Tensor"]


class Status(str, Enum):
    """How a run (or one phase) ended. A `str`, so it is written to meta.json and compared as plain text."""

    RUNNING = "running"
    DONE = "done"  # every phase ran to its end (no target, or a budget that is the point: damage, merge, recovery)
    ARRIVED = "arrived"  # reached its target: the sparse hyperplane, or recovered within tolerance
    MISSED = "missed"  # a budget (steps, distance) ran out before the target was reached
    STOPPED = "stopped"  # a stop request
    DIVERGED = "diverged"  # the weights left the finite range; nothing more can be done from there
    INTERRUPTED = "interrupted"  # an exception or Ctrl-C; what was done is saved
    STALE = "stale"  # read back only: "running" in meta.json, but the process writing it is gone
    ERROR = "error"  # a sweep cell or candidate path that raised; its message is kept beside the status
    QUEUED = "queued"  # a job waiting for its turn (the app runs one engine job at a time)
    PAUSED = "paused"  # a job held between two steps, to be resumed

    @property
    def failed(self) -> bool:
        """A result the user should not take as an answer (the CLI exits non-zero)."""
        return self in (Status.DIVERGED, Status.INTERRUPTED, Status.ERROR)

    @property
    def ended(self) -> bool:
        return self not in (Status.RUNNING, Status.STALE, Status.QUEUED, Status.PAUSED)

    @classmethod
    def parse(cls, text: object) -> "Status":
        """A status from meta.json, including the free-text statuses of older run folders."""
        s = str(text).strip().lower()
        try:
            return cls(s)
        except ValueError:
            pass
        if s.startswith("arrived") or s == "recovered":
            return cls.ARRIVED
        if s in ("max steps", "distance budget"):
            return cls.MISSED
        if s == "budget":
            return cls.DONE
        return cls.INTERRUPTED


# what to try after a path diverged (the CLI prints it, the app shows it). Every step measures itself and shrinks ε
# long before a net's outputs overflow (geodesic.core.trust), so a divergence points at the start point or a fixed ε
DIVERGED_HINT = ("the weights or the net's outputs stopped being finite numbers; check that the checkpoint's own "
                 "outputs are finite, and with a fixed trust region (the literal preset) try a smaller ε")


# which status wins when phases end differently: a later phase never hides an earlier failure
_RANK = {Status.DONE: 0, Status.ARRIVED: 1, Status.MISSED: 2, Status.STOPPED: 3, Status.DIVERGED: 4,
         Status.INTERRUPTED: 5, Status.ERROR: 6}


def combine(a: Status, b: Status) -> Status:
    """The run's status after phases ending in a then b (ARRIVED then DONE stays ARRIVED)."""
    return a if _RANK.get(a, 0) >= _RANK.get(b, 0) else b


class Stop:
    """The one way to stop a run: `set()` from any thread (a button, a signal); the loop ends within one row."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    __bool__ = is_set


@dataclass
class Phase:
    """A named phase: its rows, how it ended, the snapshots it took so far and its current weights."""

    name: str
    rows: Iterable[Optional[Row]]
    end: Callable[[], Status] = lambda: Status.DONE
    snapshots: Callable[[], list[Snapshot]] = list
    weights: Callable[[], Optional["torch.Tensor"]] = lambda: None
    final: bool = False  # runs even after an earlier phase diverged (a method's scoring of its last weights)


class Sink:
    """Where a run's record goes (a `runs.RunWriter`, or nothing)."""

    def add(self, row: Row) -> None: ...

    def add_snapshot(self, step: int, w: torch.Tensor) -> None: ...

    def finish(self, status: Status, w: Optional[torch.Tensor], summary: dict) -> None: ...


@dataclass
class Record:
    """What a run did: every row, its snapshots, its last weights and its status."""

    rows: list[Row] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    w: Optional[torch.Tensor] = None
    status: Status = Status.RUNNING
    phases: dict[str, Status] = field(default_factory=dict)


def execute(phases: Iterable[Phase], sink: Optional[Sink] = None, stop: Optional[Stop] = None,
            on_row: Callable[[Row], None] | None = None,
            summary: Callable[[Record], dict] = lambda r: {}) -> Record:
    """Run the phases in order (a generator of phases may decide the next one from how the last ended).

    A phase that ends STOPPED or INTERRUPTED ends the run; after one that ends DIVERGED only `final` phases run
    (the run stays DIVERGED). The sink gets every row and snapshot as it comes and, at the end,
    `finish(status, last weights, summary(record))`.
    """
    rec = Record(status=Status.DONE)
    diverged = False
    try:
        for phase in phases:
            if diverged and not phase.final:
                continue
            ended = _run_phase(phase, rec, sink, stop, on_row)
            rec.phases[phase.name] = ended
            rec.status = combine(rec.status, ended)
            if ended is Status.STOPPED:
                break
            diverged = diverged or ended is Status.DIVERGED
    except BaseException:
        rec.status = Status.INTERRUPTED
        if sink is not None:
            sink.finish(rec.status, rec.w, _safe_summary(summary, rec))
        raise
    if sink is not None:
        sink.finish(rec.status, rec.w, summary(rec))
    return rec


def _run_phase(phase: Phase, rec: Record, sink: Optional[Sink], stop: Optional[Stop],
               on_row: Callable[[Row], None] | None) -> Status:
    rows: Iterator[Optional[Row]] = iter(phase.rows)
    kept = 0
    try:
        for row in rows:
            if row is not None:
                rec.rows.append(row)
                if sink is not None:
                    sink.add(row)
                if on_row is not None:
                    on_row(row)
            kept = _take_snapshots(phase, rec, sink, kept)
            if stop is not None and stop.is_set():
                return Status.STOPPED
        return phase.end()
    finally:
        _take_snapshots(phase, rec, sink, kept)
        w = phase.weights()
        if w is not None:
            rec.w = w.detach().clone()
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _take_snapshots(phase: Phase, rec: Record, sink: Optional[Sink], kept: int) -> int:
    snaps = phase.snapshots()
    for step, w in snaps[kept:]:
        if rec.snapshots and rec.snapshots[-1][0] == step:  # a phase starts where the last one ended
            rec.snapshots[-1] = (step, w)
        else:
            rec.snapshots.append((step, w))
        if sink is not None:
            sink.add_snapshot(step, w)
    return len(snaps)


def _safe_summary(summary: Callable[[Record], dict], rec: Record) -> dict:
    try:
        return summary(rec)
    except Exception:  # noqa: BLE001 — the run is already failing; keep its rows rather than a second error
        return {"rows": len(rec.rows)}


class Budget:
    """CPU seconds this process may spend from now on."""

    def __init__(self, seconds: float):
        if not seconds > 0:
            raise ValueError(f"the budget must be > 0 seconds, got {seconds}")
        self.seconds, self.start = float(seconds), time.process_time()

    def spent(self) -> float:
        return time.process_time() - self.start

    def left(self) -> float:
        return max(self.seconds - self.spent(), 0.0)

    def exhausted(self) -> bool:
        return self.spent() >= self.seconds


def within(phase: Phase, budget: Budget, cut: Status) -> Phase:
    """`phase` ending when the budget is spent: then its status is `cut` unless it ended by itself first."""
    state = {"cut": False}

    def rows():
        for row in phase.rows:
            yield row
            if budget.exhausted():
                state["cut"] = True
                return

    def end() -> Status:
        ended = phase.end()
        return cut if state["cut"] and ended is Status.RUNNING else ended

    return Phase(phase.name, rows(), end, phase.snapshots, phase.weights)
