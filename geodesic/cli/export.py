"""`geodesic export`: a run's compact net (zeroed groups removed) as ONNX and safetensors."""

from __future__ import annotations

import argparse

from ..infra import threads
from ..store import data
from .common import threads_options


def add(sub) -> None:
    x = sub.add_parser("export", help="write a run's compact net (zeroed groups removed) as ONNX + safetensors",
                       description="Remove every all-zero group of a run's final net physically and write "
                                   "OUT/model.onnx (checked with onnxruntime), OUT/model.safetensors and its card "
                                   "OUT/model.json (loadable by geodesic.store.checkpoints.load); print parameters, FLOPs "
                                   "and CPU latency, dense against compact.")
    x.add_argument("--run", required=True, help="run folder with a final.safetensors")
    x.add_argument("--out", required=True, help="folder for model.onnx, model.safetensors, model.json")
    x.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    threads_options(x)
    x.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from ..store.export import export, markdown
    from ..store.runs import load_run

    threads.configure(args.threads)
    dataset = load_run(args.run).meta.get("dataset")
    images = data.load(dataset, "test", "bundled").x[:256] if dataset in data.FOLDERS else None
    report = export(args.run, args.out, images, force=args.force)
    print(markdown(report, f"{args.run} → {args.out}"), end="")
    print(f"wrote {args.out}/model.onnx, model.safetensors, model.json "
          f"({report['groups_removed']} of {report['groups']} groups removed)")
    return 0
