"""Shared app state: the job registry (st.cache_resource), checkpoints, run folders, the live job panel.

Torch-free and pandas-free at import, and so is the first draw of a page's controls: they come from JSON cards,
the small tables below and the run folders' meta.json files (`list_runs`), while `warm_engine` imports torch and
the engine in a background thread. What needs the engine (starting a job, validating an upload, an embedding)
calls `await_engine()` first, which shows "Loading the engine…" until it is there. What a page shows of saved
runs (read with pandas, drawn with plotly) comes after its controls, and on the first run of a visit only once
the browser has drawn them (`after_paint`).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import streamlit as st

from app.jobs import ACTIVE, CHECKPOINTS, REPO, runs_root  # noqa: F401 — torch- and pandas-free; pages use them here

if TYPE_CHECKING:
    import pandas as pd

    from app import jobs
    from geodesic.store import runs

ENGINE_LOADED = threading.Event()  # set by warm_engine's thread once torch and the engine are imported
ENGINE_ERROR: list[str] = []  # the traceback, when importing the engine failed
ENGINE_HURRY = threading.Event()  # set by await_engine: a press is waiting, import now
WARM_DELAY_S = 3.0  # the torch import holds the GIL for long stretches: let the first page reach the browser first
POLL_S = 0.25  # the browser asks every 0.25 s; measured ~2-3 refreshes/s on the loaded 2-core machine
# While a job runs, its worker thread and the server's threads share the GIL: a thread that gets it back after a
# torch op waits up to the switch interval (5 ms by default) while a page is being drawn, many times per step.
LIVE_SWITCH_S = 0.001
OUTPUT_MAPS = ("sqrt_probs", "probs", "logits")
DATASETS = ("mnist", "fashion-mnist")

# --- what the first draw needs from the engine, without importing it -------------------------------------
# tests/test_app.py checks each against the engine (zoo.filter_groups, experiments, damage.KINDS).

ZOO_GROUPS = {"mlp": (("fc1", 32),), "lenet60": (("conv1", 20), ("conv2", 40)),  # prunable layer, its units
              "resnet8": (("conv1+layer1.conv2", 16), ("layer1.conv1", 16), ("layer2.conv1", 32),
                          ("layer2.conv2+layer2.shortcut.0", 32), ("layer3.conv1", 64),
                          ("layer3.conv2+layer3.shortcut.0", 64))}  # coupled channel groups (geodesic.core.groups)
ZOO_WEIGHTS = {"mlp": 25_450, "lenet60": 85_670, "resnet8": 77_754}  # length of the flat weight vector
STRATEGIES = ("norm", "importance", "balanced", "random")  # experiments.STRATEGIES
DAMAGE_KINDS = ("zero", "ablate", "noise")  # damage.KINDS
# the Sparsify page's presets (experiments.PRESETS, the first is the engine's default) as its widgets show them
PRESETS = {
    "benchmarked for lenet60": {"engine": "recommended", "strategy": "balanced", "pull": 2.0, "relax_steps": 600,
                                "relax_eps": 0.3, "relax_eps_final": 0.002, "seconds": 900.0, "phi": "sqrt_probs",
                                "beta": 0.001, "eps": 0.1, "probe": 32, "seed": 0},
    "the paper's algorithm (literal)": {"engine": "literal", "strategy": "norm", "pull": 0.0, "relax_steps": 0,
                                        "relax_eps": 0.3, "relax_eps_final": 0.002, "seconds": 900.0,
                                        "phi": "sqrt_probs", "beta": 0.01, "eps": 0.01, "probe": 32, "seed": 0},
}


def preset_config(name: str):
    """The engine's SparsifyConfig behind a preset of the page (imports the engine)."""
    from geodesic.experiments.sparsify import PRESETS as ENGINE_PRESETS

    return ENGINE_PRESETS[PRESETS[name]["engine"]]


def group_names(model_name: str, card: dict | None = None) -> list[str]:
    """Names of a net's prunable groups, as zoo.filter_groups names them ("conv1[0]", …): a zoo model's from
    ZOO_GROUPS, a user's own architecture's (the picker's card has "arch") from its loaded Checkpoint."""
    if card is not None and card.get("arch"):
        return list(card["group_names"])
    return [f"{layer}[{i}]" for layer, n in ZOO_GROUPS[model_name] for i in range(n)]


