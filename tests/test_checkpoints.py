"""Bad inputs to checkpoints, their cards, a training's output path, and the data they are scored on:
a clear error naming the file (never a traceback), and nothing overwritten or half-written."""

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CKPT
from safetensors.torch import load_file, save_file
from torch import nn

from geodesic.core.params import flatten
from geodesic.core.train import scores, train
from geodesic.infra import files
from geodesic.store import cards, checkpoints, data, zoo

MLP = CKPT / "mlp-mnist.safetensors"


def copy_checkpoint(tmp_path, card=None, stem="x"):
    """mlp-mnist copied to tmp_path/<stem>.safetensors, with its card (or `card`: a dict, or raw text/bytes)."""
    dest = tmp_path / f"{stem}.safetensors"
    shutil.copy(MLP, dest)
    if card is None:
        shutil.copy(MLP.with_suffix(".json"), dest.with_suffix(".json"))
    elif isinstance(card, bytes):
        dest.with_suffix(".json").write_bytes(card)
    else:
        dest.with_suffix(".json").write_text(card if isinstance(card, str) else json.dumps(card))
    return dest


def mnist_card():
    return json.loads(MLP.with_suffix(".json").read_text())


# --- 1. a missing file --------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", [None, "mlp"])
def test_missing_checkpoint_says_no_such_file(tmp_path, model_name):
    with pytest.raises(cards.CheckpointError, match=r"nope\.safetensors: no such checkpoint file"):
        checkpoints.load(tmp_path / "nope.safetensors", model_name)


def test_a_folder_or_a_card_is_not_a_checkpoint(tmp_path):
    with pytest.raises(cards.CheckpointError, match="is a folder, not a checkpoint file"):
        checkpoints.load(tmp_path, "mlp")
    with pytest.raises(cards.CheckpointError, match="this is a card; give its .safetensors"):
        checkpoints.load(MLP.with_suffix(".json"))


# --- 2. malformed cards -------------------------------------------------------------------------


@pytest.mark.parametrize("card,message", [
    ("[]", "must be a JSON object {...}, not a list"),
    ("null", "not null"),
    ("3", "not the number 3"),
    ('"mlp"', "not the string 'mlp'"),
    ({"model": ["lenet60"]}, "field 'model' must be a string, not a list"),
    ({"model": "mlp", "dataset": 3}, "field 'dataset' must be a string, not the number 3"),
    ({"model": "mlp", "test_accuracy": "x"}, "field 'test_accuracy' must be a number, not the string 'x'"),
    ({"model": "mlp", "test_accuracy": 99.0}, r"'test_accuracy' must be a fraction in \[0, 1\]"),
    ({"model": "mlp", "test_accuracy": True}, "field 'test_accuracy' must be a number, not true"),
    ({"model": "mlp", "sha256": []}, "field 'sha256' must be a string, not a list"),
    ({"model": "mlp", "sha256": "abc"}, "field 'sha256' must be 64 hex digits"),
    ({"model": "mlp", "seed": "0"}, "field 'seed' must be an integer, not the string '0'"),
    ({"model": "mlp", "epochs": 2.5}, "field 'epochs' must be an integer"),
    ("{not json", "card is not valid JSON"),
    (b'{"model": "ml\xffp"}', "card is not UTF-8 text"),
])
def test_malformed_card_names_the_file_and_the_field(tmp_path, card, message):
    ckpt = copy_checkpoint(tmp_path, card)
    with pytest.raises(cards.CheckpointError, match=r"x\.json: .*" + message):
        checkpoints.load(ckpt)
    with pytest.raises(cards.CheckpointError, match=message):
        checkpoints.load(ckpt, "mlp")  # a model name does not excuse a broken card


def test_card_that_is_a_folder_or_unreadable(tmp_path, monkeypatch):
    shutil.copy(MLP, tmp_path / "x.safetensors")
    (tmp_path / "x.json").mkdir()
    with pytest.raises(cards.CheckpointError, match=r"x\.json: the card is a folder"):
        checkpoints.load(tmp_path / "x.safetensors")
    (tmp_path / "x.json").rmdir()
    (tmp_path / "x.json").write_text(json.dumps(mnist_card()))

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(cards.CheckpointError, match=r"x\.json: cannot read the card \(Permission denied\)"):
        checkpoints.load(tmp_path / "x.safetensors")


