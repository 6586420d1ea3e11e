"""Model zoo and checkpoints: architecture, filter groups, card accuracy reproduced, bad files refused."""

import json
import shutil

import pytest
import torch
from conftest import CKPT

from geodesic.core.params import flatten, spec_of
from geodesic.core.train import evaluate
from geodesic.store import cards, checkpoints, zoo


def test_lenet60_architecture():
    m = zoo.build("lenet60", seed=0)
    assert spec_of(m).n == 85_670
    groups = zoo.filter_groups(m)
    assert len(groups) == 60
    assert sum(g.layer == "conv1" for g in groups) == 20 and sum(g.layer == "conv2" for g in groups) == 40
    # a filter group is exactly the filter's weights and its bias
    w = flatten(m)
    g = groups[23]  # conv2 filter 3
    expect = torch.cat([m.conv2.weight[3].reshape(-1), m.conv2.bias[3:4]]).detach()
    assert torch.equal(w[g.idx], expect)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_same_seed_same_init():
    a, b = flatten(zoo.build("lenet60", seed=0)), flatten(zoo.build("lenet60", seed=0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("stem", ["lenet60-mnist", "lenet60-fashion-mnist", "mlp-mnist", "mlp-fashion-mnist"])
def test_card_accuracy_reproduced_on_bundled_subset(stem):
    """The net that load() returns measures what its card says, and check_accuracy tells an honest card from one
    that claims more than the net does."""
    from geodesic.infra.files import sha256_file
    from geodesic.store import data

    path = CKPT / f"{stem}.safetensors"
    model, card = checkpoints.load(path)
    assert card == {"model": stem.split("-")[0], **json.loads(path.with_suffix(".json").read_text())}
    assert card["sha256"] == sha256_file(path)  # the file is the one its card describes
    sub = data.load(card["dataset"], "test", "bundled")
    _, acc = evaluate(model, sub)
    p = card["test_accuracy"]
    sd = (p * (1 - p) / len(sub)) ** 0.5  # a random 2,000-image subset of the test set
    assert abs(acc - p) <= 4 * sd + 1e-3, (acc, p)
    assert checkpoints.check_accuracy(model, card, sub) is None  # no warning for an honest card
    boast = checkpoints.check_accuracy(model, {**card, "test_accuracy": 1.0}, sub, tolerance=(1 - acc) / 2)
    assert boast is not None and "its card says 100.0%" in boast


@pytest.mark.parametrize("stem, target", [("lenet60-mnist", 0.990), ("lenet60-fashion-mnist", 0.900)])
def test_checkpoint_targets_reached(stem, target):
    """The shipped lenet60 nets reach the accuracy the project set them, as measured here on the test set (the
    full one when installed, else the bundled 2,000 images, allowing for that subset's sampling error)."""
    from geodesic.store import data

    model, card = checkpoints.load(CKPT / f"{stem}.safetensors")
    assert card["test_accuracy"] >= target
    split = data.load(card["dataset"], "test")
    _, acc = evaluate(model, split)
    assert acc >= target - 4 * (target * (1 - target) / len(split)) ** 0.5, (acc, split.source)


def test_pairs_share_the_init_seed():
    """Each pair of nets (MNIST, Fashion-MNIST) was trained from the same initialization, the one its cards' seed
    builds: a trained net still points along its own init (cosine 0.2-0.6 here), not along another seed's (≈ 0)."""
    for m in ("lenet60", "mlp"):
        pair = [checkpoints.load(CKPT / f"{m}-{d}.safetensors") for d in ("mnist", "fashion-mnist")]
        assert pair[0][1]["seed"] == pair[1][1]["seed"]
        seed = pair[0][1]["seed"]
        init, other = flatten(zoo.build(m, seed=seed)), flatten(zoo.build(m, seed=seed + 1))
        for model, card in pair:
            w = flatten(model)
            assert torch.cosine_similarity(w, init, dim=0) > 0.1, (m, card["dataset"])
            assert abs(torch.cosine_similarity(w, other, dim=0)) < 0.05, (m, card["dataset"])


def test_mismatched_checkpoint_is_refused_with_the_difference(tmp_path):
    src = CKPT / "mlp-mnist.safetensors"
    shutil.copy(src, tmp_path / "x.safetensors")
    card = json.loads(src.with_suffix(".json").read_text())
    (tmp_path / "x.json").write_text(json.dumps({**card, "model": "lenet60"}))
    with pytest.raises(cards.CheckpointError, match=r"missing conv1.weight.*fc1.weight: file has \(32, 784\)"):
        checkpoints.load(tmp_path / "x.safetensors")


def test_corrupt_checkpoint_is_refused(tmp_path):
    raw = (CKPT / "mlp-mnist.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(cards.CheckpointError, match="not a readable .safetensors"):
        checkpoints.load(bad, model_name="mlp")
    bad.write_bytes(b"\x80\x04\x95 not a safetensors file, maybe a pickle")
    with pytest.raises(cards.CheckpointError, match="not a readable"):
        checkpoints.load(bad, model_name="mlp")


def test_changed_weights_fail_the_sha256(tmp_path):
    src = CKPT / "mlp-mnist.safetensors"
    raw = bytearray(src.read_bytes())
    raw[-10] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    shutil.copy(src.with_suffix(".json"), tmp_path / "m.json")
    with pytest.raises(cards.CheckpointError, match="sha256"):
        checkpoints.load(tmp_path / "m.safetensors")


def test_save_load_roundtrip(tmp_path):
    m = zoo.build("mlp", seed=3)
    card = checkpoints.save(m, tmp_path / "m.safetensors", {"model": "mlp", "dataset": "mnist"})
    m2, card2 = checkpoints.load(tmp_path / "m.safetensors")
    assert torch.equal(flatten(m), flatten(m2)) and card2["sha256"] == card["sha256"]
    assert not list(tmp_path.glob("*.tmp"))