def count_slider(where, label: str, n: int, value: int, **kwargs) -> int:
    """A slider over 1 … n (a count of a net's prunable groups) starting at `value` (clipped into range); a caption
    instead when n < 2 (a slider needs two values: a user's net may have a single group)."""
    if n < 2:
        where.caption(md(f"{label}: {n} (the net has {n} prunable group{'s' if n != 1 else ''})"))
        return n
    return where.slider(label, 1, n, min(max(int(value), 1), n), **kwargs)


# --- the engine, loaded in the background -----------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def warm_engine() -> threading.Thread:
    """Import torch and the engine once per server, in the background, so pages draw at once. The import starts
    WARM_DELAY_S after the first page's script (its widgets are then sent and drawn), or at once on a press."""
    def body() -> None:
        ENGINE_HURRY.wait(WARM_DELAY_S)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.001))  # the server's threads get the GIL more often meanwhile
        try:
            import pandas  # noqa: F401 — before torch, in one thread (see app/main.py)
            import torch  # noqa: F401 — the engine's largest import, here in the background

            from app import playground
            from geodesic.infra import threads

            threads.configure()  # the engine's policy: $GEODESIC_THREADS, else 1 (and its allocator's)
            import geodesic.experiments.embed  # noqa: F401
            import geodesic.experiments.sparsify  # noqa: F401
            import geodesic.store.inputs  # noqa: F401
        except BaseException:  # noqa: BLE001 — shown by await_engine, never swallowed
            ENGINE_ERROR.append(traceback.format_exc())
            return
        finally:
            sys.setswitchinterval(interval)
        ENGINE_LOADED.set()
        playground.warm_metric()  # first forward-mode call scripts torch's jvp decompositions (~2 s, GIL-heavy)

    t = threading.Thread(target=body, name="geodesic-warm-engine", daemon=True)
    t.start()
    return t


def engine_loaded() -> bool:
    return ENGINE_LOADED.is_set()


def await_engine(label: str = "Loading the engine (torch), once per server…", hurry: bool = True) -> None:
    """Return once torch and the engine are imported; meanwhile show a status line. The wait touches the page
    every 0.25 s, so a widget changed meanwhile reruns the script at once instead of queueing behind it.
    `hurry`: start the import now (a press is waiting); else keep warm_engine's delay, so that the controls
    drawn above reach the browser before the import takes the server's time (a page that merely shows a
    figure)."""
    if ENGINE_LOADED.is_set():
        return
    if hurry:
        ENGINE_HURRY.set()
    thread = warm_engine()
    holder = st.empty()
    with holder.container():
        status = st.status(label, expanded=False)
    t0 = time.monotonic()
    while not ENGINE_LOADED.wait(0.25):
        if ENGINE_ERROR or not thread.is_alive():
            holder.empty()
            raise RuntimeError("the engine failed to load:\n" + (ENGINE_ERROR[0] if ENGINE_ERROR else "?"))
        status.update(label=f"{label} {time.monotonic() - t0:.0f} s")
    holder.empty()


def start_button(label: str, key: str, keep_s: float = 300) -> bool:
    """A primary button whose press survives the engine's loading: pressed before the engine is there, it
    waits under a "Loading the engine…" status (a rerun meanwhile keeps the press, for up to `keep_s`), then
    returns True."""
    pending = f"{key}-pending"
    if st.button(label, type="primary", key=key):
        st.session_state[pending] = time.monotonic()
    pressed = st.session_state.get(pending)
    if pressed is None or time.monotonic() - pressed > keep_s:
        st.session_state.pop(pending, None)
        return False
    await_engine()
    st.session_state.pop(pending, None)
    return True


@st.cache_resource(show_spinner=False)
def registry() -> jobs.Registry:
    """One registry per server process: every session and tab sees the same jobs (torch threads: warm_engine)."""
    from app import jobs

    return jobs.Registry()


# --- a page's first paint ---------------------------------------------------------------------------------

# after the controls of a visit's first run reach the browser, it asks for the rest this much later: a new tab
# takes about a second to draw a page on the loaded 2-core machine, and charts arriving meanwhile (plotly's code is
# loaded and run when the first one is drawn) held back its controls (bench/bench_app.py: 0.3 s was not enough)
PAINT_S = 1.0
VISIT = "page-visit"  # session_state: (the page of the last full run, whether that run was its visit's first)


def begin_page(name: str) -> None:
    """Called by app/main.py on every full run, `name` the page's: marks the first run of a visit to it (a new
    tab, a reload, a page chosen in the sidebar), where `after_paint` leaves the saved runs' charts for later."""
    last = st.session_state.get(VISIT)
    st.session_state[VISIT] = (name, last is None or last[0] != name)


