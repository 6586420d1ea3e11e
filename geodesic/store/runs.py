"""Run folders, the unit of persistence shared by the CLI, the app and the benchmarks.

    runs/<id>/meta.json                 what was run: model, data, config, status, summary, writer's pid (strict JSON)
    runs/<id>/metrics.parquet           one row per recorded step, flushed as each row comes
    runs/<id>/snapshots/<step>.safetensors  the weight vector "w" at that step, written as it is taken
    runs/<id>/state.safetensors         flat vectors the engine needs: "w_start", and "w" once the run ends
    runs/<id>/final.safetensors + .json the final net as the model's plain state dict (BatchNorm buffers
                                        included) with a card: `checkpoints.load` or `model.load_state_dict(load_file(…))`

Every file is written to a temporary name and renamed, so a reader never sees half a file; a killed run keeps
every row, snapshot and the start. Folders of older versions (final.safetensors holding flat "w"/"w_start",
one snapshots.safetensors, free-text statuses, Infinity in meta.json) are read as they are.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..infra.files import check_writable, follow_umask
from ..infra.lifecycle import Status

if TYPE_CHECKING:  # torch and pandas load on first use: the app draws its first page before either
    import pandas as pd
    import torch

    from .inputs import Checkpoint

SNAPSHOTS = "snapshots"
STEPLESS = ("damage",)  # kinds whose rows are not steps (damage: one row per net, level and seed)
STATE = "state.safetensors"
FINAL = "final.safetensors"


REPO = Path(__file__).resolve().parents[2]


def default_root() -> Path:
    """`$GEODESIC_RUNS`, read at each call, or `<repo>/runs`."""
    return Path(os.environ.get("GEODESIC_RUNS", REPO / "runs"))


def gallery_root() -> Path:
    """Shipped example runs (made by tools/make_gallery.py), read-only."""
    return REPO / "assets" / "gallery"


def _atomic_write_bytes(path: Path, write) -> None:
    """`write(tmp)` to a temporary name beside `path`, given the umask's mode, then renamed to `path`."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def plain(obj):
    """`obj` as strict JSON values: NaN → null, ±∞ → "inf"/"-inf", tuples → lists, paths and enums → text."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf") if math.isinf(obj) else obj
    if isinstance(obj, Status):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "numel", lambda: 0)() == 1:  # a one-element tensor
        return plain(obj.item())
    return str(obj)


def write_json(path: Path, obj) -> None:
    text = json.dumps(plain(obj), indent=2, allow_nan=False) + "\n"
    _atomic_write_bytes(path, lambda t: t.write_text(text))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a .safetensors file atomically (bool masks as uint8, floats as float32)."""
    import torch
    from safetensors.torch import save_file

    out = {k: (v.to(torch.uint8) if v.dtype == torch.bool else v.float() if v.is_floating_point() else v)
           .detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write_bytes(path, lambda t: save_file(out, str(t)))


def new_run_id(kind: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"


def fresh_folder(out: str | os.PathLike) -> Path:
    """Check that `out` can become a new run folder (nothing is overwritten): it must not exist, or be an empty
    folder (removed here so the writer makes it), and its parent must be creatable and writable."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "is not empty"
        raise ValueError(f"{out} {what}; choose a new folder (nothing was overwritten)")
    check_writable(out.parent, f"a run folder at {out}", keep=True)
    if out.is_dir():
        out.rmdir()
    return out


def run_meta(kind: str, ckpt: Checkpoint | dict, dataset: str, data_source: str, eval_images: int | None = None,
             **fields) -> dict:
    """The meta.json fields of a run of `kind` from checkpoint `ckpt` on `dataset`, the one way the CLI, the app
    and the experiments open a run (RunWriter adds id, created, status, pid, host, versions):

        {"kind", "model", "checkpoint", ["arch",] "dataset", "data_source", ["eval_images",] **fields}

    A run that starts from a fresh net (a task sequence) gives {"model": name[, "arch": spec]} for `ckpt`.

    `data_source`: the split's source ("full" or "bundled"); `eval_images`: test images behind the run's accuracy,
    left out when None (damage and recover runs record it elsewhere); `fields`: the kind's own ("method" and
    "damage" of a recover run, "checkpoint_b" and "task_b" of a merge, "preset", "group", "source": "app", ...)."""
    start = ckpt if isinstance(ckpt, dict) else ckpt.meta()
    return {"kind": kind, **start, "dataset": dataset, "data_source": data_source,
            **({} if eval_images is None else {"eval_images": eval_images}), **fields}


FLUSH_SECONDS = 1.0  # the longest a recorded row waits before metrics.parquet holds it


class RunWriter:
    """Creates a run folder and keeps it up to date while a run goes (a `lifecycle.Sink`)."""

    def __init__(self, meta: dict, root: str | os.PathLike | None = None, run_id: str | None = None):
        import torch

        self.root = Path(root or default_root())
        self.id = run_id or new_run_id(meta.get("kind", "run"))
        self.dir = self.root / self.id
        try:
            self.dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ValueError(f"{self.dir} exists; choose a new run folder (nothing was overwritten)") from None
        self.meta = {"id": self.id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": Status.RUNNING,
                     "pid": os.getpid(), "host": platform.node(),
                     "versions": {"geodesic": __version__, "torch": torch.__version__,
                                  "python": platform.python_version()}, **meta}
        self.rows: list[dict] = []
        self._flushed = (-math.inf, 0)  # when metrics.parquet was last written (perf_counter), with how many rows
        self.model: torch.nn.Module | None = None
        self.w_start: torch.Tensor | None = None
        write_json(self.dir / "meta.json", self.meta)

    def begin(self, model: torch.nn.Module | None, w_start: torch.Tensor, **meta) -> None:
        """Record the model (for the final state dict), the start (written now) and more meta fields."""
        self.model, self.w_start = model, w_start.detach().clone()
        save_tensors(self.dir / STATE, {"w_start": self.w_start})
        self.update(**meta)

    def add(self, row: dict) -> None:
        """Append one row; metrics.parquet is rewritten at most every FLUSH_SECONDS (a rewrite costs the whole
        table, which a run of many cheap steps would pay per step), and always with a snapshot and at the end."""
        self.rows.append(row)
        if time.perf_counter() - self._flushed[0] >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write metrics.parquet with every row so far (nothing to do when it holds them already)."""
        if len(self.rows) == self._flushed[1]:
            return
        import pandas as pd

        df = pd.DataFrame(self.rows)
        _atomic_write_bytes(self.dir / "metrics.parquet", lambda t: df.to_parquet(t, index=False))
        self._flushed = (time.perf_counter(), len(self.rows))

    def add_snapshot(self, step: int, w: torch.Tensor) -> None:
        """Save the weights at `step`, and every row so far with them (a killed run keeps both up to here)."""
        import torch

        self.flush()
        folder = self.dir / SNAPSHOTS
        folder.mkdir(exist_ok=True)
        save_tensors(folder / f"{step:07d}.safetensors", {"w": w, "step": torch.tensor(step)})

    def save_extra(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """A run's own tensors beside the standard files (damage masks, a relaxed path)."""
        save_tensors(self.dir / name, tensors)

    def finish(self, status: Status, w: torch.Tensor | None, summary: dict) -> None:
        """The final weights (flat in state.safetensors; as a state dict + card when the model is known), then
        status and summary in meta.json."""
        self.flush()
        if w is not None:
            start = self.w_start if self.w_start is not None else w
            save_tensors(self.dir / STATE, {"w_start": start, "w": w})
            if self.model is not None:
                self._write_final_net(w, status, summary)
        self.update(status=status, summary=summary, ended=time.strftime("%Y-%m-%dT%H:%M:%S"))

    def _write_final_net(self, w: torch.Tensor, status: Status, summary: dict) -> None:
        from ..core.params import state_dict_at
        from ..infra.files import sha256_file

        final = self.dir / FINAL
        save_tensors(final, state_dict_at(self.model, w))
        card = {"model": self.meta.get("model"), "dataset": self.meta.get("dataset"), "run": self.id,
                "kind": self.meta.get("kind"), "status": status, "sha256": sha256_file(final),
                "eval_accuracy": summary.get("accuracy"), "eval_images": self.meta.get("eval_images")}
        write_json(final.with_suffix(".json"), card)

    def update(self, **fields) -> None:
        self.meta.update(fields)
        write_json(self.dir / "meta.json", self.meta)


def process_start(pid: int) -> float | None:
    """When process `pid` of this host started, in seconds since the epoch (Linux /proc); None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rfind(")") + 2:].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _epoch(stamp: object) -> float | None:
    """A meta.json time ("2026-12-04T07:00:00", local time) in seconds since the epoch; None when unreadable."""
    try:
        return time.mktime(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def _pid_alive(pid: object, since: float | None = None) -> bool | None:
    """Whether process `pid` of this host is alive and is the one that was running at `since` (a process that
    started after it only reuses the number); None when that cannot be told (no pid recorded)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    except OSError:
        return None
    started = process_start(pid)
    if since is not None and started is not None and started > since + 2:  # meta.json times are to the second
        return False
    return True


@dataclass
class Run:
    dir: Path
    meta: dict
    metrics: pd.DataFrame
    readonly: bool = False  # a shipped example (the gallery): shown, never changed or deleted

    @property
    def id(self) -> str:
        return str(self.meta.get("id", self.dir.name))

    @property
    def status(self) -> Status:
        """The run's status; "running" whose writing process is gone (on this host) reads as STALE. With no pid
        recorded, or a pid of another host, that cannot be told: it stays RUNNING. A pid now held by a process
        that started after the run was created is not its writer: STALE too."""
        s = Status.parse(self.meta.get("status"))
        if s is Status.RUNNING and self.meta.get("host") == platform.node() and \
                _pid_alive(self.meta.get("pid"), _epoch(self.meta.get("created"))) is False:
            return Status.STALE
        return s

    @property
    def live(self) -> bool:
        """A process is still writing this run."""
        return self.status is Status.RUNNING

    def snapshots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps (S,), weights (S, n)); empty when the run kept none. ValueError for unreadable files."""
        import torch

        pairs = []
        for p in sorted((self.dir / SNAPSHOTS).glob("*.safetensors")):
            t = _read(p)
            pairs.append((int(t["step"]), t["w"].float()))
        legacy = self.dir / "snapshots.safetensors"
        if not pairs and legacy.is_file():
            t = _read(legacy)
            pairs = list(zip(t["step"].tolist(), t["w"].float()))
        if not pairs:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0)
        sizes = {w.numel() for _, w in pairs}
        if len(sizes) > 1:
            raise ValueError(f"{self.dir}: snapshots of different sizes {sorted(sizes)}")
        return torch.tensor([s for s, _ in pairs]), torch.stack([w for _, w in pairs])

    def final(self) -> dict[str, torch.Tensor]:
        """{"w": final flat weights, "w_start": the start} (older folders: from final.safetensors)."""
        for name in (STATE, FINAL):
            p = self.dir / name
            if p.is_file():
                t = _read(p)
                if "w" in t and "w_start" in t:
                    return {k: v.float() for k, v in t.items()}
        raise FileNotFoundError(f"run {self.id} has no final weights (status: {self.status.value})")

    def extra(self, name: str) -> dict[str, torch.Tensor]:
        """A run's own tensors (masks back as bool)."""
        import torch

        p = self.dir / name
        if not p.is_file():
            raise FileNotFoundError(f"{self.dir} has no {name}")
        return {k: (v.to(torch.bool) if v.dtype == torch.uint8 else v) for k, v in _read(p).items()}


def _read(path: Path) -> dict[str, "torch.Tensor"]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable .safetensors file ({e})") from None


def read_meta(path: str | os.PathLike) -> dict:
    """A run folder's meta.json, checked as load_run checks it (torch- and pandas-free): a JSON object whose
    summary and config are objects or absent. FileNotFoundError when there is no meta.json; ValueError when it
    does not read as that; OSError as reading the file raises it."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{meta_path}: nested too deeply to read") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: holds a {type(meta).__name__}, not a JSON object")
    for name in ("summary", "config"):
        if meta.get(name) is not None and not isinstance(meta[name], dict):
            raise ValueError(f"{meta_path}: {name} is a {type(meta[name]).__name__}, not a JSON object")
    return meta


def load_run(path: str | os.PathLike, readonly: bool = False) -> Run:
    """Open a run folder; a missing metrics file gives an empty table (the run died before its first step).
    FileNotFoundError when it is not a run folder; ValueError when its files are unreadable or do not hold what a
    run folder holds (summary or config not an object, metrics without step numbers)."""
    path = Path(path)
    meta = read_meta(path)
    import pandas as pd

    mp = path / "metrics.parquet"
    try:
        metrics = pd.read_parquet(mp) if mp.is_file() else pd.DataFrame()
    except Exception as e:  # noqa: BLE001 — pyarrow raises many types for a damaged file
        raise ValueError(f"{mp}: not a readable parquet file ({e})") from None
    if len(metrics) and meta.get("kind") not in STEPLESS:
        if "step" not in metrics.columns:
            raise ValueError(f"{mp}: has no step column")
        if not pd.api.types.is_numeric_dtype(metrics["step"]) or metrics["step"].isna().all():
            raise ValueError(f"{mp}: its step column holds no step numbers")
    return Run(path, meta, metrics, readonly)


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a .safetensors header, checked against the file's size (no tensor is read; torch-free).

    The file: n (8 bytes, little-endian), a JSON header of n bytes {name: {"dtype", "shape", "data_offsets":
    [begin, end]}} (and "__metadata__"), then the data; each tensor's offsets lie inside the data and span
    prod(shape) · width(dtype) bytes. ValueError when they do not (a truncated or damaged file)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(size - 8, 100_000_000):
            raise ValueError("not a .safetensors file")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("not a .safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise ValueError("not a .safetensors file (bad header)")
    shapes = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (begin, end), width = tuple(int(s) for s in t["shape"]), t["data_offsets"], _DTYPE_BYTES[t["dtype"]]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"tensor {name!r}: bad header entry") from None
        if not 0 <= begin <= end <= size - 8 - n or end - begin != math.prod(shape) * width:
            raise ValueError(f"tensor {name!r}: its data does not fit the file (truncated or damaged)")
        shapes[name] = shape
    return shapes


def snapshot_problem(run: Run) -> str | None:
    """Why `run`'s snapshots cannot be read as Run.snapshots reads them (a damaged file, sizes that differ from
    each other or from the zoo net the run names), or None; from the files' headers alone (torch-free).

    snapshots/<step>.safetensors hold w (n,) and step () or (1,); an older snapshots.safetensors holds
    w (S, n) and step (S,)."""
    from .zoo_table import WEIGHT_COUNTS

    n_want = WEIGHT_COUNTS.get(str(run.meta.get("model")))
    files = sorted((run.dir / SNAPSHOTS).glob("*.safetensors"))
    legacy = run.dir / "snapshots.safetensors"
    try:
        sizes = set()
        if files:
            for p in files:
                s = safetensors_shapes(p)
                if len(s.get("w", ())) != 1 or s.get("step") not in ((), (1,)):
                    raise ValueError(f"{p.name}: expected w (n,) and one step, found {s}")
                sizes.add(s["w"][0])
        elif legacy.is_file():
            s = safetensors_shapes(legacy)
            if len(s.get("w", ())) != 2 or s.get("step") != s["w"][:1]:
                raise ValueError(f"expected w (snapshots, weights) and step (snapshots,), found {s}")
            sizes.add(s["w"][1])
        if len(sizes) > 1:
            raise ValueError(f"snapshots of different sizes {sorted(sizes)}")
        if n_want is not None and sizes and sizes != {n_want}:
            raise ValueError(f"snapshots hold {sizes.pop():,} weights, a {run.meta.get('model')} has {n_want:,}")
    except (OSError, ValueError) as e:
        return f"snapshots unusable: {e}"
    return None


def scan(root: str | os.PathLike | None = None, readonly: bool = False) -> tuple[list[Run], list[str]]:
    """Every readable run under root, newest first, and one message per folder that could not be read."""
    root = Path(root or default_root())
    runs, problems = [], []
    for d in sorted(root.glob("*/meta.json"), reverse=True):
        try:
            runs.append(load_run(d.parent, readonly))
        except (ValueError, OSError) as e:
            problems.append(f"{d.parent.name}: {e}")
    return runs, problems


def scan_with_gallery(root: str | os.PathLike | None = None) -> tuple[list[Run], list[str]]:
    """The user's runs, then the shipped examples (readonly), and the messages of unreadable folders."""
    mine, problems = scan(root)
    examples, bad = scan(gallery_root(), readonly=True)
    return mine + examples, problems + bad


def list_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Every readable run under root, newest first (unreadable folders are skipped)."""
    return scan(root)[0]


def delete_refusal(run: Run) -> str | None:
    """Why `run` must not be deleted: a shipped example, a run a process is still writing, a symlink; or None."""
    if run.readonly:
        return f"{run.id} is a shipped example and cannot be deleted"
    if run.live:
        return f"{run.id} is still being written by process {run.meta.get('pid')}; stop it first"
    if run.dir.is_symlink():
        return f"{run.dir} is a symbolic link; remove the link itself, the run it points to is kept"
    return None


def delete_run(run: Run) -> None:
    """Delete a run folder, or ValueError with the reason it is refused (`delete_refusal`)."""
    why = delete_refusal(run)
    if why:
        raise ValueError(why)
    shutil.rmtree(run.dir)
