"""`geodesic fetch-data`: install full MNIST and Fashion-MNIST."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..store import data


def add(sub) -> None:
    f = sub.add_parser("fetch-data", help="install full MNIST and Fashion-MNIST as raw idx files (offline registries only)")
    f.add_argument("--root", help="data folder (default: $GEODESIC_DATA or <repo>/data)")
    f.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else data.data_root()
    done = data.fetch(root)
    for name in data.FOLDERS:
        for split in ("train", "test"):
            s = data.load_full(name, split, root)
            print(f"{name:14s} {split:5s} {len(s):6d} images  ({'installed now' if name in done else 'present'})")
    return 0