def test_card_without_a_model_and_a_card_that_contradicts_the_model_asked_for(tmp_path):
    card = {k: v for k, v in mnist_card().items() if k != "model"}
    ckpt = copy_checkpoint(tmp_path, card)
    with pytest.raises(cards.CheckpointError, match=r"its card \(x\.json\) names no model"):
        checkpoints.load(ckpt)
    assert checkpoints.load(ckpt, "mlp")[1]["model"] == "mlp"
    ckpt = copy_checkpoint(tmp_path, stem="y")
    with pytest.raises(cards.CheckpointError, match="says model 'mlp', but 'lenet60' was asked for"):
        checkpoints.load(ckpt, "lenet60")
    assert checkpoints.load(ckpt, "mlp")[1]["dataset"] == "mnist"


def test_card_extra_fields_are_kept(tmp_path):
    ckpt = copy_checkpoint(tmp_path, {**mnist_card(), "note": ["anything", 1], "seed": 0})
    assert checkpoints.load(ckpt)[1]["note"] == ["anything", 1]


# --- 3. a card that names the wrong dataset -----------------------------------------------------


def test_card_accuracy_is_checked_on_the_data_it_names(tmp_path):
    model, card = checkpoints.load(MLP)
    assert checkpoints.check_accuracy(model, card, data.load("mnist", "test", "bundled")) is None
    no_claim = {k: v for k, v in card.items() if k != "test_accuracy"}
    assert checkpoints.check_accuracy(model, no_claim, data.load("mnist", "test", "bundled")) is None
    # without a test_accuracy, a net near chance on the data asked for is questioned (an MNIST net on Fashion-MNIST)
    warning = checkpoints.check_accuracy(model, no_claim, data.load("fashion-mnist", "test", "bundled"))
    assert "near chance (10%): is the dataset right (its card says mnist)?" in warning

    lying = copy_checkpoint(tmp_path, {**card, "dataset": "fashion-mnist"})
    model, card = checkpoints.load(lying)
    warning = checkpoints.check_accuracy(model, card, data.load(card["dataset"], "test", "bundled"), name=lying.name)
    assert warning is not None and warning.startswith("x.safetensors measures ")
    assert "on fashion-mnist (2000 bundled test images), its card says 9" in warning
    assert warning.endswith("is the card's dataset right?")
    measured = float(warning.split("measures ")[1].split("%")[0])
    assert measured < 40

    # a dataset other than the card's (say, --dataset given by hand) is questioned instead
    model, card = checkpoints.load(MLP)
    warning = checkpoints.check_accuracy(model, card, data.load("fashion-mnist", "test", "bundled"))
    assert warning.startswith("this mlp measures") and warning.endswith("on mnist: is the dataset right?")
    assert checkpoints.check_accuracy(model, card, data.load("fashion-mnist", "test", "bundled"), tolerance=1.0) is None


# --- 4. where a training writes -----------------------------------------------------------------


def test_check_out_refuses_to_overwrite_unless_forced(tmp_path):
    out = tmp_path / "m.safetensors"
    assert checkpoints.check_out(out) == out
    for existing in (out, out.with_suffix(".json")):
        existing.write_text("keep me")
        with pytest.raises(ValueError, match=f"{existing.name} already exists; .*nothing was overwritten"):
            checkpoints.check_out(out)
        assert checkpoints.check_out(out, force=True) == out
        assert existing.read_text() == "keep me"
        existing.unlink()


def test_check_out_refuses_paths_it_cannot_write(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="afile is a file, not a folder"):
        checkpoints.check_out(tmp_path / "afile" / "sub" / "m.safetensors")
    with pytest.raises(ValueError, match="is a folder; give a checkpoint file name"):
        checkpoints.check_out(tmp_path)
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        checkpoints.check_out(tmp_path / "d.safetensors", force=True)
    (tmp_path / "c.json").mkdir()
    with pytest.raises(ValueError, match=r"c\.json is a folder, where the checkpoint's card would go"):
        checkpoints.check_out(tmp_path / "c.safetensors", force=True)
    for name in ("m.json", "m.pt", "m"):
        with pytest.raises(ValueError, match="must end in .safetensors"):
            checkpoints.check_out(tmp_path / name)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_check_out_refuses_a_folder_it_cannot_create():
    with pytest.raises(ValueError, match="cannot create the folder /proc/geodesic-nowhere"):
        checkpoints.check_out("/proc/geodesic-nowhere/m.safetensors")


def test_check_out_refuses_a_folder_it_cannot_write_in(tmp_path, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(ValueError, match=r"cannot write in .* \(Permission denied\)"):
        checkpoints.check_out(tmp_path / "m.safetensors")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes in read-only folders")
def test_check_out_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="cannot write in"):
            checkpoints.check_out(ro / "m.safetensors")
    finally:
        ro.chmod(0o755)


def test_check_out_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new" / "deeper" / "m.safetensors"
    assert checkpoints.check_out(out) == out
    assert list(tmp_path.iterdir()) == []  # the folders it made to try are gone; save makes them again
    checkpoints.save(zoo.build("mlp", seed=0), out, {"model": "mlp", "dataset": "mnist"})
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "m.safetensors"]


