"""Saved run folders as the pages show them: listed, scanned (shared by every session, read again only when a
folder changed), their races and figures, deleted on request.

A page's pickers come from the meta.json files alone (`list_runs`: torch- and pandas-free, the first draw); the
runs' metrics are read with pandas (`scan_runs`, `fresh`) after the controls (app.page.after_paint). Every check of
a folder is geodesic.store.runs' (read_meta, load_run, snapshot_problem, delete_refusal).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import streamlit as st

from app.job_panel import registry
from app.jobs import runs_root
from app.page import md
from geodesic.infra.lifecycle import Status
from geodesic.store import runs  # torch- and pandas-free at import

if TYPE_CHECKING:
    import pandas as pd


def any_runs() -> bool:
    """Whether some folder under the runs root looks like a run (cheap: no file is read)."""
    return any(runs_root().glob("*/meta.json"))


@dataclass
class Folder:
    """A run as the pages show it: a geodesic.store.runs.Run (a shipped example when `readonly`) and notes shown beside
    it. Widgets are keyed by `key` (the folder's path), never by meta["id"]: a copied folder keeps its id."""

    run: runs.Run
    notes: list[str] = field(default_factory=list)  # shown beside the run (a copy of another, …)

    dir = property(lambda self: self.run.dir)
    meta = property(lambda self: self.run.meta)
    metrics = property(lambda self: self.run.metrics)
    readonly = property(lambda self: self.run.readonly)

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def key(self) -> str:
        return str(self.dir)

    @property
    def label(self) -> str:
        """How lists and pickers name it: the folder's name, or "example · <title>" for a shipped example."""
        return f"example · {self.meta.get('title') or self.name}" if self.readonly else self.name

    @property
    def status(self) -> Status:
        return self.run.status

    @property
    def summary(self) -> dict:
        return self.meta.get("summary") or {}

    def has_snapshots(self) -> bool:
        return (self.dir / "snapshots.safetensors").is_file() or any((self.dir / "snapshots").glob("*.safetensors"))

    def reload(self) -> Folder:
        """Read the folder again (a run still being written); ValueError or OSError as geodesic.store.runs.load_run."""
        return Folder(runs.load_run(self.dir, self.readonly), self.notes)


def _file_stamp(p: Path) -> tuple:
    try:
        st_ = p.stat()
        return str(p), st_.st_mtime_ns, st_.st_size
    except OSError:
        return str(p), None, None


def _stamp(root: Path) -> tuple:
    """What the run listing depends on: every run folder's meta.json and metrics.parquet (size, mtime)."""
    metas = [*root.glob("*/meta.json"), *runs.gallery_root().glob("*/meta.json")]
    return tuple(sorted((_file_stamp(p) for m in metas for p in (m, m.parent / "metrics.parquet")), key=lambda t: t[0]))


def folder_stamp(folder: Folder) -> tuple:
    """What a run's table and charts depend on: its meta.json and metrics.parquet (size, mtime)."""
    return _file_stamp(folder.dir / "meta.json"), _file_stamp(folder.dir / "metrics.parquet")


_SCANS: dict[tuple, tuple] = {}  # (root, stamp) → scan_with_gallery's result: the last few, shared by every session
_SCANS_LOCK = threading.Lock()


def _scan(root: str, stamp: tuple, read: bool = True) -> tuple[list, list[str]] | None:
    """geodesic.store.runs.scan_with_gallery, read again only when a run folder changed (a new tab reuses it); with
    read=False, None unless it is held. Held as read (no copy per rerun, where st.cache_data unpickles every
    run's metrics on each call): the pages only read it."""
    with _SCANS_LOCK:
        hit = _SCANS.get((root, stamp))
    if hit is not None or not read:
        return hit
    result = runs.scan_with_gallery(Path(root))
    with _SCANS_LOCK:
        _SCANS[(root, stamp)] = result
        while len(_SCANS) > 8:
            _SCANS.pop(next(iter(_SCANS)))
    return result


def _with_notes(folders: list[Folder]) -> list[Folder]:
    """A folder whose meta.json repeats another's id (a copy) gets a note: the examples, then the oldest folder
    name keep the id, later ones are its copies."""
    first: dict[str, Folder] = {}
    for f in reversed(folders):
        ident = str(f.meta.get("id", f.name))
        if ident in first:
            f.notes.append(f"same id as {first[ident].name} in meta.json (a copy?)")
        else:
            first[ident] = f
    return folders


def scan_runs(root: Path | None = None) -> tuple[list[Folder], list[str]]:
    """The user's runs under root (newest first), then the shipped examples of the gallery (read-only), and one
    line per folder that cannot be shown (geodesic.store.runs.scan_with_gallery, torch-free). A folder whose meta.json
    repeats another's id (a copy) is listed, with a note."""
    root = Path(root or runs_root())
    found, problems = _scan(str(root), _stamp(root))
    return _with_notes([Folder(r) for r in found]), list(problems)


@st.cache_resource(show_spinner=False, max_entries=8)
def _listing(root: str, stamp: tuple) -> list:
    """(folder, meta, readonly) of every run folder whose meta.json reads, in scan_with_gallery's order."""
    out = []
    for where, readonly in ((Path(root), False), (runs.gallery_root(), True)):
        for m in sorted(where.glob("*/meta.json"), reverse=True):
            try:
                out.append((m.parent, runs.read_meta(m.parent), readonly))
            except (OSError, ValueError):  # scan_runs names it
                pass
    return out


def list_runs(root: Path | None = None) -> list[Folder]:
    """The runs as scan_runs lists them, for a page's pickers. Before pandas is imported (the first page of a
    fresh server: importing it takes a second or more) and while no scan is held, from the meta.json files alone:
    a folder's `metrics` is then None, and a folder whose metrics.parquet is unreadable is listed too (scan_runs,
    drawn after the controls, names it)."""
    root = Path(root or runs_root())
    stamp = _stamp(root)
    held = _scan(str(root), stamp, read="pandas" in sys.modules)
    if held is not None:
        return _with_notes([Folder(r) for r in held[0]])
    return _with_notes([Folder(runs.Run(d, meta, None, readonly)) for d, meta, readonly in _listing(str(root), stamp)])


@st.cache_resource(show_spinner=False, max_entries=64)
def _load(folder: str, readonly: bool, stamp: tuple):
    return runs.load_run(Path(folder), readonly)


def fresh(folder: Folder) -> Folder:
    """The folder as it is on disk now (a run still being written), read again only when its meta.json or
    metrics.parquet changed; ValueError or OSError as geodesic.store.runs.load_run."""
    return Folder(_load(str(folder.dir), folder.readonly, folder_stamp(folder)), folder.notes)


@st.cache_resource(show_spinner=False, max_entries=64)
def _figure(key: tuple, _build: Callable[[], object]):
    return _build()


def saved_figure(key: tuple, build: Callable[[], object]):
    """build() once per `key` on this server (a new tab, a rerun reuse it): the figure of saved runs, with their
    folder_stamp in `key` (a run still being written is drawn again when it changes). Shared by every session:
    the pages only read it."""
    return _figure(key, build)


def recover_method(folder: Folder) -> str:
    """The recovery method of a saved recover run (its config's, else its meta's)."""
    return str((folder.meta.get("config") or {}).get("method") or folder.meta.get("method") or "?")


def newest_race(folders: list[Folder]) -> list[Folder]:
    """The newest saved recovery race among `folders` (listed newest first, the examples last, as scan_runs lists
    them): the recover runs that share its meta "group" (else its checkpoint and damage), the newest of each
    method, geodesic first; [] when there is none."""
    races: dict[tuple, dict[str, Folder]] = {}
    for f in folders:
        if f.meta.get("kind") != "recover":
            continue
        group = f.meta.get("group")
        same = ("group", str(group)) if group else ("damage", json.dumps([f.meta.get("checkpoint"), f.meta.get("damage")],
                                                                         sort_keys=True, default=str))
        races.setdefault((f.readonly, *same), {}).setdefault(recover_method(f), f)
    if not races:
        return []
    return sorted(next(iter(races.values())).values(), key=lambda f: recover_method(f) != "geodesic")


def race_frame(race: list[Folder]) -> pd.DataFrame:
    """The rows of a saved race as a live damage job has them: each run's metrics with its "method"."""
    import pandas as pd

    frames = [f.metrics.assign(method=recover_method(f)) for f in race if len(f.metrics)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "step", "accuracy"])


def show_problems(problems: list[str], limit: int = 12) -> None:
    """One warning line per unreadable folder (the rest of the page draws as usual)."""
    for p in problems[:limit]:
        st.warning(md(f"skipped run folder {p}"), icon=":material/folder_off:")
    if len(problems) > limit:
        st.warning(f"… and {len(problems) - limit} more unreadable run folders", icon=":material/folder_off:")




def active_dirs() -> set[str]:
    return {str(Path(d).absolute()) for j in registry().list() if j.active for d in j.run_dirs}


def delete_refusal(folder: Folder) -> str | None:
    """Why this run folder must not be deleted now (geodesic.store.runs.delete_refusal, or a job of this server still
    writes it), or None."""
    why = runs.delete_refusal(folder.run)
    if why is None and str(folder.dir.absolute()) in active_dirs():
        why = f"{folder.name} belongs to a job that is still running here: stop the job first"
    return why


def delete_run(folder: Folder) -> None:
    """Delete a run folder, or ValueError with the reason it is refused (checked again, on the folder as it is
    now, at the moment of deleting)."""
    now = folder.reload()
    why = delete_refusal(now)
    if why:
        raise ValueError(why)
    runs.delete_run(now.run)
