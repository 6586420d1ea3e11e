"""J three ways against torch.func.jacrev over the stacked outputs; distance and its gradient."""

import math

import pytest
import torch
from torch.func import jacrev

from geodesic import metric, models
from geodesic.params import flatten


def oracle_J(model, w, x, phi):
    """jacrev of the whole stacked, 1/√B-scaled output vector: no per-sample tricks."""
    return jacrev(lambda w_: metric.scaled_outputs(model, w_, x, phi))(w)


@pytest.fixture(scope="module", params=["mlp", "lenet60"])
def net(request):
    torch.manual_seed(0)
    m = models.build(request.param, seed=1).eval()
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
    m = models.build("mlp", seed=0).eval()
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
    m = models.build("mlp", seed=0).eval()
    w, x = flatten(m), torch.rand(8, 1, 28, 28)
    theta = torch.randn_like(w)
    theta /= theta.norm()
    J = oracle_J(m, w, x, "sqrt_probs")
    for t in (1e-2, 3e-3):
        d = metric.functional_distance(m, w + t * theta, w, x, "sqrt_probs")
        assert math.isclose(d, t**2 * float((J @ theta).pow(2).sum()), rel_tol=0.05)


def test_distance_grad_matches_finite_difference():
    m = models.build("mlp", seed=0).eval()
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
