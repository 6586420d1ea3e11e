"""Export of the compact net: ONNX checked with onnxruntime against the zeroed net, safetensors + card loading back
through checkpoints.load, parameter counts, and lenet60 with 50 of its 60 filters zeroed."""

import io
import json
import zipfile

import onnx
import pytest
import torch
from test_groups import TinyResNet, tiny
from torch import nn

from geodesic.core.groups import coupled_groups
from geodesic.core.params import flatten
from geodesic.infra.lifecycle import Status
from geodesic.store import cards, checkpoints, compact, export, zoo
from geodesic.store.runs import RunWriter

# zeroed: stem+a2 channels 0 and 2, a1 channel 1, b1 channels 0, 1, 5, b2+proj channel 3
ZERO = {"stem": [0, 2], "a1": [1], "b1": [0, 1, 5], "b2": [3]}


def zero(w: torch.Tensor, groups, which: dict[str, list[int]]) -> torch.Tensor:
    w = w.clone()
    for g in groups:
        if g.index in which.get(g.layer, []):
            w[g.idx] = 0
    return w


def tiny_params(stem: int, a1: int, b1: int, b2: int) -> int:
    """Parameters of a TinyResNet with these widths (stem = a2's width, b2 = proj's)."""
    conv_bn = lambda cin, cout, k, bias=False: cout * cin * k * k + cout * bias + 2 * cout  # noqa: E731
    return (conv_bn(1, stem, 3) + conv_bn(stem, a1, 3) + conv_bn(a1, stem, 3) + conv_bn(stem, b1, 3, True)
            + conv_bn(b1, b2, 3) + conv_bn(stem, b2, 1) + b2 * 3 + 3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny net with ZERO zeroed, exported once (registered in the zoo as "tiny" for this module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(zoo.ZOO, "tiny", TinyResNet)
        m = tiny()
        groups = coupled_groups(m)
        w = zero(flatten(m), groups, ZERO)
        out = tmp_path_factory.mktemp("tiny-export")
        report = export.export((m, w, groups), out, batches=(1, 8), repeats=2)
        yield m, w, groups, out, report


def test_onnx_matches_the_zeroed_net_through_onnxruntime(exported):
    m, w, _, out, report = exported
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    zeroed = compact.zeroed(m, w)
    for batch in (1, 5):  # the batch axis is dynamic
        x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = zeroed(x)
        got = export.run_onnx(out / "model.onnx", x)
        assert got.shape == want.shape and (got - want).abs().max() <= 1e-4
    assert report["max_abs_diff"]["onnxruntime"] <= 1e-4 and report["max_abs_diff"]["torch"] <= 1e-4


def test_safetensors_and_card_load_back_as_the_compact_net(exported):
    m, w, _, out, report = exported
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(zoo.ZOO, "tiny", TinyResNet)
        small, card = checkpoints.load(out / "model.safetensors")
        assert len(zoo.filter_groups(small)) == 20 - 7  # a compact net has groups of its own
    assert card["model"] == "tiny" and card["compact"] is True
    assert card["removed"] == {"stem": [0, 2], "a1": [1], "b1": [0, 1, 5], "b2": [3]}
    assert card["widths"] == {"stem": 2, "stem_bn": 2, "a1": 3, "a1_bn": 3, "a2": 2, "a2_bn": 2, "b1": 3,
                              "b1_bn": 3, "b2": 5, "b2_bn": 5, "proj": 5, "proj_bn": 5, "head": 3}
    assert card["shapes"]["b2.weight"] == [5, 3, 3, 3] and card["shapes"]["head.weight"] == [3, 5]
    assert small.stem.out_channels == 2 and small.b2.in_channels == 3 and small.head.in_features == 5
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        assert (small(x) - compact.zeroed(m, w)(x)).abs().max() <= 1e-4
    # the shipped card stays a card checkpoints.load accepts; a broken "removed" is refused with its name
    cpath = out / "model.json"
    bad = json.loads(cpath.read_text())
    bad["removed"] = {"nope": [0]}
    broken = out.parent / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    (broken / "model.json").write_text(json.dumps(bad))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(zoo.ZOO, "tiny", TinyResNet)
        with pytest.raises(cards.CheckpointError, match="'removed' names 'nope'"):
            checkpoints.load(broken / "model.safetensors")


def test_parameters_and_flops_shrink_as_expected(exported):
    m, _, groups, _, report = exported
    assert report["groups"] == len(groups) == 20 and report["groups_removed"] == 7
    assert report["dense"]["parameters"] == tiny_params(4, 4, 6, 6) == compact.parameters(m)
    assert report["compact"]["parameters"] == tiny_params(2, 3, 3, 5)
    assert report["compact"]["flops"] < report["dense"]["flops"]
    assert set(report["dense"]["latency_ms"]) == set(report["compact"]["latency_ms"]) == {"1", "8"}
    assert "| parameters |" in export.markdown(report)


def test_export_refuses_to_overwrite(exported):
    m, w, groups, out, _ = exported
    with pytest.raises(export.ExportError, match="already exist"):
        export.export((m, w, groups), out)


def test_a_root_whose_groups_are_all_zero_keeps_one_zero_channel():
    m = tiny()
    groups = coupled_groups(m)
    w = zero(flatten(m), groups, {"a1": [0, 1, 2, 3]})
    assert compact.removed_channels(w, groups) == {"a1": [1, 2, 3]}
    small = compact.compact(m, w, groups)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert small.a1.out_channels == 1 and (small(x) - compact.zeroed(m, w)(x)).abs().max() <= 1e-4


class SigmoidNet(nn.Module):
    """conv → sigmoid → conv: sigmoid(0) = ½, so a zeroed filter is not a removable one."""

    input_shape = (1, 6, 6)

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 3, 3), nn.Conv2d(3, 2, 3), nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.c2(torch.sigmoid(self.c1(x))).mean((2, 3)))


