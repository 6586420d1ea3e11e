"""The physically smaller net: every all-zero coupled group (groups.py) taken out, as ONNX and as safetensors.

    out/model.onnx          opset 18 (torch.onnx's torch.export-based exporter), input "images" (N, C, H, W) with
                            a dynamic batch axis, output "logits"; checked with onnxruntime before it is kept
    out/model.safetensors   the compact net's plain state dict
    out/model.json          its card: the zoo model, "compact": true, the channels taken out of each root
                            ("removed"), the new widths and shapes, parameters and FLOPs dense and compact, the source

`checkpoints.load(out/model.safetensors)` gives the compact net back: it builds the zoo model, takes the card's
"removed" channels out the same way (`shrink`, on Torch-Pruning's dependency graph) and loads the tensors into it
(no pickles). The compact net computes what the zeroed net computes: removing a channel that is exactly zero
everywhere also removes its consumers' input slices, which only ever multiplied zeros.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..core.groups import example_input
from ..core.params import Group, flatten
from ..infra.files import follow_umask
from .compact import measure, removed_channels, shrink, widths, zeroed

OPSET = 18
TOLERANCE = 1e-4
ONNX_NAME, WEIGHTS_NAME = "model.onnx", "model.safetensors"


class ExportError(ValueError):
    """An export that would not compute what the zeroed net computes, or cannot be written."""


# --- ONNX --------------------------------------------------------------------------------------------------


def to_onnx(model: nn.Module, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write `model` as ONNX (torch.onnx.export with the torch.export-based exporter, which needs onnxscript):
    input "images" with a dynamic batch axis, output "logits"."""
    import warnings

    path = Path(path)
    x = example_input(model, 2)  # batch 2: a batch of 1 would be specialized to a constant
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    return path


