"""Dense against compact: parameters, FLOPs and CPU latency of the zeroed net and of the exported compact one.

    python bench/bench_export.py

lenet60: the trained MNIST checkpoint with its 50 smallest-norm filters (of 60) zeroed, no walk: the compact net
computes exactly what the zeroed one computes, whatever the accuracy. ResNet8 (BatchNorm, skips): random weights
and BatchNorm statistics, half its 224 coupled groups zeroed at random (trained ResNet8 checkpoints come later).
Latency: median wall time of a forward pass on the CPU with 1 thread, in torch and in onnxruntime (ONNX files of
both nets). Writes bench/results/export.md and .csv.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from common import RESULTS, ROOT, markdown
from torch import nn

from geodesic.core.groups import coupled_groups, example_input
from geodesic.core.params import flatten
from geodesic.core.targets import choose_groups
from geodesic.store import checkpoints, compact, data, export, zoo

BATCHES = (1, 256)


def ort_latency_ms(path: Path, batch: int, repeats: int, warmup: int = 3) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: torch.rand(batch, 1, 28, 28).numpy()}
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def accuracy(model: nn.Module, split) -> float:
    with torch.no_grad():
        return float((model(split.x).argmax(1) == split.y).float().mean())


def bench(name: str, model: nn.Module, w: torch.Tensor, groups, images: torch.Tensor, repeats: dict[int, int],
          test=None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t = time.perf_counter()
        report = export.export((model, w, groups), out / "compact", images, batches=())
        seconds = time.perf_counter() - t
        dense = compact.zeroed(model, w)
        small, _ = (checkpoints.load(out / "compact" / "model.safetensors") if type(model) in zoo.ZOO.values()
                    else (compact.compact(model, w, groups), None))
        export.to_onnx(dense, out / "dense.onnx")
        rows = [("parameters", compact.parameters(dense), compact.parameters(small)),
                ("FLOPs per image (conv + linear)", compact.flops(dense), compact.flops(small))]
        for b in BATCHES:
            rows.append((f"torch latency, batch {b} (ms)", compact.latency_ms(dense, b, repeats[b]),
                         compact.latency_ms(small, b, repeats[b])))
        for b in BATCHES:
            rows.append((f"onnxruntime latency, batch {b} (ms)", ort_latency_ms(out / "dense.onnx", b, repeats[b]),
                         ort_latency_ms(out / "compact" / "model.onnx", b, repeats[b])))
        if test is not None:
            rows.append((f"accuracy on {len(test)} bundled test images", accuracy(dense, test), accuracy(small, test)))
    widths = ", ".join(f"{k} {v}" for k, v in report["widths"].items() if not k.endswith(("bn1", "bn2", ".1")))
    print(f"{name}: {report['groups_removed']} of {report['groups']} groups removed in {seconds:.1f} s; widths "
          f"{widths}; max |compact − zeroed| torch {report['max_abs_diff']['torch']:.2g}, onnxruntime "
          f"{report['max_abs_diff']['onnxruntime']:.2g}", flush=True)
    return [{"model": name, "measure": m, "dense": d, "compact": c, "compact / dense": c / d if d else float("nan")}
            for m, d, c in rows]


def fmt(measure: str, v: float) -> str:
    if measure.startswith(("parameters", "FLOPs")):
        return f"{int(v):,}"
    return f"{v:.1%}" if measure.startswith("accuracy") else f"{v:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats-1", type=int, default=200, help="timed forwards of batch 1")
    ap.add_argument("--repeats-256", type=int, default=20, help="timed forwards of batch 256")
    args = ap.parse_args()
    repeats = {1: args.repeats_1, 256: args.repeats_256}
    torch.manual_seed(0)
    test = data.load("mnist", "test", "bundled")
    images = test.x[:256]

    lenet, _ = checkpoints.load(ROOT / "assets" / "checkpoints" / "lenet60-mnist.safetensors")
    w, groups = flatten(lenet), zoo.filter_groups(lenet)
    for g in choose_groups("norm", lenet, w, groups, 50):
        w[g.idx] = 0
    rows = bench("lenet60 (MNIST), 50 of 60 filters zeroed", lenet, w, groups, images, repeats, test)

    resnet = zoo.ResNet8()
    gen = torch.Generator().manual_seed(0)
    for bn in resnet.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data.uniform_(0.5, 1.5, generator=gen)
            bn.bias.data.uniform_(-0.2, 0.2, generator=gen)
            bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
            bn.running_var.uniform_(0.5, 2, generator=gen)
    resnet.eval()
    w, groups = flatten(resnet), coupled_groups(resnet, example_input(resnet))
    for i in torch.randperm(len(groups), generator=gen)[: len(groups) // 2].tolist():
        w[groups[i].idx] = 0
    rows += bench(f"ResNet8 (random weights), {len(groups) // 2} of {len(groups)} groups zeroed", resnet, w, groups,
                  images, repeats)

    df = pd.DataFrame(rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    note = (f"CPU, 1 thread (torch.set_num_threads(1); onnxruntime intra/inter-op threads 1), median of "
            f"{args.repeats_1} forwards at batch 1 and {args.repeats_256} at batch 256; torch {torch.__version__}, "
            f"{os.cpu_count()} cores, load average {load:.1f} when it ended. Compact = zeroed groups removed "
            "(geodesic.store.export); its outputs equal the zeroed net's to 1e-4 (checked on 256 MNIST test images, "
            "in torch and in onnxruntime).")
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "export.csv", index=False)
    shown = df.assign(**{col: [fmt(m, v) for m, v in zip(df["measure"], df[col])] for col in ("dense", "compact")},
                      **{"compact / dense": [f"{v:.3f}" for v in df["compact / dense"]]})
    md = markdown(shown) + f"\n\n{note}\n"
    (RESULTS / "export.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
