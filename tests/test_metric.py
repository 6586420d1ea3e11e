"""J three ways against torch.func.jacrev over the stacked outputs; distance and its gradient."""

import math

import pytest
import torch
from torch import nn
from torch.func import jacrev

from geodesic.core import layers, metric
from geodesic.core.params import flatten
from geodesic.store import zoo


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here: on shared, busy cores these many small products run ~10× faster than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def oracle_J(model, w, x, phi):
    """jacrev of the whole stacked, 1/√B-scaled output vector: no per-sample tricks."""
    return jacrev(lambda w_: metric.scaled_outputs(model, w_, x, phi))(w)


@pytest.fixture(scope="module", params=["mlp", "lenet60"])
def net(request):
    torch.manual_seed(0)
    m = zoo.build(request.param, seed=1).eval()
    return m, flatten(m), torch.rand(3, 1, 28, 28)


@pytest.mark.parametrize("phi", sorted(metric.OUTPUT_MAPS))
def test_jacobians_match_jacrev(net, phi):
    m, w, x = net
    J0 = oracle_J(m, w, x, phi)
    assert J0.shape == (3 * 10, w.numel())
    scale = J0.abs().max()
    assert torch.allclose(metric.jacobian(m, w, x, phi), J0, atol=1e-6 * scale, rtol=1e-5)
    assert torch.allclose(metric.jacobian_fast(m, w, x, phi), J0, atol=1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("phi", ["logits", "sqrt_probs"])
def test_metric_operator_matches_explicit_J(net, phi):
    m, w, x = net
    J = oracle_J(m, w, x, phi).double()
    M = metric.Metric(m, w, x, phi)
    K = M.gram()
    assert torch.allclose(K, J @ J.T, rtol=1e-5, atol=1e-6 * float((J @ J.T).abs().max()))
    g = torch.Generator().manual_seed(0)
    theta, u = torch.randn(w.numel(), generator=g), torch.randn(J.shape[0], generator=g)
    assert torch.allclose(M.jvp(theta).double(), J @ theta.double(), rtol=1e-4, atol=1e-5)
    K2, Jv = M.gram_jvp(theta)  # Jθ from the layer pass that builds K
    assert torch.equal(K2, K) and torch.allclose(Jv.double(), J @ theta.double(), rtol=1e-4, atol=1e-5)
    assert torch.allclose(M.vjp(u).double(), J.T @ u.double(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(M.G(theta).double(), J.T @ (J @ theta.double()), rtol=1e-3, atol=1e-5)


def test_functional_distance_is_real_not_linearized():
    m = zoo.build("mlp", seed=0).eval()
    w = flatten(m)
    x = torch.rand(5, 1, 28, 28)
    w2 = w + 0.3 * torch.randn_like(w)
    phi = metric.output_map("probs")
    with torch.no_grad():
        expect = (phi(m(x)) - phi(metric.model_fn(m)(w2, x))).pow(2).sum(1).mean()
    assert math.isclose(metric.functional_distance(m, w2, w, x, "probs"), float(expect), rel_tol=1e-5)
    assert metric.functional_distance(m, w, w, x) == 0.0


def test_distance_is_second_order_in_the_metric():
    """D(w + tθ, w) ≈ t² |Jθ|² for small t: the metric is the Hessian of D (÷2) at w."""
    m = zoo.build("mlp", seed=0).eval()
    w, x = flatten(m), torch.rand(8, 1, 28, 28)
    theta = torch.randn_like(w)
    theta /= theta.norm()
    J = oracle_J(m, w, x, "sqrt_probs")
    for t in (1e-2, 3e-3):
        d = metric.functional_distance(m, w + t * theta, w, x, "sqrt_probs")
        assert math.isclose(d, t**2 * float((J @ theta).pow(2).sum()), rel_tol=0.05)


def test_distance_grad_matches_finite_difference():
    m = zoo.build("mlp", seed=0).eval()
    w, x = flatten(m).double(), torch.rand(4, 1, 28, 28).double()
    m = m.double()
    w_ref = w + 0.05 * torch.randn_like(w)
    g = metric.distance_grad(m, w, w_ref, x, "probs")
    d = torch.randn_like(w)
    h = 1e-5
    fd = (metric.functional_distance(m, w + h * d, w_ref, x, "probs") - metric.functional_distance(m, w - h * d, w_ref, x, "probs")) / (2 * h)
    assert math.isclose(float(g @ d), fd, rel_tol=1e-4)


def test_unknown_output_map():
    with pytest.raises(ValueError, match="output map"):
        metric.output_map("softplus")


def test_metric_restricted_to_free_coordinates(net):
    """K, Jθ, Jᵀu with frozen coordinates equal J·diag(free) formed explicitly: partial and whole layers."""
    m, w, x = net
    J = oracle_J(m, w, x, "sqrt_probs").double()
    free = torch.rand(w.numel(), generator=torch.Generator().manual_seed(1)) > 0.3
    first = list(m.named_parameters())[0][1].numel()
    free[:first] = False  # a whole weight tensor frozen too
    Jf = J * free.double()
    M = metric.Metric(m, w, x, "sqrt_probs", free=free)
    assert torch.allclose(M.gram(), Jf @ Jf.T, rtol=1e-5, atol=1e-6 * float((Jf @ Jf.T).abs().max()))
    theta, u = torch.randn(w.numel()), torch.randn(J.shape[0])
    assert torch.allclose(M.jvp(theta).double(), Jf @ theta.double(), rtol=1e-4, atol=1e-5)
    assert torch.allclose(M.gram_jvp(theta)[1].double(), Jf @ theta.double(), rtol=1e-4, atol=1e-5)
    out = M.vjp(u)
    assert torch.all(out[~free] == 0) and torch.allclose(out.double(), Jf.T @ u.double(), rtol=1e-4, atol=1e-6)


# --- more layer types: each tiny net against jacrev of the stacked outputs ------------------------------------


def randomize_batchnorm(model, seed=0):
    """Non-trivial running statistics and affine parameters, so that x̂ ≠ x and γ ≠ 1."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
            mod.running_var.copy_(0.5 + 1.5 * torch.rand(mod.num_features, generator=g))
            if mod.affine:
                mod.weight.data.copy_(0.5 + torch.rand(mod.num_features, generator=g))
                mod.bias.data.copy_(0.6 * torch.rand(mod.num_features, generator=g) - 0.3)
    return model


class StridedConvs(nn.Module):
    """Stride, padding, dilation, non-square kernels, 'same' padding with reflection, with and without bias."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, stride=2, padding=2, dilation=2)
        self.c2 = nn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(1, 0), bias=False)
        self.c3 = nn.Conv2d(4, 4, 3, padding="same", padding_mode="reflect")
        self.fc = nn.Linear(4 * 5 * 2, 5)

    def forward(self, x):
        x = torch.tanh(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
        return self.fc(torch.flatten(x, 1))


class GroupedConvs(nn.Module):
    """A grouped conv (groups=2) and a depthwise conv (groups = channels), then max-pooling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3)
        self.grouped = nn.Conv2d(4, 6, 3, groups=2)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.relu(self.c1(x))))
        return self.fc(torch.flatten(nn.functional.max_pool2d(torch.tanh(self.depthwise(x)), 2), 1))


class ConvBN(nn.Module):
    """BatchNorm2d after a conv (bias-free), one without affine parameters, adaptive average pooling."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3)
        self.bn_plain = nn.BatchNorm2d(3, affine=False)
        self.fc = nn.Linear(3, 5)

    def forward(self, x):
        x = self.bn_plain(self.conv2(torch.relu(self.bn(self.conv(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class LinearBN(nn.Module):
    """BatchNorm1d after a Linear layer; a Linear layer on 3-D input (B, tokens, features) with a BatchNorm1d
    over its (B, C, L) output."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Linear(9, 4)
        self.bn_tok = nn.BatchNorm1d(9)
        self.fc1 = nn.Linear(9 * 4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 5)

    def forward(self, x):
        t = self.bn_tok(self.tok(x.reshape(x.shape[0], 9, 9)))  # (B, 9 tokens, 4); BN over 9 "channels"
        return self.fc2(torch.relu(self.bn(self.fc1(t.flatten(1)))))


class Residual(nn.Module):
    """A residual block as torchvision writes it: 1×1 projection shortcut + BN, in-place ReLU, `out += shortcut`."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.down = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = self.relu(self.stem(x))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.down(x)
        out = self.relu(out)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class Pools(nn.Module):
    """Average, max, adaptive average and adaptive max pooling between convs; nn.Flatten."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 2 * 2 * 2, 5)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.relu(self.c1(x)), 2, ceil_mode=True)  # 9 -> 5
        x = nn.functional.max_pool2d(self.c2(x), 2, stride=1)  # 4 -> 3
        a, b = nn.functional.adaptive_avg_pool2d(x, 2), nn.functional.adaptive_max_pool2d(x, 2)
        return self.fc(self.flat(torch.cat([a, b], 1)))


def resnet8():
    return zoo.ResNet8()


NETS = {"strided": (StridedConvs, (3, 1, 9, 9)), "grouped": (GroupedConvs, (3, 1, 9, 9)),
        "conv_bn": (ConvBN, (3, 1, 9, 9)), "linear_bn": (LinearBN, (3, 1, 9, 9)), "residual": (Residual, (3, 1, 8, 8)),
        "pools": (Pools, (3, 1, 9, 9)), "resnet8": (resnet8, (2, 1, 28, 28))}


@pytest.fixture(scope="module", params=sorted(NETS))
def layer_net(request):
    cls, shape = NETS[request.param]
    torch.manual_seed(3)
    m = randomize_batchnorm(cls()).eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    w = flatten(m)
    return m, w, x, oracle_J(m, w, x, "sqrt_probs").double()


def close(a, b, rtol=1e-5):
    """Entrywise within rtol of the reference's largest entry (float32 products against jacrev)."""
    return float((a.double() - b).abs().max()) <= rtol * float(b.abs().max())


def test_layer_types_jacobian_fast(layer_net):
    m, w, x, J = layer_net
    assert J.abs().max() > 0 and close(metric.jacobian_fast(m, w, x, "sqrt_probs"), J)


@pytest.mark.parametrize("route", ["auto", "explicit", "gram"])
@pytest.mark.parametrize("block_bytes", [metric.BLOCK_BYTES, 256])
def test_layer_types_gram_jvp(layer_net, route, block_bytes):
    """K and Jv by every route, unchunked and in chunks of 256 bytes (64 entries: one output channel or less)."""
    m, w, x, J = layer_net
    v = torch.randn(w.numel(), generator=torch.Generator().manual_seed(5))
    M = metric.Metric(m, w, x, "sqrt_probs", block_bytes=block_bytes, route=route)
    K, Jv = M.gram_jvp(v)
    assert close(K, J @ J.T) and close(Jv, J @ v.double(), 1e-4)
    u = torch.randn(J.shape[0], generator=torch.Generator().manual_seed(8))
    pulled = M.vjp(u)  # from gram_jvp's tape: no backward pass, and no graph left behind
    assert close(pulled, J.T @ u.double(), 1e-4) and not pulled.requires_grad
    assert set(M.routes) == {name for name, mod in m.named_modules() if list(mod.parameters(recurse=False))}
    if route != "auto":
        kinds = {r for layer, r in M.routes.items() if isinstance(m.get_submodule(layer), (nn.Linear, nn.Conv2d))
                 and getattr(m.get_submodule(layer), "groups", 1) == 1}
        assert kinds == {route}


@pytest.mark.parametrize("min_t", [1, 10**9])
def test_layer_types_both_ways_to_conv_blocks(layer_net, min_t, monkeypatch):
    """Every one-group convolution's blocks by the convolution's weight-gradient kernel (min_t 1: stride,
    dilation, 'same' reflect padding, bias or none) and by unfold + matmul (min_t huge), whole and in chunks."""
    m, w, x, J = layer_net
    monkeypatch.setattr(layers, "CONV_BLOCKS_MIN_T", min_t)
    assert close(metric.jacobian_fast(m, w, x, "sqrt_probs"), J)
    v = torch.randn(w.numel(), generator=torch.Generator().manual_seed(5))
    for block_bytes in (metric.BLOCK_BYTES, 256):
        K, Jv = metric.Metric(m, w, x, "sqrt_probs", block_bytes=block_bytes, route="explicit").gram_jvp(v)
        assert close(K, J @ J.T) and close(Jv, J @ v.double(), 1e-4)


def test_layer_types_free_mask(layer_net):
    """J·diag(free): coordinates frozen at random in the first half of w, a whole tensor frozen, the second
    half free (so that some layers keep the Gram route and others are masked chunk by chunk)."""
    m, w, x, J = layer_net
    n = w.numel()
    free = torch.rand(n, generator=torch.Generator().manual_seed(6)) > 0.3
    free[n // 2 :] = True
    free[: list(m.parameters())[0].numel()] = False
    Jf = J * free.double()
    v = torch.randn(n, generator=torch.Generator().manual_seed(7))
    for block_bytes in (metric.BLOCK_BYTES, 256):
        M = metric.Metric(m, w, x, "sqrt_probs", free=free, block_bytes=block_bytes)
        K, Jv = M.gram_jvp(v)
        assert close(K, Jf @ Jf.T) and close(Jv, Jf @ v.double(), 1e-4)
        u = torch.randn(J.shape[0], generator=torch.Generator().manual_seed(9))
        out = M.vjp(u)
        assert torch.all(out[~free] == 0) and close(out, Jf.T @ u.double(), 1e-4)


@pytest.mark.parametrize("phi", sorted(metric.OUTPUT_MAPS))
@pytest.mark.parametrize("name", ["conv_bn", "residual"])
def test_rows_of_each_output_map(name, phi):
    """K, Jv and Jᵀu for every output map. √softmax and softmax keep Σ_c y_c² resp. Σ_c y_c fixed, so the tape
    works in m − 1 rows per sample (row_basis) and maps back; the logits keep all m rows."""
    cls, shape = NETS[name]
    torch.manual_seed(3)
    m = randomize_batchnorm(cls()).eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    w = flatten(m)
    J = oracle_J(m, w, x, phi).double()
    g = torch.Generator().manual_seed(5)
    v, u = torch.randn(w.numel(), generator=g), torch.randn(J.shape[0], generator=g)
    M = metric.Metric(m, w, x, phi)
    K, Jv = M.gram_jvp(v)
    assert close(K, J @ J.T) and close(Jv, J @ v.double(), 1e-4) and close(M.vjp(u), J.T @ u.double(), 1e-4)
    tape = metric.LayerTape(m, w, x, phi, reduce=True)
    B, k = x.shape[0], tape.m
    assert tape.rows == (k if phi == "logits" else k - 1)
    if tape.Q is not None:  # an orthonormal basis of the directions the outputs can move in
        Q = tape.Q.double()
        assert torch.allclose(Q @ Q.transpose(1, 2), torch.eye(k - 1, dtype=torch.float64).expand(B, -1, -1), atol=1e-6)
        Jb = J.view(B, k, -1)  # the dropped direction's row of J is zero: J_bᵀJ_b = (Q_bJ_b)ᵀ(Q_bJ_b)
        assert close(torch.einsum("bjc,bcn->bjn", Q, Jb).pow(2).sum(), Jb.pow(2).sum(), 1e-6)


def test_chunks_respect_the_budget():
    """Every explicit chunk holds at most the budget's entries, or one output channel's when that alone is more."""
    torch.manual_seed(0)
    m = randomize_batchnorm(GroupedConvs()).eval()
    w, x = flatten(m), torch.rand(3, 1, 9, 9)
    tape = metric.LayerTape(m, w, x, "logits")
    for layer, gs in tape.output_grads().items():
        pieces = list(tape.blocks(layer, gs, max_elems=200))
        cols = torch.cat([idx for idx, _, _ in pieces])
        assert torch.equal(cols.sort().values, tape.columns(layer))  # every column exactly once
        mod = tape.layers[layer]
        one_channel = 15 * (mod.weight[0].numel() + (mod.bias is not None))  # k = 3·5 rows
        assert all(Jc.numel() <= max(200, one_channel) for _, Jc, _ in pieces)
        if isinstance(mod, nn.Conv2d):
            assert len(pieces) > 1


def test_route_rule_prefers_the_gram_trick_for_few_positions_and_many_weights():
    """Late ResNet-style convs (4×4 outputs, 256 → 256 channels) take the Gram trick, early ones (28×28) not."""
    late = nn.Sequential(nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(256 * 16, 10)).eval()
    early = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 28 * 28, 10)).eval()
    for net, x, want in ((late, torch.rand(32, 256, 4, 4), "gram"), (early, torch.rand(32, 1, 28, 28), "explicit")):
        tape = metric.LayerTape(net, flatten(net), x, "logits")
        assert tape.route("0", metric.BLOCK_BYTES // 4) == want


@pytest.mark.parametrize("route", ["explicit", "gram"])
def test_small_rank_deficient_metric_keeps_an_exact_null_space(route):
    """k = 8 rows, n = 2 weights: K has rank 2 and its other eigenvalues must be zero to float64 rounding (small
    layers are summed in float64 on both routes), since the tangent solver's rank test reads them."""
    net = nn.Sequential(nn.Linear(2, 1, bias=False), nn.Tanh())
    t = torch.linspace(-1.5, 1.5, 8)
    x = torch.stack([t, t**2], 1)
    lam = torch.linalg.eigvalsh(metric.Metric(net, torch.tensor([1.0, 0.5]), x, "logits", route=route).gram())
    assert lam[-2] > 0 and float(lam[:-2].abs().max()) <= 1e-12 * float(lam[-1])


def test_unsupported_layer_names_its_type():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LayerNorm(2 * 7 * 7), nn.Linear(2 * 7 * 7, 3)).eval()
    with pytest.raises(NotImplementedError, match=r"LayerNorm.*Linear, Conv2d"):
        metric.jacobian_fast(net, flatten(net), torch.rand(2, 1, 9, 9))


def test_batchnorm_in_training_mode_is_refused():
    m = ConvBN()  # training mode: batch statistics couple the samples
    with pytest.raises(ValueError, match="eval"):
        metric.Metric(m, flatten(m), torch.rand(3, 1, 9, 9)).gram()


def test_a_layer_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(torch.tanh(self.fc(x)))

    m = Twice()
    with pytest.raises(NotImplementedError, match="more than once"):
        metric.jacobian_fast(m, flatten(m), torch.rand(2, 4))
    with pytest.raises(ValueError, match="route"):
        metric.Metric(m, flatten(m), torch.rand(2, 4), route="fast")


# --- one rule per layer type (layers.py): each rule alone against jacrev --------------------------------------


class Readout(nn.Module):
    """The layer under test on x (B, *in_shape), then a fixed parameter-free readout to 5 outputs: tanh, flatten and
    a random buffer P, so that every parameter of the net is the layer's and every output depends on every
    position."""

    def __init__(self, layer, in_shape):
        super().__init__()
        self.layer = randomize_batchnorm(layer).eval()
        with torch.no_grad():
            n = self.layer(torch.zeros(1, *in_shape)).numel()
        self.register_buffer("P", torch.randn(n, 5, generator=torch.Generator().manual_seed(2)) / n**0.5)

    def forward(self, x):
        return torch.tanh(self.layer(x)).flatten(1) @ self.P


RULE_CASES = {  # id: (the layer, one sample's input shape)
    "linear": (lambda: nn.Linear(6, 4), (6,)),
    "linear-nobias": (lambda: nn.Linear(6, 4, bias=False), (6,)),
    "linear-tokens": (lambda: nn.Linear(6, 4), (3, 6)),  # (B, tokens, features): T = 3 positions
    "linear-tokens-nobias": (lambda: nn.Linear(6, 4, bias=False), (2, 3, 6)),
    "conv": (lambda: nn.Conv2d(2, 3, 3), (2, 6, 6)),
    "conv-nobias": (lambda: nn.Conv2d(2, 3, 3, bias=False), (2, 6, 6)),
    "conv-pad2-stride2": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=2), (2, 7, 7)),
    "conv-rect-dilation": (lambda: nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), (2, 7, 6)),
    "conv-same": (lambda: nn.Conv2d(2, 3, (3, 4), padding="same"), (2, 6, 6)),
    "conv-valid-nobias": (lambda: nn.Conv2d(2, 3, 3, padding="valid", bias=False), (2, 6, 6)),
    "conv-same-reflect": (lambda: nn.Conv2d(2, 3, 3, padding="same", padding_mode="reflect"), (2, 6, 6)),
    "conv-circular-stride2": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="circular"), (2, 7, 7)),
    "conv-replicate-nobias": (lambda: nn.Conv2d(2, 3, 2, padding=(1, 2), padding_mode="replicate", bias=False),
                              (2, 5, 5)),
    "conv-groups": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 5, 5)),
    "conv-depthwise-nobias": (lambda: nn.Conv2d(4, 4, 3, stride=2, dilation=2, groups=4, bias=False), (4, 7, 7)),
    "conv-groups-reflect": (lambda: nn.Conv2d(4, 6, 3, padding=2, padding_mode="reflect", groups=2), (4, 5, 5)),
    "bn1d": (lambda: nn.BatchNorm1d(6), (6,)),
    "bn1d-sequence": (lambda: nn.BatchNorm1d(4), (4, 5)),
    "bn2d": (lambda: nn.BatchNorm2d(3), (3, 4, 4)),
    "bn3d": (lambda: nn.BatchNorm3d(2), (2, 3, 2, 3)),
}