def test_interrupted_save_keeps_the_old_checkpoint_whole(tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    checkpoints.save(zoo.build("mlp", seed=0), out, {"model": "mlp", "dataset": "mnist"})
    before = out.read_bytes(), out.with_suffix(".json").read_bytes()

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a fi")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "save_file", half_written)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(zoo.build("mlp", seed=1), out, {"model": "mlp", "dataset": "mnist"})
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temp file left
    checkpoints.load(out)


def test_save_refuses_a_card_it_could_not_load_back(tmp_path):
    m = zoo.build("mlp", seed=0)
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        checkpoints.save(m, tmp_path / "m.safetensors", {"model": "mlp", "when": object()})
    with pytest.raises(cards.CheckpointError, match="field 'seed' must be an integer"):
        checkpoints.save(m, tmp_path / "m.safetensors", {"model": "mlp", "seed": "0"})
    with pytest.raises(ValueError, match="must not end in .json"):
        checkpoints.save(m, tmp_path / "m.json", {"model": "mlp"})
    assert list(tmp_path.iterdir()) == []


# --- 5. tensors of the wrong kind ---------------------------------------------------------------


def test_wrong_tensor_kinds_are_refused_with_the_file_and_the_tensor(tmp_path):
    t = load_file(str(MLP))
    bad = tmp_path / "b.safetensors"
    save_file({**t, "fc1.weight": (t["fc1.weight"] * 100).to(torch.int32)}, str(bad))
    with pytest.raises(cards.CheckpointError, match=r"b\.safetensors: weights do not match .*fc1.weight: not a float tensor \(torch.int32\)"):
        checkpoints.load(bad, "mlp")
    save_file({**t, "fc2.bias": t["fc2.bias"] > 0}, str(bad))
    with pytest.raises(cards.CheckpointError, match=r"fc2.bias: not a float tensor \(torch.bool\)"):
        checkpoints.load(bad, "mlp")
    save_file({**t, "extra": torch.zeros(2)}, str(bad))
    with pytest.raises(cards.CheckpointError, match=r"b\.safetensors: .*unexpected extra \(2,\)"):
        checkpoints.load(bad, "mlp")
    save_file({k: v for k, v in t.items() if k != "fc2.bias"}, str(bad))
    with pytest.raises(cards.CheckpointError, match=r"missing fc2.bias \(10,\)"):
        checkpoints.load(bad, "mlp")
    save_file({**t, "fc2.bias": torch.full((10,), float("nan"))}, str(bad))
    with pytest.raises(cards.CheckpointError, match=r"NaN or inf \(fc2.bias\)"):
        checkpoints.load(bad, "mlp")
    save_file({**t, "fc2.bias": torch.full((10,), 1e300, dtype=torch.float64)}, str(bad))
    with pytest.raises(cards.CheckpointError, match="NaN or inf"):  # beyond float32
        checkpoints.load(bad, "mlp")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_other_float_dtypes_load_as_float32(tmp_path, dtype):
    t = load_file(str(MLP))
    save_file({k: v.to(dtype) for k, v in t.items()}, str(tmp_path / "w.safetensors"))
    model, _ = checkpoints.load(tmp_path / "w.safetensors", "mlp")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.fc1.bias, t["fc1.bias"].to(dtype).float())


class TinyBN(nn.Module):
    """A net with BatchNorm buffers (running statistics, an int64 step count)."""

    prunable = ("fc1",)

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


def test_buffers_are_saved_and_loaded(tmp_path, monkeypatch):
    monkeypatch.setitem(zoo.ZOO, "tinybn", TinyBN)
    m = zoo.build("tinybn", seed=0)
    m.train()
    for _ in range(3):
        m(torch.rand(16, 1, 28, 28))  # moves running_mean/var, counts num_batches_tracked
    checkpoints.save(m, tmp_path / "bn.safetensors", {"model": "tinybn", "dataset": "mnist"})
    m2, _ = checkpoints.load(tmp_path / "bn.safetensors")
    for k, v in m.state_dict().items():
        assert m2.state_dict()[k].dtype == v.dtype and torch.equal(m2.state_dict()[k], v), k
    assert int(m2.bn.num_batches_tracked) == 3 and not m2.training

    t = load_file(str(tmp_path / "bn.safetensors"))
    save_file({**t, "bn.num_batches_tracked": t["bn.num_batches_tracked"].float()}, str(tmp_path / "f.safetensors"))
    with pytest.raises(cards.CheckpointError, match=r"bn.num_batches_tracked: not an integer tensor \(torch.float32\)"):
        checkpoints.load(tmp_path / "f.safetensors", "tinybn")


