"""Runs: every run folder on disk; reopen, compare, export, delete."""

import io

import streamlit as st

from app import engine, jobs, page, run_folders


def parquet_bytes(df) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


st.title("Runs on disk")
st.caption(f"Run folders under {page.md(jobs.runs_root())} (written by the app, the CLI and the benchmarks alike), "
           "then the shipped examples of assets/gallery, named \"example · …\": read-only, never deleted.")

listed = run_folders.list_runs()  # torch-free, and pandas-free on a fresh server's first page; the examples last
if not listed:
    run_folders.show_problems(run_folders.scan_runs()[1])
    st.info("No runs yet.")
    st.stop()
for f in listed:
    for note in f.notes:
        st.warning(page.md(f"{f.label}: {note}"), icon=":material/content_copy:")


def compact_net(f: run_folders.Folder) -> None:
    """The compact net of a run with final weights (geodesic.store.export.export_zip: every all-zero group taken out,
    as ONNX + safetensors + card) as a download, built only on a press (the ONNX exporter takes 10-20 s) and kept
    in session_state for this folder while its final.safetensors stays the same. Reads the run only, so shipped
    examples have it too."""
    final = f.dir / "final.safetensors"
    if not final.is_file():
        return
    info = final.stat()
    stamp, key = (info.st_mtime_ns, info.st_size), f"compact-{f.key}"
    held = st.session_state.get(key)
    held = held if held is not None and held[0] == stamp else None  # (stamp, zip bytes or None, caption or error)
    c = st.columns([2, 3])
    slot = c[0].empty()  # the button, replaced by the download once the zip is there
    if (held is None or held[1] is None) and slot.button(
            "Prepare compact net", key=f"prep-{f.key}",
            help="export the run's final net without its all-zero filters/neurons: model.onnx (checked against "
                 "the zeroed net with onnxruntime), model.safetensors and its card model.json"):
        engine.await_engine()
        from geodesic.store import export

        with st.spinner("Exporting the compact net (ONNX, checked with onnxruntime)…"):
            try:
                data, report = export.export_zip(f.dir)
            except Exception as e:  # noqa: BLE001 — ExportError, CheckpointError, ArchError, OSError, the exporter's
                why = str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {e}"
                held = (stamp, None, f"cannot export the compact net of {f.label}: {why}")
            else:
                d, k = report["dense"], report["compact"]
                held = (stamp, data, f"{report['groups_removed']} of {report['groups']} groups taken out: "
                                     f"{d['parameters']:,} → {k['parameters']:,} parameters, {d['flops']:,} → "
                                     f"{k['flops']:,} FLOPs per image; largest output difference through "
                                     f"onnxruntime {report['max_abs_diff']['onnxruntime']:.2g}")
        st.session_state[key] = held
    if held is not None and held[1] is None:
        st.error(page.md(held[2]))
    elif held is not None:
        slot.download_button("compact net (.zip: ONNX + safetensors)", held[1], f"{f.name}-compact.zip",
                             "application/zip", key=f"zip-{f.key}", on_click="ignore")
        c[1].caption(page.md(held[2]))


def steps(f: run_folders.Folder) -> int:
    """The last step; for runs whose rows are not steps (damage: one row per net, level and seed), the rows."""
    if "step" not in f.metrics.columns:
        return len(f.metrics)
    import pandas as pd

    s = f.metrics["step"].max() if len(f.metrics) else 0
    return 0 if pd.isna(s) else int(s)


table_slot = st.empty()  # the table shows above the picker, but is filled after it (page.after_paint)
chosen = st.multiselect("Open / compare", [f.label for f in listed], default=[f.label for f in listed][:1])