def after_paint(draw: Callable[[], None], note: str) -> None:
    """`draw()` here, except in the first run of a visit to the page (begin_page): there only a caption `note`
    stands in, and the browser asks for a rerun PAINT_S after it has drawn what came before (a fragment's timer,
    which runs once the browser has handled the controls), which draws it. So the controls of a page are drawn
    and usable before reading run folders and building charts takes the server's time, and before drawing those
    charts takes the browser's. Any other run (a widget changed, the rerun) draws in place at once."""
    visit = st.session_state.get(VISIT)
    if visit is None or not visit[1]:
        draw()
        return
    inline = [True]

    @st.fragment(run_every=PAINT_S)
    def rest() -> None:
        if inline[0]:  # the call below, in this run
            inline[0] = False
            st.caption(md(note))
            return
        st.rerun()  # the browser's first request: a full rerun (not the visit's first) draws the rest and ends the timer

    rest()


# --- text ------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=^\"'])")


def md(text: object) -> str:
    """`text` for a markdown context (st.markdown, captions, alerts, toasts, expander labels): every markdown
    character backslash-escaped and newlines flattened, so a run id or a file name shows as the plain text it is
    (a folder named `![x](http://…)` must not make the browser fetch anything)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split("\n")))


# --- checkpoints ------------------------------------------------------------------------------------------


def checkpoints() -> dict[str, Path]:
    """Shipped checkpoints by stem (those with a card, `<stem>.json`, as geodesic.store.cards.card_path)."""
    return {p.stem: p for p in sorted(CHECKPOINTS.glob("*.safetensors")) if p.with_suffix(".json").is_file()}


@st.cache_data(show_spinner=False)
def card(path: str) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


UPLOAD, OWN_ARCH = "upload a .safetensors…", "your own architecture (local files)…"


def checkpoint_picker(key: str, allow_upload: bool = False, only: Callable[[dict], bool] | None = None):
    """Select a shipped checkpoint, a validated upload, or a user's own network (`own_architecture`); returns
    (path, model name, card) or None. For a user's own network the card also holds "arch" (the spec, to pass to
    jobs.Source) and "group_names" (its prunable groups, see `group_names`)."""
    shipped = {k: v for k, v in checkpoints().items() if only is None or only(card(str(v)))}
    options = list(shipped) + ([UPLOAD] if allow_upload else []) + [OWN_ARCH]
    choice = st.selectbox("Checkpoint", options, key=f"{key}-ckpt",
                          help="Trained nets shipped in assets/checkpoints (a JSON card beside each), or a net of "
                               "your own: its weights and the Python code that builds it.")
    if choice in shipped:
        c = card(str(shipped[choice]))
        st.caption(md(f"{c['model']} trained on {c.get('dataset')}: test accuracy {c.get('test_accuracy')} "
                      f"on {c.get('test_set', '?')} (from its card)"))
        return str(shipped[choice]), c["model"], c
    if choice == OWN_ARCH:
        return own_architecture(key)
    return upload(key)


def own_architecture(key: str):
    """A user's own network from two local paths: its checkpoint (a plain state dict in .safetensors) and its
    architecture (FILE.py:FACTORY or package.module:FACTORY, geodesic.store.arch), loaded on a press with
    geodesic.store.inputs.open_checkpoint. Loading runs the architecture's Python code, as the warning says.

    A failed load shows one st.error line and changes nothing: the last good net (if any) stays in use. Returns
    (path, model name, card + "arch", "group_names" and the dataset) or None."""
    st.warning("Loading an architecture **runs its Python code on this machine** (the file is executed, or the "
               "module imported, with this server's permissions), as `python FILE.py` would. Only load files you "
               "trust.", icon=":material/warning:")
    c = st.columns(2)
    path = c[0].text_input("Checkpoint path (.safetensors, a plain state dict)", key=f"{key}-own-path",
                           placeholder="/path/to/net.safetensors",
                           help="safetensors.torch.save_file(model.state_dict(), path); a JSON card beside it "
                                "(same name, .json) is read when present")
    spec = c[1].text_input("Architecture (FILE.py:FACTORY or package.module:FACTORY)", key=f"{key}-own-arch",
                           placeholder="/path/to/net.py:make",
                           help="a function with no arguments that returns the torch nn.Module")
    ident = (path.strip(), spec.strip())
    if st.button("Load this network (runs its code)", key=f"{key}-own-load"):
        load_own(key, *ident)
    ok, bad = st.session_state.get(f"{key}-own-ok"), st.session_state.get(f"{key}-own-bad")
    if bad is not None and bad[0] == ident:
        st.error(md(bad[1]))
    if ok is None:
        st.info("Give the checkpoint's path and the architecture, then press Load.")
        return None
    st.success(md(f"Using {ok['path']} built by {ok['arch']}: {ok['weights']:,} weights, "
                  f"{len(ok['groups'])} prunable groups"))
    dataset = ok["card"].get("dataset")
    if dataset not in DATASETS:
        dataset = st.selectbox("Dataset the net was trained on", DATASETS, key=f"{key}-own-data",
                               help="its card names none of ours; the net takes 1×28×28 images and gives 10 logits")
    return ok["path"], ok["name"], {**ok["card"], "dataset": dataset, "arch": ok["arch"], "group_names": ok["groups"]}


def load_own(key: str, path: str, spec: str) -> None:
    """Load a user's network (its architecture's code runs) into session_state[f"{key}-own-ok"], or keep the
    reason it failed in f"{key}-own-bad" (the last good one stays)."""
    if not path or not spec:
        st.session_state[f"{key}-own-bad"] = ((path, spec), "give both the checkpoint's path and the architecture")
        return
    await_engine("Loading the engine to build the network…")
    from geodesic.store.inputs import open_checkpoint

    full = os.path.abspath(os.path.expanduser(path))
    try:
        with st.spinner("Building the network (running its architecture's code) and checking the weights…"):
            ckpt = open_checkpoint(full, arch=spec)
    except Exception as e:  # noqa: BLE001 — CheckpointError, ArchError, OSError…; a user's code may raise anything
        why = str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {e}"
        st.session_state[f"{key}-own-bad"] = ((path, spec), f"cannot use {path} with {spec}: {why}")
        return
    st.session_state[f"{key}-own-ok"] = {"path": full, "arch": ckpt.arch, "name": ckpt.name, "card": dict(ckpt.card),
                                         "groups": [g.name for g in ckpt.groups], "weights": int(ckpt.w.numel())}
    st.session_state[f"{key}-own-bad"] = None


def upload(key: str):
    """A user's checkpoint for a zoo architecture (validated by geodesic.store.checkpoints.load; nothing is unpickled).

    A wrong or corrupt file gets st.error and changes nothing: the last good upload (if any) stays in use.
    """
    arch = st.selectbox("Architecture of the file", sorted(ZOO_GROUPS), key=f"{key}-arch")
    f = st.file_uploader("Checkpoint (.safetensors)", type=["safetensors"], key=f"{key}-up")
    ok, bad = st.session_state.get(f"{key}-upload-ok"), st.session_state.get(f"{key}-upload-bad")
    if f is not None:
        ident = (f.name, f.size, arch)
        if (ok is None or ok[2] != ident) and (bad is None or bad[0] != ident):
            await_engine("Loading the engine to check the file…")
            from geodesic.store import cards, checkpoints

            folder = runs_root() / "uploads"
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / f"{Path(f.name).stem}-{arch}.safetensors"
            tmp = dest.with_suffix(".part")
            tmp.write_bytes(f.getvalue())
            try:
                checkpoints.load(tmp, arch)
            except cards.CheckpointError as e:
                bad = (ident, str(e).replace(str(tmp), f.name))
                st.session_state[f"{key}-upload-bad"] = bad
            else:
                os.replace(tmp, dest)
                ok, bad = (str(dest), arch, ident), None
                st.session_state[f"{key}-upload-ok"] = ok
                st.session_state[f"{key}-upload-bad"] = None
            finally:
                tmp.unlink(missing_ok=True)
        if bad is not None and bad[0] == ident:
            st.error(md(f"{f.name} cannot be used as a {arch} checkpoint: {bad[1]}"))
    if ok is None:
        st.info("Upload a .safetensors file whose tensors match the chosen architecture.")
        return None
    st.success(md(f"Using uploaded {ok[2][0]} as {ok[1]}"))
    return ok[0], ok[1], {"model": ok[1], "dataset": None, "uploaded": True}


# --- run folders, read without the engine -----------------------------------------------------------------


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
    def status(self) -> str:
        return self.run.status.value

    @property
    def summary(self) -> dict:
        return self.meta.get("summary") or {}

    def has_snapshots(self) -> bool:
        return (self.dir / "snapshots.safetensors").is_file() or any((self.dir / "snapshots").glob("*.safetensors"))

    def reload(self) -> Folder:
        """Read the folder again (a run still being written); ValueError or OSError as geodesic.store.runs.load_run."""
        from geodesic.store.runs import load_run

        return Folder(load_run(self.dir, self.readonly), self.notes)


def _file_stamp(p: Path) -> tuple:
    try:
        st_ = p.stat()
        return str(p), st_.st_mtime_ns, st_.st_size
    except OSError:
        return str(p), None, None


def _stamp(root: Path) -> tuple:
    """What the run listing depends on: every run folder's meta.json and metrics.parquet (size, mtime)."""
    from geodesic.store.runs import gallery_root

    metas = [*root.glob("*/meta.json"), *gallery_root().glob("*/meta.json")]
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
    from geodesic.store.runs import scan_with_gallery

    result = scan_with_gallery(Path(root))
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