def test_every_rule_has_a_jacrev_case():
    """Adding a rule means adding its case above: the cases cover every registered layer type."""
    covered = {type(layers.rule_for(make())) for make, _ in RULE_CASES.values()}
    assert covered == {type(rule) for rule in layers.RULES.values()}


@pytest.fixture(scope="module", params=sorted(RULE_CASES))
def rule_net(request):
    make, shape = RULE_CASES[request.param]
    torch.manual_seed(11)
    m = Readout(make(), shape).eval()
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(12))
    w = flatten(m)
    return m, w, x, oracle_J(m, w, x, "sqrt_probs").double()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # conv-same's 3×4 kernel: on purpose
@pytest.mark.parametrize("min_t", [1, 10**9])
def test_rule_against_jacrev(rule_net, min_t, monkeypatch):
    """One layer's rule alone: J (jacobian_fast), K and Jv by every route, whole and in chunks of 256 bytes, Jᵀu
    from the tape, and K with a random half of the layer's columns frozen; convolutions' blocks by the
    weight-gradient kernel (min_t 1) and by unfold + matmul (min_t huge). The Gram trick is taken wherever the rule
    has one (layers.Rule.gram_dims) and the route asks for it."""
    m, w, x, J = rule_net
    monkeypatch.setattr(layers, "CONV_BLOCKS_MIN_T", min_t)
    rule = layers.rule_for(m.layer)
    assert J.abs().max() > 0 and close(metric.jacobian_fast(m, w, x, "sqrt_probs"), J)
    g = torch.Generator().manual_seed(13)
    v, u = torch.randn(w.numel(), generator=g), torch.randn(J.shape[0], generator=g)
    for route in metric.ROUTES:
        for block_bytes in (metric.BLOCK_BYTES, 256):
            M = metric.Metric(m, w, x, "sqrt_probs", block_bytes=block_bytes, route=route)
            K, Jv = M.gram_jvp(v)
            assert close(K, J @ J.T) and close(Jv, J @ v.double(), 1e-4)
            assert close(M.vjp(u), J.T @ u.double(), 1e-4)
            has_trick = rule.gram_dims(m.layer, x, m.layer(x)) is not None
            if route != "auto":
                assert M.routes == {"layer": route if has_trick else "explicit"}
    free = torch.rand(w.numel(), generator=g) > 0.5
    Jf = J * free.double()
    K, Jv = metric.Metric(m, w, x, "sqrt_probs", free=free, block_bytes=256).gram_jvp(v)
    assert close(K, Jf @ Jf.T) and close(Jv, Jf @ v.double(), 1e-4)


