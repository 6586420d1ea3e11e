"""The checkpoint picker: a shipped checkpoint (a JSON card beside each), a validated upload of a zoo net, or a
user's own network (its weights and the Python code that builds it). The shipped ones are listed from their cards
alone (torch-free); an upload or a user's net is checked by the engine, once it has loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import streamlit as st

from app import engine
from app.choices import DATASETS
from app.jobs import CHECKPOINTS, runs_root
from app.page import md
from geodesic.store.zoo_table import PRUNABLE_GROUPS


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
    jobs.Source) and "group_names" (its prunable groups, see app.choices.group_names)."""
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
    engine.await_engine("Loading the engine to build the network…")
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
    arch = st.selectbox("Architecture of the file", sorted(PRUNABLE_GROUPS), key=f"{key}-arch")
    f = st.file_uploader("Checkpoint (.safetensors)", type=["safetensors"], key=f"{key}-up")
    ok, bad = st.session_state.get(f"{key}-upload-ok"), st.session_state.get(f"{key}-upload-bad")
    if f is not None:
        ident = (f.name, f.size, arch)
        if (ok is None or ok[2] != ident) and (bad is None or bad[0] != ident):
            engine.await_engine("Loading the engine to check the file…")
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
