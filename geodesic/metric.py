"""The functional metric g_w = JᵀJ and the quantities measured with it.

J ∈ R^{k×n}, k = B·m, is the Jacobian of the stacked, 1/√B-scaled outputs φ(f(x_b, w)) over a probe batch
X = (x_1 … x_B); φ is an output map applied to the logits. A step θ changes the function by |Jθ|² to first
order, so a path's length is Σ_t |J_t θ_t|. The real (not linearized) functional distance is
D(w, w') = mean_x |φ f(x, w) − φ f(x, w')|².

Three ways to J, one answer (tests check each against `torch.func.jacrev`):
- `jacobian`: explicit, per-sample `vmap(jacrev)` (any model; the reference).
- `jacobian_fast`: explicit, per-sample gradients of Linear/Conv2d layers from their inputs and output
  gradients (one backward pass per output class instead of one per output row).
- `Metric.gram()` + `Metric.jvp` / `Metric.vjp`: K = JJᵀ assembled layer by layer, and J-products, so J is
  never stored (the Gram trick behind fast per-example gradient norms).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .params import ParamSpec, spec_of, unflatten
from .tangent import gram

OUTPUT_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "logits": lambda z: z,
    "probs": lambda z: torch.softmax(z, dim=-1),
    "sqrt_probs": lambda z: torch.exp(0.5 * torch.log_softmax(z, dim=-1)),  # Hellinger; JᵀJ = Fisher / 4
}


def output_map(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in OUTPUT_MAPS:
        raise ValueError(f"unknown output map {name!r}; choose one of {sorted(OUTPUT_MAPS)}")
    return OUTPUT_MAPS[name]


def model_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """f(w, x) = model(x) with flat weights w."""
    spec = spec_of(model)
    buffers = dict(model.named_buffers())
    return lambda w, x: functional_call(model, {**unflatten(spec, w), **buffers}, (x,))


def scaled_outputs(model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str) -> torch.Tensor:
    """y(w) = vec(φ f(X, w)) / √B, shape (B·m,): the map whose Jacobian is J."""
    return output_map(phi)(model_fn(model)(w, x)).reshape(-1) / math.sqrt(x.shape[0])


def jacobian(model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs") -> torch.Tensor:
    """J (B·m, n) by per-sample `vmap(jacrev)`: the reference for every other route to J."""
    f, out = model_fn(model), output_map(phi)

    def one(xi: torch.Tensor) -> torch.Tensor:
        return jacrev(lambda w_: out(f(w_, xi[None]))[0])(w)  # (m, n)

    return (vmap(one)(x) / math.sqrt(x.shape[0])).reshape(-1, w.numel())


def mapped_outputs(model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs",
                   batch: int = 1000) -> torch.Tensor:
    """φ f(x, w) for every row of x, (B, m), without gradients, in chunks of `batch`."""
    f, out = model_fn(model), output_map(phi)
    with torch.no_grad():
        return torch.cat([out(f(w, x[i : i + batch])) for i in range(0, x.shape[0], batch)])


def functional_distance(model: nn.Module, w: torch.Tensor, w_ref: torch.Tensor | None, x: torch.Tensor,
                        phi: str = "sqrt_probs", batch: int = 1000, ref: torch.Tensor | None = None) -> float:
    """D(w, w') = mean_x |φ f(x, w) − φ f(x, w')|², measured (not linearized) on the batch x.

    `ref` = mapped_outputs(model, w_ref, x, phi) when already known (a path measures against a fixed start).
    """
    ref = mapped_outputs(model, w_ref, x, phi, batch) if ref is None else ref
    return (mapped_outputs(model, w, x, phi, batch) - ref).pow(2).sum().item() / x.shape[0]


def distance_grad(model: nn.Module, w: torch.Tensor, w_ref: torch.Tensor, x: torch.Tensor,
                  phi: str = "sqrt_probs") -> torch.Tensor:
    """∇_w D(w, w_ref) on the batch x, shape (n,)."""
    f, out = model_fn(model), output_map(phi)
    with torch.no_grad():
        target = out(f(w_ref, x))
    w = w.detach().requires_grad_(True)
    d = (out(f(w, x)) - target).pow(2).sum() / x.shape[0]
    (g,) = torch.autograd.grad(d, w)
    return g


# --- fast routes: per-sample layer gradients ------------------------------------------------------


def _param_owner(model: nn.Module, spec: ParamSpec) -> dict[str, tuple[str, str]]:
    """parameter name -> (module name, 'weight'|'bias') for Linear/Conv2d layers; raises for anything else."""
    owners = {}
    for mname, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                raise NotImplementedError("grouped convolutions are not supported by the fast Jacobian")
            for pname, _ in mod.named_parameters(recurse=False):
                owners[f"{mname}.{pname}" if mname else pname] = (mname, pname)
    missing = [n for n in spec.names if n not in owners]
    if missing:
        raise NotImplementedError(f"fast Jacobian handles Linear/Conv2d parameters only, not {missing}")
    return owners


class LayerTape:
    """One forward pass at w on x recording each Linear/Conv2d layer's input and output.

    `backward(c)` gives, for output class c, every layer's per-sample output gradient ∂y_{b,c}/∂z_l
    (samples are independent in eval mode, so one backward pass serves the whole batch).
    """

    def __init__(self, model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str):
        self.model, self.spec = model, spec_of(model)
        self.owners = _param_owner(model, self.spec)
        self.layers = {m: model.get_submodule(m) for m, _ in self.owners.values()}
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        hooks = [mod.register_forward_hook(self._hook(name)) for name, mod in self.layers.items()]
        try:
            params = {k: v.detach() for k, v in unflatten(self.spec, w).items()}
            with torch.enable_grad():
                self.y = output_map(phi)(functional_call(model, params, (x,))) / math.sqrt(x.shape[0])
        finally:
            for h in hooks:
                h.remove()
        self.B, self.m = self.y.shape

    def _hook(self, name: str):
        def hook(mod, inp, out):
            out.requires_grad_(True) if not out.requires_grad else None
            self.inputs[name] = inp[0].detach()
            self.outputs[name] = out
        return hook

    def backward(self, c: int) -> dict[str, torch.Tensor]:
        names = list(self.layers)
        seed = torch.zeros_like(self.y)
        seed[:, c] = 1.0
        grads = torch.autograd.grad(self.y, [self.outputs[n] for n in names], seed, retain_graph=True, allow_unused=True)
        return {n: (g if g is not None else torch.zeros_like(self.outputs[n])) for n, g in zip(names, grads)}

    def output_grads(self) -> dict[str, torch.Tensor]:
        """Every layer's output gradients for all m classes: {layer: (B, m, *out)} (m backward passes)."""
        per_class = [self.backward(c) for c in range(self.m)]
        return {layer: torch.stack([gc[layer] for gc in per_class], 1) for layer in self.layers}

    def columns(self, layer: str) -> torch.Tensor:
        """Flat indices of a layer's weight then bias: the column order of its block J_l."""
        names = [f"{layer}.weight"] + ([f"{layer}.bias"] if f"{layer}.bias" in self.spec.names else [])
        return torch.cat([torch.arange(self.spec.slice(nm).start, self.spec.slice(nm).stop) for nm in names])

    def block(self, layer: str, g: torch.Tensor) -> torch.Tensor:
        """J_l (B·m, n_l): the rows of J restricted to the layer's columns, from its output gradients g (B, m, *out).

        Row (b, c) is the per-sample gradient of y_{b,c}: Σ_t g_{bct} a_{bt}ᵀ for the weight (t over positions: the
        unfolded patches of a conv, the leading dims of a Linear input) and Σ_t g_{bct} for the bias; one batched
        matmul for all m classes.
        """
        mod, a = self.layers[layer], self.inputs[layer]
        B, m = g.shape[:2]
        if isinstance(mod, nn.Linear):
            cols = a.reshape(B, -1, a.shape[-1])  # (B, T, in)
            g2 = g.reshape(B, m, -1, g.shape[-1]).transpose(1, 2).reshape(B, -1, m * g.shape[-1])  # (B, T, m·out)
            weight = torch.bmm(g2.transpose(1, 2), cols)  # (B, m·out, in)
            bias = g2.sum(1)  # (B, m·out)
        else:
            cols = F.unfold(a, mod.kernel_size, mod.dilation, mod.padding, mod.stride)  # (B, Cin·kh·kw, P)
            g2 = g.reshape(B, m * g.shape[2], -1)  # (B, m·Cout, P)
            weight = torch.bmm(g2, cols.transpose(1, 2))  # (B, m·Cout, Cin·kh·kw)
            bias = g2.sum(-1)
        parts = [weight.reshape(B, m, -1)]
        if mod.bias is not None:
            parts.append(bias.reshape(B, m, -1))
        return torch.cat(parts, -1).reshape(B * m, -1)