def _meta_of(folder: Path) -> dict | None:
    """meta.json as geodesic.store.runs.load_run accepts it (a JSON object; summary and config objects or absent), else
    None."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(meta, dict) or any(meta.get(k) is not None and not isinstance(meta[k], dict)
                                         for k in ("summary", "config")):
        return None
    return meta


@st.cache_resource(show_spinner=False, max_entries=8)
def _listing(root: str, stamp: tuple) -> list:
    """(folder, meta, readonly) of every run folder whose meta.json reads, in scan_with_gallery's order."""
    from geodesic.store.runs import gallery_root

    out = []
    for where, readonly in ((Path(root), False), (gallery_root(), True)):
        for m in sorted(where.glob("*/meta.json"), reverse=True):
            meta = _meta_of(m.parent)
            if meta is not None:
                out.append((m.parent, meta, readonly))
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
    from geodesic.store.runs import Run

    return _with_notes([Folder(Run(d, meta, None, readonly)) for d, meta, readonly in _listing(str(root), stamp)])


@st.cache_resource(show_spinner=False, max_entries=64)
def _load(folder: str, readonly: bool, stamp: tuple):
    from geodesic.store.runs import load_run

    return load_run(Path(folder), readonly)


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


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a .safetensors header, checked against the file's size (no tensor is read)."""
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