def test_export_refuses_a_net_whose_zero_channel_is_not_zero_downstream(tmp_path):
    m = SigmoidNet()
    groups = coupled_groups(m)
    w = zero(flatten(m), groups, {"c1": [1]})
    with pytest.raises(export.ExportError, match="not exactly zero"):
        export.export((m, w, groups), tmp_path / "out", batches=())
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_lenet60_with_50_of_60_filters_zeroed(tmp_path):
    """A sparsify run's final net (just zeroed, no walk) exported from its run folder, as the CLI does."""
    model = zoo.build("lenet60", seed=0)
    groups = zoo.filter_groups(model)
    w0 = flatten(model)
    w = zero(w0, groups, {"conv1": list(range(15)), "conv2": list(range(5, 40))})  # 5 + 5 filters stay
    writer = RunWriter({"kind": "sparsify", "model": "lenet60", "dataset": "mnist"}, root=tmp_path)
    writer.begin(model, w0)
    writer.finish(Status.ARRIVED, w, {"accuracy": 0.5})
    images = torch.rand(32, 1, 28, 28)
    blob, report = export.export_zip(writer.dir, images)  # what the app's download button serves
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        assert sorted(z.namelist()) == ["model.json", "model.onnx", "model.safetensors"]
        z.extractall(tmp_path / "out")
    # conv1 5×(25+1), conv2 5×(5·25+1), fc1 (5·16)×100+100, fc2 100×10+10
    expected = 5 * 26 + 5 * 126 + 80 * 100 + 100 + 1010
    assert report["compact"]["parameters"] <= expected == 9870 and report["dense"]["parameters"] == 85670
    assert report["groups_removed"] == 50 and report["compact"]["flops"] < report["dense"]["flops"] / 10
    small, card = checkpoints.load(tmp_path / "out" / "model.safetensors")
    assert card["run"] == writer.id and card["dataset"] == "mnist" and compact.parameters(small) == 9870
    with torch.no_grad():
        want = compact.zeroed(model, w)(images)
        assert (small(images) - want).abs().max() <= 1e-4
    assert (export.run_onnx(tmp_path / "out" / "model.onnx", images) - want).abs().max() <= 1e-4