def test_rules_are_found_by_type_and_base_type():
    class MyConv(nn.Conv2d):
        pass

    assert isinstance(layers.rule_for(MyConv(1, 1, 1)), layers.Conv2dRule)
    assert isinstance(layers.rule_for(nn.BatchNorm3d(2)), layers.BatchNormRule)
    assert isinstance(layers.rule_for(nn.Linear(2, 2)), layers.LinearRule)
    assert layers.rule_for(nn.LayerNorm(2)) is None and layers.rule_for(nn.Conv1d(1, 1, 1)) is None


class Scaled(nn.Linear):
    """A Linear layer with a parameter its rule does not know."""

    def __init__(self):
        super().__init__(4, 3)
        self.scale = nn.Parameter(torch.ones(3))


UNSUPPORTED = {  # id: (net, input, the part of the message naming the layer)
    "layernorm": (lambda: nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), (2, 4), "1 (LayerNorm: weight, bias)"),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten()), (2, 1, 5), "0 (Conv1d: weight, bias)"),
    "embedding": (lambda: nn.Sequential(nn.Embedding(5, 3), nn.Flatten()), None, "0 (Embedding: weight)"),
    "extra-parameter": (Scaled, (2, 4), "the model (Scaled: weight, bias, scale)"),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_layer_gets_the_same_clear_error(name):
    """A module owning parameters without a rule (or with parameters its rule does not know) is refused, by every
    fast route and by check_layers, with this message."""
    make, shape, what = UNSUPPORTED[name]
    net = make().eval()
    x = torch.randint(0, 5, (2, 3)) if shape is None else torch.rand(*shape)
    expect = (f"the fast metric has no per-sample rule for the parameters of {what}. Layers with parameters it "
              "supports: Linear, Conv2d (any stride, padding, dilation, groups), BatchNorm1d/2d/3d in eval mode; "
              "parameter-free modules and functions (ReLU, pooling, flatten, additions) need no rule. "
              "metric.jacobian handles any model.")
    for call in (lambda: metric.jacobian_fast(net, flatten(net), x, "logits"),
                 lambda: metric.Metric(net, flatten(net), x, "logits").gram(),
                 lambda: metric.LayerTape(net, flatten(net), x, "logits"),
                 lambda: metric.check_layers(net)):  # refused before any forward pass: any input shape
        with pytest.raises(NotImplementedError) as err:
            call()
        assert str(err.value) == expect


@pytest.mark.parametrize("bn", [nn.BatchNorm2d(2), nn.BatchNorm2d(2, affine=False),
                                nn.BatchNorm2d(2, track_running_stats=False).eval()], ids=["train", "plain", "batch"])
def test_batch_statistics_are_refused_by_the_rule(bn):
    """BatchNorm's rule refuses batch statistics, also on a BatchNorm without parameters (no rows, still coupling)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), bn, nn.Flatten())
    net[0].eval()
    with pytest.raises(ValueError, match="call model.eval"):
        metric.LayerTape(net, flatten(net), torch.rand(2, 1, 5, 5), "logits")