def opened() -> None:
    """The table of every run, then the chosen runs: their curves, and per run its filter norms, meta, downloads,
    compact net and deletion."""
    import pandas as pd  # after the picker: pandas is the slowest import of a fresh server's first page

    from app import figures

    folders, problems = run_folders.scan_runs()  # torch-free: meta.json and metrics.parquet only
    run_folders.show_problems(problems)
    by_label = {f.label: f for f in folders}  # a user's folder by its name, an example as "example · <title>"
    table = pd.DataFrame([{
        "run": f.label, "kind": str(f.meta.get("kind")), "model": str(f.meta.get("model")),
        "dataset": str(f.meta.get("dataset")), "status": f.status.value, "steps": steps(f),
        "accuracy": f.summary.get("accuracy"), "length": f.summary.get("length"), "created": str(f.meta.get("created"))}
        for f in folders])
    for col in ("accuracy", "length"):  # a summary field that is not a number shows empty
        table[col] = pd.to_numeric(table[col], errors="coerce") if len(table) else []
    table_slot.dataframe(table, hide_index=True)
    sel = [by_label[n] for n in chosen if n in by_label]
    if not sel:
        return
    frames = [f for f in sel if len(f.metrics) and "step" in f.metrics.columns]
    if frames:
        note = "; ".join(f"{f.label}: {f.meta.get('model')} on {f.meta.get('dataset')}, "
                         f"{f.meta.get('eval_images', '?')} test images" for f in sel)
        build = lambda: figures.path_curves(pd.concat([f.metrics.assign(run=f.label) for f in frames],  # noqa: E731
                                                      ignore_index=True), note)
        try:
            fig = run_folders.saved_figure(("runs", tuple((f.label, run_folders.folder_stamp(f)) for f in frames), note), build)
        except (KeyError, TypeError, ValueError) as e:
            st.warning(page.md(f"cannot draw the curves of these runs: {type(e).__name__}: {e}"))
        else:
            st.plotly_chart(fig, key="runs-curves")
        checked = [f for f in frames if figures.has_linearity(f.metrics)]
        if checked:
            lin = lambda: figures.linearity(pd.concat([f.metrics.assign(run=f.label) for f in checked],  # noqa: E731
                                                      ignore_index=True),
                                            "each step's measured change of its probe's outputs over |Jθ|², and ε")
            try:
                fig = run_folders.saved_figure(("runs-lin", tuple((f.label, run_folders.folder_stamp(f)) for f in checked)), lin)
            except (KeyError, TypeError, ValueError) as e:
                st.warning(page.md(f"cannot draw the linearity of these runs: {type(e).__name__}: {e}"))
            else:
                st.plotly_chart(fig, key="runs-linearity")
    for f in sel:
        with st.expander(page.md(f"{f.label}: {f.status.value}"), expanded=len(sel) == 1):
            if len(sel) == 1 and "group_norms" in f.metrics.columns:
                try:
                    fig = run_folders.saved_figure(("runs-heat", f.key, run_folders.folder_stamp(f), f.label),
                                             lambda f=f: figures.filter_heatmap(f.metrics, None,
                                                                                f"{f.meta.get('model')}, run {f.label}"))
                except (KeyError, TypeError, ValueError) as e:
                    st.warning(page.md(f"cannot draw the filter norms of {f.label}: {type(e).__name__}: {e}"))
                else:
                    st.plotly_chart(fig, key=f"runs-heat-{f.key}")
            st.json(f.meta, expanded=False)
            c = st.columns(5)
            c[0].download_button("metrics.csv", lambda f=f: f.metrics.to_csv(index=False), f"{f.name}-metrics.csv",
                                 "text/csv", key=f"csv-{f.key}", on_click="ignore")
            c[1].download_button("metrics.parquet", lambda f=f: parquet_bytes(f.metrics), f"{f.name}-metrics.parquet",
                                 key=f"pq-{f.key}", on_click="ignore")
            for i, name in enumerate(("final.safetensors", "state.safetensors")):
                p = f.dir / name
                if p.is_file():  # read only when clicked: snapshot files reach tens of MB
                    c[2 + i].download_button(name, lambda p=p: p.read_bytes(), f"{f.name}-{name}",
                                             key=f"{name}-{f.key}", on_click="ignore")
            compact_net(f)
            if f.readonly:
                c[4].caption("a shipped example: read-only, it cannot be deleted")
                continue
            refusal = run_folders.delete_refusal(f)
            confirm = c[4].checkbox("confirm delete", key=f"confirm-{f.key}", disabled=refusal is not None)
            if c[4].button("Delete", key=f"del-{f.key}", disabled=refusal is not None or not confirm):
                try:
                    run_folders.delete_run(f)
                except (ValueError, OSError) as e:
                    st.error(page.md(f"not deleted: {e}"))
                else:
                    st.toast(page.md(f"deleted {f.name}"))
                    st.rerun()
            if refusal is not None:
                st.info(page.md(f"cannot be deleted now: {refusal}"), icon=":material/lock:")


page.after_paint(opened, "Reading the run folders…")
