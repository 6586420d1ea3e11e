"""Every method × seed learning one task sequence, each a cell on the sweep's machinery (Ray locally or on a
cluster, resumable), and one results table:

    DIR/sequence.json        what runs: the sequence, scenario, net, budget per task, memory (the folder's record)
    DIR/cells/<method>-s<seed>/   a sequence run (sequence.run_sequence): R, tasks.safetensors, the final net
    DIR/results.csv|.parquet one row per cell: ACC, BWT, FWT, forgetting, CPU seconds and steps, memory, status

Every method gets the same CPU seconds and at most the same steps per task, and the same memory of images per
earlier task (the geodesic keeps them without labels). Rerunning the same command resumes: ended cells are kept;
more methods or seeds grow the table.
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..infra.backend import node
from ..infra.lifecycle import Status, Stop
from .continual import METHODS, LearnConfig
from .grid import CELLS, keep_finished, run_cells, write_table

if TYPE_CHECKING:
    import pandas as pd

SPEC = "sequence.json"
COLUMNS = ["method", "seed", "ACC", "BWT", "FWT", "forgetting", "seconds", "steps", "tasks_learned", "memory",
           "status", "error", "cell", "node", "host", "wall"]


@dataclass(frozen=True)
class SequenceSpec:
    tasks: str = "split-mnist"
    scenario: str = "task"
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0,)
    model: str = "mlp100"  # a zoo net, built fresh from each seed
    arch: str | None = None  # or a user's architecture FILE.py:FACTORY
    data_source: str = "auto"
    task_seed: int = 0
    learn: LearnConfig = field(default_factory=LearnConfig)

    def config(self, method: str, seed: int):
        from .sequence import SequenceConfig

        return SequenceConfig(self.tasks, self.scenario, method, seed, self.task_seed, self.learn)

    def validate(self) -> "SequenceSpec":
        from ..core.path import require

        require([(bool(self.methods) and len(set(self.methods)) == len(self.methods), "name each method once"),
                 (bool(self.seeds) and len(set(self.seeds)) == len(self.seeds), "name each seed once")])
        for m in self.methods:
            for s in self.seeds:
                self.config(m, s).validate()
        if self.arch:  # once, before any cell: a net that cannot take the images fails here, not in every cell
            from ..store import arch

            arch.build(self.arch)  # ArchError is a ValueError
        return self

    def same_run(self, other: "SequenceSpec") -> bool:
        """Everything but the methods and seeds: a folder holds one sequence at one budget."""
        return replace(self, methods=(), seeds=()) == replace(other, methods=(), seeds=())

    def grown(self, other: "SequenceSpec") -> "SequenceSpec":
        add = lambda a, b: a + tuple(x for x in b if x not in a)  # noqa: E731
        return replace(self, methods=add(self.methods, other.methods), seeds=add(self.seeds, other.seeds))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SequenceSpec":
        names = {f.name for f in fields(cls)}
        from ..core.path import PathConfig

        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names and k != "learn"}
        learn = numbers_of(LearnConfig, d.get("learn", {}))
        learn["path"] = PathConfig(**numbers_of(PathConfig, learn.get("path", {})))
        return cls(**kw, learn=LearnConfig(**learn))


def numbers_of(config: type, values: dict) -> dict:
    """A config's fields from JSON, the float fields as floats (runs.plain writes ±∞ as "inf" and "-inf")."""
    floats = {f.name for f in fields(config) if isinstance(f.default, float)}
    return {k: float(v) if k in floats and isinstance(v, str) else v for k, v in values.items()}