def test_shipped_checkpoints_keep_their_format():
    for ckpt in CKPT.glob("*.safetensors"):
        card = json.loads(ckpt.with_suffix(".json").read_text())
        model, loaded = checkpoints.load(ckpt)
        assert loaded["sha256"] == card["sha256"] == files.sha256_file(ckpt)
        assert set(load_file(str(ckpt))) == set(model.state_dict())


# --- data and training inputs -------------------------------------------------------------------


def test_damaged_bundled_subset_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "ASSETS", tmp_path)
    path = data.subset_path("mnist", "test")
    with pytest.raises(data.DataMissing, match="bundled mnist test subset .* is missing"):
        data.load("mnist", "test", "bundled")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"mnist-test-2000\.safetensors: damaged bundled subset, not a readable"):
        data.load("mnist", "test", "bundled")
    save_file({"images": torch.zeros(2000, 28, 28, dtype=torch.uint8)}, str(path))
    with pytest.raises(ValueError, match="damaged bundled subset: expected uint8 images"):
        data.load("mnist", "test", "bundled")
    save_file({"images": torch.zeros(2000, 28, 28), "labels": torch.zeros(2000, dtype=torch.uint8)}, str(path))
    with pytest.raises(ValueError, match=r"found \{'images': \(\(2000, 28, 28\), 'float32'\)"):
        data.load("mnist", "test", "bundled")
    save_file({"images": torch.zeros(2000, 28, 28, dtype=torch.uint8),
               "labels": torch.full((2000,), 10, dtype=torch.uint8)}, str(path))
    with pytest.raises(ValueError, match="labels"):
        data.load("mnist", "test", "bundled")


@pytest.mark.parametrize("call,message", [
    (lambda: data.load(["mnist"]), "unknown dataset"),
    (lambda: data.load(None), "unknown dataset"),
    (lambda: data.load("mnist", ["test"]), "unknown split"),
    (lambda: data.load_full("mnist", "val"), "unknown split"),
    (lambda: data.load_bundled("mnist", "val"), "unknown split"),
    (lambda: data.load("mnist", "test", "web"), "unknown source"),
])
def test_bad_dataset_arguments_get_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_damaged_idx_files_name_the_file(tmp_path):
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03")[:-12])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: cannot read the idx file"):
        data.read_idx(gz)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read the idx file"):
        data.read_idx(gz)
    with pytest.raises(ValueError, match="cannot read the idx file"):
        data.read_idx(tmp_path)


def test_training_refuses_what_cannot_train(mnist_test):
    m = zoo.build("mlp", seed=0)
    for kwargs, message in [({"epochs": 0}, "epochs must be a positive integer"),
                            ({"epochs": 1, "batch": 0}, "batch must be a positive integer"),
                            ({"epochs": 1, "lr": float("nan")}, "lr must be a positive finite"),
                            ({"epochs": 1, "lr": -1.0}, "lr must be a positive finite"),
                            ({"epochs": 1, "warmup": -1}, "warmup must be an integer >= 0")]:
        with pytest.raises(ValueError, match=message):
            train(m, mnist_test, seed=0, **kwargs)
    empty = data.Split(mnist_test.x[:0], mnist_test.y[:0], "mnist", "test", "bundled")
    with pytest.raises(ValueError, match="no training images"):
        train(m, empty, 1, 0)
    with pytest.raises(ValueError, match="no images to score"):
        scores(m, empty.x, empty.y)


def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine():
    from geodesic.core.train import schedule

    f, plain = schedule(100, warmup=10), schedule(100)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1 * plain(0), 0.5 * plain(4), plain(9)])
    assert all(f(s) == plain(s) for s in range(9, 100)) and plain(0) == 1.0 and plain(50) == pytest.approx(0.5)


def test_training_stops_when_the_loss_is_nan(mnist_test):
    m = zoo.build("mlp", seed=0)
    with torch.no_grad():
        m.fc2.bias[0] = float("nan")
    seen = []
    with pytest.raises(ValueError, match="training diverged: loss nan at step 1"):
        train(m, mnist_test, 1, 0, progress=lambda *a: seen.append(a))
    assert seen == [] and not m.training
    assert not torch.isfinite(flatten(m)).all()  # the caller sees why; nothing would be saved


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_outputs_that_are_not_finite_are_named_so_whichever_way_they_overflow(value):
    """A matmul that overflows gives inf or NaN depending on its kernel's order of sums: both read "not finite"
    (nan_to_num would otherwise turn inf into float32's largest value)."""
    class Overflowing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 10), value)

    with pytest.raises(cards.CheckpointError, match=r"x.safetensors: the net's outputs are not finite"):
        checkpoints.check_outputs(Overflowing(), Path("x.safetensors"))