def jacobian_fast(model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs") -> torch.Tensor:
    """J (B·m, n) from per-sample layer gradients: m backward passes in all (Linear/Conv2d models)."""
    tape = LayerTape(model, w, x, phi)
    J = torch.empty(tape.B * tape.m, w.numel(), dtype=w.dtype)
    for layer, g in tape.output_grads().items():
        J[:, tape.columns(layer)] = tape.block(layer, g)
    return J


class Metric:
    """The metric at w on a probe batch x, as an operator: K = JJᵀ, Jθ, Jᵀu, Gθ = Jᵀ(Jθ); J never stored.

    K is assembled layer by layer: for a Linear layer with per-sample inputs a_b and output gradients
    g_{bc}, K_l[(b,c),(b',c')] = (g_{bc}·g_{b'c'}) (a_b·a_{b'} + 1); for a conv layer the block J_l
    (k × n_l) is formed from unfolded inputs, multiplied, and dropped.

    `free` (boolean (n,)) restricts the metric to the free coordinates: J becomes J·diag(free), so frozen
    coordinates neither move nor count (K = J_free J_freeᵀ).
    """

    def __init__(self, model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs",
                 free: torch.Tensor | None = None):
        self.model, self.w, self.x, self.phi = model, w.detach(), x, phi
        self.k = x.shape[0] * self._m()
        self.n = w.numel()
        self.free = None if free is None or bool(free.all()) else free.to(torch.bool)
        self._fn = lambda w_: scaled_outputs(model, w_, x, phi)
        self._vjp = None

    def _m(self) -> int:
        with torch.no_grad():
            return model_fn(self.model)(self.w, self.x[:1]).shape[-1]

    def _mask(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.free is None else torch.where(self.free, t, torch.zeros_like(t))

    def jvp(self, theta: torch.Tensor) -> torch.Tensor:
        """Jθ, shape (k,): one forward-mode pass."""
        return jvp(self._fn, (self.w,), (self._mask(theta.to(self.w.dtype)),))[1]

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """Jᵀu, shape (n,): one backward pass (the forward is shared across calls)."""
        if self._vjp is None:
            _, self._vjp = vjp(self._fn, self.w)
        return self._mask(self._vjp(u.to(self.w.dtype))[0])

    def G(self, theta: torch.Tensor) -> torch.Tensor:
        """Gθ = Jᵀ(Jθ), shape (n,)."""
        return self.vjp(self.jvp(theta))

    def gram(self) -> torch.Tensor:
        """K = JJᵀ, shape (k, k), float64, without storing J."""
        return self.gram_jvp()[0]

    def gram_jvp(self, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, Jv): K = JJᵀ (k, k) in float64 and, when v is given, Jv (k,) from the same layer pass (no jvp).

        A Linear layer with inputs a_b and output gradients g_{bc} contributes (g_{bc}·g_{b'c'})(a_b·a_{b'} + 1)
        to K and g_{bc}·(V a_b + v_bias) to Jv; any other layer forms its block J_l, adds J_l J_lᵀ and J_l v_l.
        """
        tape = LayerTape(self.model, self.w, self.x, self.phi)
        B, m = tape.B, tape.m
        K = torch.zeros(B, m, B, m, dtype=torch.float64)
        Jv = None if v is None else torch.zeros(B * m, dtype=self.w.dtype)
        v = None if v is None else self._mask(v.to(self.w.dtype))
        for layer, g in tape.output_grads().items():  # g: (B, m, *out)
            mod, cols = tape.layers[layer], tape.columns(layer)
            free = None if self.free is None else self.free[cols]
            if free is not None and not bool(free.any()):
                continue  # the whole layer is frozen
            if isinstance(mod, nn.Linear) and tape.inputs[layer].dim() == 2 and (free is None or bool(free.all())):
                a = tape.inputs[layer]
                gg = torch.einsum("bco,dfo->bcdf", g.double(), g.double())
                K += gg * (a.double() @ a.double().T + (1.0 if mod.bias is not None else 0.0))[:, None, :, None]
                if v is not None:
                    vl = v[cols]
                    out = a @ vl[: mod.weight.numel()].reshape(mod.weight.shape).T  # (B, out): V a_b
                    if mod.bias is not None:
                        out = out + vl[mod.weight.numel():]
                    Jv += torch.einsum("bco,bo->bc", g, out).reshape(-1)
            else:
                Jl = tape.block(layer, g)
                if free is not None:
                    Jl, cols = Jl[:, free], cols[free]
                K += gram(Jl).double().reshape(B, m, B, m)  # float32 product: 4× faster, ~1e-7 relative
                if v is not None:
                    Jv += Jl @ v[cols]
        return K.reshape(B * m, B * m), Jv
