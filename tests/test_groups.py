"""Coupled channel groups: which channels go together (a tiny residual net with BatchNorm, listed by hand), exact
zeros after zeroing a group (forward hooks), and mlp / lenet60 keeping the groups they always had."""

import pytest
import torch
from torch import nn

from geodesic.core.groups import coupled_groups
from geodesic.core.params import flatten, load_flat, output_unit_groups, spec_of
from geodesic.store import zoo


class Add(nn.Module):
    """A residual sum as a module, so that a forward hook sees it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class TinyResNet(nn.Module):
    """stem conv-BN-ReLU (4) → block A (identity shortcut) → block B (stride 2, 1×1 projection + BN, 6) → pool →
    fc 3.

    Block A adds a2_bn to the stem's output: stem and a2 channel c are one group. Block B adds b2_bn to proj_bn:
    b2 and proj channel c are one group. a1 and b1 are coupled to nothing. The head is the classifier."""

    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.a1, self.a1_bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.a2, self.a2_bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.add_a = Add()
        self.b1, self.b1_bn = nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6)  # with a bias
        self.b2, self.b2_bn = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.proj, self.proj_bn = nn.Conv2d(4, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6)
        self.add_b = Add()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        h = torch.relu(self.a1_bn(self.a1(x)))
        x = torch.relu(self.add_a(self.a2_bn(self.a2(h)), x))
        h = torch.relu(self.b1_bn(self.b1(x)))
        x = torch.relu(self.add_b(self.b2_bn(self.b2(h)), self.proj_bn(self.proj(x))))
        return self.head(x.mean((2, 3)))


# name → (layer, width, the producer parameters whose channel-c slice the group holds, module outputs that are 0)
EXPECTED = {
    "stem+a2": ("stem", 4, ["stem.weight", "stem_bn.weight", "stem_bn.bias", "a2.weight", "a2_bn.weight",
                            "a2_bn.bias"], ["stem", "stem_bn", "a2", "a2_bn", "add_a"]),
    "a1": ("a1", 4, ["a1.weight", "a1_bn.weight", "a1_bn.bias"], ["a1", "a1_bn"]),
    "b1": ("b1", 6, ["b1.weight", "b1.bias", "b1_bn.weight", "b1_bn.bias"], ["b1", "b1_bn"]),
    "b2+proj": ("b2", 6, ["b2.weight", "b2_bn.weight", "b2_bn.bias", "proj.weight", "proj_bn.weight",
                          "proj_bn.bias"], ["b2", "b2_bn", "proj", "proj_bn", "add_b"]),
}


def tiny(seed: int = 0) -> TinyResNet:
    """A TinyResNet whose BatchNorms are far from the identity (random γ, β and running statistics)."""
    torch.manual_seed(seed)
    m = TinyResNet()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    return m.eval()


def rows(spec, name: str, c: int) -> torch.Tensor:
    shape = spec.shapes[spec.names.index(name)]
    per, start = shape[1:].numel(), spec.slice(name).start
    return torch.arange(start + c * per, start + (c + 1) * per)


def test_tiny_resnet_groups_are_the_hand_listed_ones():
    m = tiny()
    spec, groups = spec_of(m), coupled_groups(m)
    want = [(f"{name}[{c}]", layer, c, torch.cat([rows(spec, p, c) for p in params]).sort().values)
            for name, (layer, width, params, _) in EXPECTED.items() for c in range(width)]
    # definition order of the roots: stem, a1, b1, b2; the head (the logits) is no group
    want.sort(key=lambda t: (["stem", "a1", "b1", "b2"].index(t[1]), t[2]))
    assert [(g.name, g.layer, g.index) for g in groups] == [t[:3] for t in want]
    for g, (_, _, _, idx) in zip(groups, want):
        assert torch.equal(g.idx, idx), g.name
    # no consumer slice: the input columns of a1/b1/proj (stem's consumers) and of the head stay out
    covered = torch.zeros(spec.n, dtype=torch.bool)
    for g in groups:
        covered[g.idx] = True
    assert not covered[spec.slice("head.weight")].any() and not covered[spec.slice("head.bias")].any()
    assert int(covered.sum()) == sum(g.idx.numel() for g in groups)  # disjoint


def test_groups_leave_the_model_alone():
    m = tiny()
    for p in m.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    coupled_groups(m)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def zero_outputs(m: nn.Module, w, g, watch: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each watched module's output, with the group zeroed in w."""
    w = w.clone()
    w[g.idx] = 0
    load_flat(m, w)
    seen, modules = {}, dict(m.named_modules())
    hooks = [modules[n].register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o.detach()))
             for n in watch]
    try:
        with torch.no_grad():
            m(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("train_mode", [False, True])
def test_a_zeroed_group_is_exactly_zero_everywhere(train_mode):
    m = tiny()
    w, x = flatten(m), torch.randn(16, 1, 8, 8) * 3
    m.train(train_mode)  # eval: running statistics; train: the batch's own
    for g in coupled_groups(m):
        watch = EXPECTED[g.name.split("[")[0]][3]
        seen = zero_outputs(m, w, g, watch, x)
        assert set(seen) == set(watch)
        for n, out in seen.items():
            assert out[:, g.index].abs().max() == 0, f"{g.name}: {n} is not exactly 0"
            others = [c for c in range(out.shape[1]) if c != g.index]
            assert out[:, others].abs().amax((0, 2, 3)).min() > 0  # the hooks see live values elsewhere


def test_resnet8_groups_and_exact_zeros():
    m = zoo.ResNet8()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.bias.data.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-1, 1)
    m.eval()
    groups = coupled_groups(m)
    assert len(groups) == 2 * (16 + 32 + 64)
    assert {g.name.split("[")[0] for g in groups} == {
        "conv1+layer1.conv2", "layer1.conv1", "layer2.conv1", "layer2.conv2+layer2.shortcut.0", "layer3.conv1",
        "layer3.conv2+layer3.shortcut.0"}
    first = groups[0]
    assert first.name == "conv1+layer1.conv2[0]" and first.idx.numel() == 9 + 2 + 16 * 9 + 2  # convs, BN γ/β
    spec, w, x = spec_of(m), flatten(m), torch.rand(4, 1, 28, 28)
    mods = dict(m.named_modules())
    for g in groups[::23]:  # every stage: each conv/BN whose channel-g slices are all in the group is 0 there,
        watch = [n for n, mod in mods.items() if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d))
                 and set(rows(spec, f"{n}.weight", g.index).tolist()) <= set(g.idx.tolist())]
        watch += [n.rsplit(".", 1)[0] for n in watch if n.endswith("conv2")]  # and the block's output (ReLU of the sum)
        assert len(watch) >= 2
        for n, out in zero_outputs(m, w, g, watch, x).items():
            assert out[:, g.index].abs().max() == 0, f"{g.name}: {n}"


@pytest.mark.parametrize("name", ["mlp", "lenet60"])
def test_mlp_and_lenet60_keep_their_groups(name):
    m = zoo.build(name, seed=0)
    old, new = output_unit_groups(m, list(m.prunable)), zoo.filter_groups(m)
    assert [(g.name, g.layer, g.index) for g in new] == [(g.name, g.layer, g.index) for g in old]
    assert all(torch.equal(a.idx, b.idx) for a, b in zip(old, new))
    assert len(new) == {"mlp": 32, "lenet60": 60}[name]