def snapshot_problem(folder: Folder) -> str | None:
    """Why a run's snapshots cannot be embedded (damaged file, wrong sizes), or None."""
    n_want = ZOO_WEIGHTS.get(str(folder.meta.get("model")))
    files = sorted((folder.dir / "snapshots").glob("*.safetensors"))
    legacy = folder.dir / "snapshots.safetensors"
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
            raise ValueError(f"snapshots hold {sizes.pop():,} weights, a {folder.meta.get('model')} has {n_want:,}")
    except (OSError, ValueError) as e:
        return f"snapshots unusable: {e}"
    return None


# --- deletion ----------------------------------------------------------------------------------------------


def active_dirs() -> set[str]:
    return {str(Path(d).absolute()) for j in registry().list() if j.active for d in j.run_dirs}


def delete_refusal(folder: Folder) -> str | None:
    """Why this run folder must not be deleted now (geodesic.store.runs.delete_refusal, or a job of this server still
    writes it), or None."""
    from geodesic.store.runs import delete_refusal

    why = delete_refusal(folder.run)
    if why is None and str(folder.dir.absolute()) in active_dirs():
        why = f"{folder.name} belongs to a job that is still running here: stop the job first"
    return why


def delete_run(folder: Folder) -> None:
    """Delete a run folder, or ValueError with the reason it is refused (checked again, on the folder as it is
    now, at the moment of deleting)."""
    from geodesic.store.runs import delete_run as delete

    now = folder.reload()
    why = delete_refusal(now)
    if why:
        raise ValueError(why)
    delete(now.run)


# --- jobs -------------------------------------------------------------------------------------------------


def pick_job(kind: str, key: str):
    """The job this page shows: the one started here (a new one replaces the picker's choice), else the one picked,
    else the newest of its kind (a reload or a new tab)."""
    all_jobs = registry().list(kind)
    if not all_jobs:
        return None
    ids = [j.id for j in all_jobs]
    current, select, shown = st.session_state.get(key), f"{key}-select", f"{key}-shown"
    if current in ids and st.session_state.get(shown) != current:  # a job started here since: show it
        st.session_state[select] = current
        st.session_state[shown] = current
    if st.session_state.get(select) not in ids:
        st.session_state[select] = current if current in ids else ids[0]
    if len(ids) > 1:  # labels that do not change while a job runs (a selectbox's value is its label)
        started = lambda i: time.strftime("%H:%M:%S", time.localtime(registry().get(i).started))  # noqa: E731
        chosen = st.selectbox("Job", ids, key=select, format_func=lambda i: f"{i} (started {started(i)})")
    else:
        chosen = ids[0]
    return registry().get(chosen)