def cell_id(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def build_model(spec: SequenceSpec, seed: int):
    import torch

    from ..store import arch, zoo

    if spec.arch:
        torch.manual_seed(seed)
        return arch.build(spec.arch), {"model": spec.arch.split(":")[-1], "arch": spec.arch}
    return zoo.build(spec.model, seed), {"model": spec.model}


def splits(spec: SequenceSpec) -> tuple[dict, dict]:
    from ..store import data
    from ..store.tasks import parse

    names = sorted({t.dataset for t in parse(spec.tasks, spec.task_seed)})
    return ({n: data.load(n, "train", spec.data_source) for n in names},
            {n: data.load(n, "test", spec.data_source) for n in names})


def run_cell(spec: SequenceSpec, method: str, seed: int, root: str, stop: Stop | None = None,
             on_row: Callable[[dict], None] | None = None, run_id: str | None = None, **meta) -> dict:
    """One method and seed into root/<method>-s<seed>/ (or root/<run_id>); its results row, with the run folder as
    "dir" (status "error" with the message when it raised). One torch thread. `stop`, `on_row`: the run loop's
    (the app's live page); `meta`: more meta.json fields (the app's group of runs)."""
    from ..infra import threads
    from ..store.runs import RunWriter, run_meta
    from .sequence import run_sequence

    t0, cid = time.perf_counter(), cell_id(method, seed)
    threads.configure(1)
    base = {"method": method, "seed": seed, "cell": cid, "node": node(), "host": platform.node()}
    writer = RunWriter({"kind": "sequence", "cell": cid, "sequence": spec.as_dict()}, root=root,
                       run_id=cid if run_id is None else run_id)
    try:
        model, start = build_model(spec, seed)
        train, test = splits(spec)
        datasets = ",".join(train)
        writer.update(**run_meta("sequence", start, datasets, next(iter(train.values())).source,
                                 len(next(iter(test.values()))), tasks=spec.tasks, scenario=spec.scenario,
                                 method=method, seed=seed, node=base["node"], **meta))
        out = run_sequence(model, train, test, spec.config(method, seed), writer, stop, on_row)
        s = out.summary
        keep = {k: s.get(k) for k in ("ACC", "BWT", "FWT", "forgetting", "seconds", "steps", "tasks_learned")}
        row = {**base, **keep, "memory": spec.learn.memory, "status": out.status.value, "error": None}
        writer.update(summary={**s, **row})
        return {**row, "wall": time.perf_counter() - t0, "dir": str(writer.dir)}
    except Exception as e:  # noqa: BLE001 — recorded in the row and the folder; the other cells go on
        error = f"{type(e).__name__}: {e}"
        writer.update(status=Status.INTERRUPTED, error=error, trace=traceback.format_exc()[-4000:],
                      summary={**base, "status": Status.ERROR.value, "error": error})
        return {**base, "status": Status.ERROR.value, "error": error, "wall": time.perf_counter() - t0,
                "dir": str(writer.dir)}


def write_results(out: Path, rows: list[dict]) -> "pd.DataFrame":
    """DIR/results.csv and .parquet, one row per cell in COLUMNS order (grid.write_table)."""
    return write_table(out, rows, COLUMNS, ["method", "seed"], ("ACC", "BWT", "FWT", "forgetting", "seconds", "wall"))


def read_spec(path: Path) -> SequenceSpec:
    try:
        return SequenceSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a sequence record ({type(e).__name__}: {str(e)[:200]}); give a new --out, "
                         "or restore that file (nothing was changed)") from None


def prepare(spec: SequenceSpec, out: Path) -> dict[str, dict]:
    """Check the folder, write its record (grown when resuming), clear the cells that did not end; the rows kept.
    ValueError, with nothing changed, when the folder holds another sequence or files that are not one."""
    from ..infra.files import check_writable
    from ..store.runs import write_json

    saved = out / SPEC
    if saved.is_file():
        old = read_spec(saved)
        if not old.same_run(spec):
            raise ValueError(f"{out} holds another sequence run ({saved}: another sequence, scenario, net or budget); "
                             "give a new --out, or the same settings to resume or grow it")
        write_json(saved, old.grown(spec).as_dict())
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} holds files but no sequence run ({SPEC}); give a new or empty folder "
                         "(nothing was changed)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out, "sequence folder")
        write_json(saved, spec.as_dict())
    return keep_finished(out, [cell_id(m, s) for m in spec.methods for s in spec.seeds], "sequence run")


def run_sequences(spec: SequenceSpec, out: str | Path, backend: str = "ray", address: str | None = None,
                  workers: int | None = None, on_cell: Callable[[dict, int, int], None] | None = None,
                  stop: Stop | None = None) -> "pd.DataFrame":
    """Run every cell not yet finished and return the results table (rewritten as each cell ends)."""
    from ..infra.backend import check_backend, open_backend

    spec.validate()
    check_backend(backend, address, workers)
    out = Path(out).resolve()
    todo = [(m, s) for m in spec.methods for s in spec.seeds]
    with open_backend(backend, address, workers) as pool:
        kept = prepare(spec, out)
        pending = [(cell_id(m, s), (spec, m, s, str(out / CELLS))) for m, s in todo if cell_id(m, s) not in kept]
        of = {cell_id(m, s): {"method": m, "seed": s} for m, s in todo}
        failed = lambda cid, e: {**of[cid], "cell": cid, "status": Status.ERROR.value, "error": repr(e)}  # noqa: E731
        return run_cells(pool, run_cell, pending, dict(kept), lambda rows: write_results(out, rows), failed,
                         on_cell, len(todo), stop)