def run_onnx(path: str | os.PathLike, images: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """The ONNX model's outputs on `images`, computed by onnxruntime on the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: images.float().numpy()})[0])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


# --- export ------------------------------------------------------------------------------------------------


def _source(source) -> tuple[nn.Module, torch.Tensor, list[Group], dict]:
    """(model, w, groups, card) of a run folder, a checkpoint file or a (model, w, groups) triple."""
    from . import checkpoints, zoo

    if isinstance(source, (tuple, list)):
        model, w, groups = source
        name = next((k for k, cls in zoo.ZOO.items() if type(model) is cls), None)
        return model, w, groups, ({"model": name} if name else {})
    path = Path(source)
    if path.is_dir():
        from .runs import FINAL, load_run

        run = load_run(path)
        final = path / FINAL
        if not final.is_file():
            raise ExportError(f"run {run.id} has no final net ({FINAL}; status: {run.status.value})")
        arch = run.meta.get("arch")
        model, card = checkpoints.load(final, None if arch else _card_model(final, run.meta), arch)
        card = {**card, "run": card.get("run", run.id)}
    else:
        model, card = checkpoints.load(path)
    return model, flatten(model), zoo.filter_groups(model), {**card, "source": str(path)}


def _card_model(final: Path, meta: dict) -> str | None:
    """The model name to load a run's final net with: its card's, else the run's meta.json's."""
    from .cards import read_card

    return None if "model" in read_card(final) else meta.get("model")


def _check_out(out: Path, files: tuple[Path, ...], force: bool) -> None:
    """Refuse to overwrite an earlier export (unless forced) or to write into a file."""
    there = [str(p) for p in files if p.exists()]
    if there and not force:
        raise ExportError(f"{', '.join(there)} already exist; choose another folder, or force (nothing was overwritten)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")


def _write_onnx(small: nn.Module, x: torch.Tensor, want: torch.Tensor, path: Path, opset: int,
                tolerance: float) -> float:
    """Export to ONNX under a temporary name, check onnxruntime against `want`, then rename; the difference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        to_onnx(small, tmp, opset)
        diff = max_diff(run_onnx(tmp, x), want)
        if not diff <= tolerance:
            raise ExportError(f"onnxruntime's outputs differ from the zeroed net's by {diff:.3g} (> {tolerance})")
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def _card(src: dict, small: nn.Module, report: dict) -> dict:
    """The compact net's card: where it came from, the channels removed (checkpoints.load rebuilds from them), sizes."""
    card = {k: src[k] for k in ("model", "dataset", "run", "source", "eval_accuracy", "eval_images",
                                "test_accuracy") if src.get(k) is not None}
    card.update({
        "compact": True, "removed": report["removed"], "widths": report["widths"],
        "shapes": {k: list(v.shape) for k, v in small.state_dict().items()},
        "parameters": report["compact"]["parameters"], "flops": report["compact"]["flops"],
        "dense_parameters": report["dense"]["parameters"], "dense_flops": report["dense"]["flops"],
        "groups_removed": report["groups_removed"], "max_abs_diff": report["max_abs_diff"], "onnx": ONNX_NAME,
        "opset": report["opset"],
    })
    return card


def export(source, out_dir: str | os.PathLike, images: torch.Tensor | None = None, *, force: bool = False,
           opset: int = OPSET, tolerance: float = TOLERANCE, batches: tuple[int, ...] = (1, 256),
           repeats: int = 20) -> dict:
    """Write out_dir/model.onnx, out_dir/model.safetensors and out_dir/model.json for the compact net, and return
    a report: parameters, FLOPs and CPU latency (median, 1 thread, for each batch size in `batches`; none when
    empty) of the dense (zeroed) net and of the compact one, the channels removed, and the largest output
    difference from the zeroed net, in torch and through onnxruntime.

    source: a run folder (its final.safetensors), a checkpoint .safetensors, or (model, w, groups).
    images: the inputs to compare on (e.g. test images); default 64 seeded random images. Raises ExportError,
    writing nothing it would keep, when an output differs by more than `tolerance`, or when out_dir already holds
    an export and not `force`.
    """
    from . import cards, checkpoints

    model, w, groups, src = _source(source)
    if "removed" in src:  # its channel numbers would not be the zoo model's
        raise ExportError(f"{src.get('source', 'the source')} is already a compact net; export the run it came from")
    out = Path(out_dir)
    onnx_path, weights = out / ONNX_NAME, out / WEIGHTS_NAME
    _check_out(out, (onnx_path, weights, cards.card_path(weights)), force)
    dense, removed = zeroed(model, w), removed_channels(w, groups)
    small = shrink(zeroed(model, w), removed)
    x = example_input(model, 64) if images is None else images
    with torch.no_grad():
        want = dense(x)
        diff_torch = max_diff(small(x), want)
    if not diff_torch <= tolerance:
        raise ExportError(f"the compact net differs from the zeroed one by {diff_torch:.3g} (> {tolerance}): a "
                          "removed channel is not exactly zero everywhere it is used")
    diff_onnx = _write_onnx(small, x, want, onnx_path, opset, tolerance)
    report = {
        "groups": len(groups), "groups_removed": sum(len(v) for v in removed.values()),
        "removed": removed, "widths": widths(small),
        "dense": measure(dense, batches, repeats), "compact": measure(small, batches, repeats),
        "max_abs_diff": {"torch": diff_torch, "onnxruntime": diff_onnx}, "images": int(x.shape[0]),
        "opset": opset, "onnx": str(onnx_path), "safetensors": str(weights),
    }
    card = _card(src, small, report)
    checkpoints.save(small, weights, card)
    return report


def export_zip(source, images: torch.Tensor | None = None) -> tuple[bytes, dict]:
    """What a download button serves: the export of `source` (as in `export`, latency not measured) as one zip
    holding model.onnx, model.safetensors and model.json, in memory, and its report."""
    import io
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        report = export(source, tmp, images, batches=())
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name in (ONNX_NAME, WEIGHTS_NAME, Path(WEIGHTS_NAME).with_suffix(".json").name):
                z.write(Path(tmp) / name, name)
    return buf.getvalue(), {**report, "onnx": ONNX_NAME, "safetensors": WEIGHTS_NAME}


def markdown(report: dict, title: str = "") -> str:
    """The report as a markdown table: dense against compact."""
    d, c = report["dense"], report["compact"]
    rows = [("parameters", f"{d['parameters']:,}", f"{c['parameters']:,}", c["parameters"] / d["parameters"]),
            ("FLOPs / image", f"{d['flops']:,}", f"{c['flops']:,}", c["flops"] / d["flops"])]
    for b, ms in d["latency_ms"].items():
        cm = c["latency_ms"][b]
        rows.append((f"CPU latency, batch {b} (ms, 1 thread)", f"{ms:.3f}", f"{cm:.3f}", cm / ms))
    lines = [f"**{title}**", ""] if title else []
    lines += ["| | dense | compact | compact / dense |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {cc} | {r:.3f} |" for a, b, cc, r in rows]
    return "\n".join(lines) + "\n"