def controls(job: jobs.Job) -> None:
    """Status line, Pause / Resume / Stop, and the error of a failed job (all from one reading of its status)."""
    status, rows = job.status, len(job.rows)
    cols = st.columns([3, 1, 1, 1])
    where = f" → {md(job.run_dir.name)}" if job.run_dir else ""
    extra = f" · {md(job.info['current'])}" if "current" in job.info else ""
    cols[0].markdown(f"**{md(job.id)}**: {status}, {rows} rows{extra}{where}")
    if status == "running":
        cols[1].button("Pause", key=f"pause-{job.id}", on_click=job.pause)
    elif status == "paused":
        cols[1].button("Resume", key=f"resume-{job.id}", on_click=job.resume)
    if status in ACTIVE:
        cols[2].button("Stop", key=f"stop-{job.id}", on_click=job.stop, type="primary")
    ended = job.result.get("status") if isinstance(job.result, dict) else None
    if ended == "diverged":  # the job ran to its end, but its path did not: say so, and what to try
        from geodesic.infra.lifecycle import DIVERGED_HINT

        st.warning(md(f"The path diverged: {DIVERGED_HINT} (the ε setting)."))
    if status == "error":
        st.error(md(f"The job failed: {job.error.splitlines()[0]}"))
        with st.expander("traceback"):
            st.code(job.error)


def figure(name: str, job: jobs.Job, df: pd.DataFrame, build: Callable[[], object], every: int = 1):
    """build() once per (job, rows // every, status): a refresh that brings no new step reuses the figure
    (and the browser skips redrawing an unchanged chart)."""
    key, stamp = f"fig-{name}-{job.id}", (len(df) // every, job.status)
    hit = st.session_state.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    fig = build()
    st.session_state[key] = (stamp, fig)
    return fig


def extend_frame(held: tuple[int, pd.DataFrame] | None, rows: list[dict]) -> tuple[int, pd.DataFrame]:
    """(len(rows), pd.DataFrame(rows)), from `held` = (n, the frame of rows[:n]) when rows only grew since: the
    rows after n are converted and appended (building the frame of every row again costs more each step of a
    long run); built anew when the new rows' columns or types differ from the held frame's."""
    import pandas as pd

    n = len(rows)
    if held is not None and held[0] == n:
        return held
    if held is not None and 0 < held[0] < n:
        new, old = pd.DataFrame(rows[held[0]:n]), held[1]
        if list(new.columns) == list(old.columns) and (new.dtypes == old.dtypes).all():
            return n, pd.concat([old, new], ignore_index=True)
    return n, pd.DataFrame(rows[:n])


def rows_frame(job: jobs.Job) -> pd.DataFrame:
    """job.frame(), kept per session and extended at each refresh by the rows added since (extend_frame)."""
    key = f"frame-{job.id}"
    held = st.session_state[key] = extend_frame(st.session_state.get(key), job.rows)  # rows are only appended
    return held[1]


def live(job: jobs.Job, render: Callable[[jobs.Job, pd.DataFrame], None]) -> None:
    """Draw `render(job, rows)` now and, while the job is active, every POLL_S seconds (a fragment rerun)."""
    polling = job.active
    if polling and sys.getswitchinterval() > LIVE_SWITCH_S:
        sys.setswitchinterval(LIVE_SWITCH_S)  # for the rest of the server's life: jobs come and go

    @st.fragment(run_every=POLL_S if polling else None)
    def panel() -> None:
        t0 = time.perf_counter()
        controls(job)
        render(job, rows_frame(job))
        if polling and not job.active:
            st.rerun()  # the job ended: one full rerun turns polling off
        if polling:
            n = st.session_state[f"refresh-{job.id}"] = st.session_state.get(f"refresh-{job.id}", 0) + 1
            st.caption(f"live: refresh #{n}, every {POLL_S} s while the job runs; this redraw took "
                       f"{1000 * (time.perf_counter() - t0):.0f} ms on the server")

    panel()
