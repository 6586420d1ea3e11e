"""Data loader on the real files: shapes, counts, labels, and torchvision as an independent reader."""

import gzip

import numpy as np
import pytest
import torch

from geodesic.store import data

FULL = all(data.is_installed(n) for n in data.FOLDERS)
needs_full = pytest.mark.skipif(not FULL, reason="full datasets not installed: run `make data`")


@needs_full
@pytest.mark.parametrize("name", sorted(data.FOLDERS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_full_split_shapes_counts_labels(name, split):
    s = data.load(name, split, "full")
    assert s.x.shape == (data.COUNTS[split], 1, 28, 28) and s.x.dtype == torch.float32
    assert 0.0 <= float(s.x.min()) and float(s.x.max()) <= 1.0
    assert s.y.shape == (data.COUNTS[split],)
    counts = torch.bincount(s.y, minlength=10)
    assert counts.numel() == 10 and int(counts.min()) > data.COUNTS[split] // 20  # every class well represented
    if name == "fashion-mnist":
        assert counts.tolist() == [data.COUNTS[split] // 10] * 10  # Fashion-MNIST is exactly balanced


@needs_full
@pytest.mark.parametrize("name,cls", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_matches_torchvision_reader(name, cls):
    import torchvision

    tv = getattr(torchvision.datasets, cls)(str(data.data_root()), train=False, download=False)
    ours = data.load(name, "test", "full")
    assert torch.equal(tv.targets, ours.y)
    assert torch.equal(tv.data, (ours.x[:, 0] * 255).round().to(torch.uint8))


@needs_full
def test_bundled_subset_is_a_sample_of_the_full_set():
    full, sub = data.load("mnist", "test", "full"), data.load("mnist", "test", "bundled")
    from safetensors.torch import load_file

    idx = load_file(str(data.subset_path("mnist", "test")))["index"]
    assert len(sub) == data.SUBSET_SIZES["test"]
    assert torch.equal(full.x[idx], sub.x) and torch.equal(full.y[idx], sub.y)


@pytest.mark.parametrize("name", sorted(data.FOLDERS))
def test_bundled_subsets(name):
    for split, n in data.SUBSET_SIZES.items():
        s = data.load(name, split, "bundled")
        assert s.x.shape == (n, 1, 28, 28) and s.y.shape == (n,)
        assert set(s.y.unique().tolist()) == set(range(10))


def test_missing_data_names_the_install_command(tmp_path):
    with pytest.raises(data.DataMissing, match="make data"):
        data.load_full("mnist", "test", root=tmp_path)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(bad)
    short = tmp_path / "short-idx1-ubyte.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(short)
    good = tmp_path / "good-idx1-ubyte"
    good.write_bytes(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([7, 1, 9]))
    assert np.array_equal(data.read_idx(good), [7, 1, 9])


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar", "test")
    with pytest.raises(ValueError, match="unknown split"):
        data.load("mnist", "val")
