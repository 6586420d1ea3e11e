"""The functional metric g_w = JᵀJ and the quantities measured with it.

J ∈ R^{k×n}, k = B·m, is the Jacobian of the stacked, 1/√B-scaled outputs φ(f(x_b, w)) over a probe batch
X = (x_1 … x_B); φ is an output map applied to the logits. A step θ changes the function by |Jθ|² to first
order, so a path's length is Σ_t |J_t θ_t|. The real (not linearized) functional distance is
D(w, w') = mean_x |φ f(x, w) − φ f(x, w')|².

Three ways to J, one answer (tests check each against `torch.func.jacrev` on tiny nets of every layer type):
- `jacobian`: explicit, per-sample `vmap(jacrev)` (any model; the reference).
- `jacobian_fast`: explicit, per-sample gradients of each layer from its inputs and output gradients (one
  backward pass per output class instead of one per output row). Stores J: small nets and tests.
- `Metric.gram_jvp()` (K = JJᵀ and Jv) + `Metric.jvp` / `Metric.vjp`: K assembled layer by layer; J is never
  stored, nor any layer's block beyond a fixed budget (BLOCK_BYTES).

Layers. Each layer type that owns parameters has one rule in layers.py, found by the module's type
(layers.rule_for): Linear (any number of leading dims), Conv2d (stride, padding incl. 'same' and
reflect/circular, dilation, groups), BatchNorm1d/2d/3d in eval mode (γ, β are weights, the running statistics
constants: rows Σ_positions g·x̂ and Σ_positions g with x̂ = (x − running_mean)/√(running_var + eps)). A rule
forms its layer's blocks of J, J_l v, J_lᵀu and, where it applies, the Gram trick; this module records the
layers, runs the backward passes, picks the routes and assembles the metric. Parameter-free operations between
the layers (ReLU, in-place or not, pooling of any kind, flatten, residual additions) need no rule: autograd
carries the output gradients g through them. Any other module owning parameters raises NotImplementedError
naming it. Samples must be independent: each rule refuses what couples them (BatchNorm in training mode, on batch
statistics), and active dropout is refused too; both raise ValueError: call model.eval().

Routes to K_l = J_l J_lᵀ for a layer of k = B·m rows, T output positions, C_out output channels and
d₁ = inputs per output channel (+1 with a bias), n_l = C_out·d₁ weights; costs in multiply-adds:
- explicit: J_l formed in column chunks of whole output channels (each ≤ BLOCK_BYTES, 128 MiB, when one
  channel fits), K += J_c J_cᵀ by float32 syrk, Jv += J_c v_c; cost k·T·n_l (forming) + k²·n_l/2 (syrk).
  Always for BatchNorm (2C columns), grouped convolutions and partly frozen layers.
- gram: per pair of samples b, b′ the T × T products M = A_bᵀA_{b′} of their per-position inputs, then
  K_l[(b,c),(b′,c′)] = ⟨G_{b,c} M, G_{b′,c′}⟩ (G: C_out × T output gradients); Jv from the layer applied
  to v (its linearization). Cost B(B+1)/2 · (T²·d₁ + m·C_out·T² + m²·C_out·T): no n_l in it, so it wins
  for few positions and many weights (late convs, Linear layers: T = 1). Blocks of samples keep its
  products under BLOCK_BYTES. Contracting positions first costs m/(1 + m/T) times less than the usual
  ghost-norm order (all (b,c,t) × (b′,c′,t′) products first).
Rule: 'gram' when GRAM_SLOWDOWN · cost(gram) < cost(explicit), on fully free layers of one group whose single
pair of samples fits the budget. GRAM_SLOWDOWN = 4: measured time per multiply-add of the gram route over the
explicit one, 3.5–5 at T = 49 (its products have inner dimension T), less at T = 16. Measured on one loaded core
(load 8–10 on 2), probe 32, m = 10, 3×3 convs, seconds explicit / gram: 128→128 at 14×14 (T = 196)
1.07 / 5.3; 32→32 at 7×7 0.05 / 0.30; 64→64 at 7×7 0.18 / 0.45; 128→128 at 7×7 0.68 / 0.86; 256→256 at 7×7
2.19 / 1.57; 256→256 at 4×4 2.04 / 0.30; 512→512 at 4×4 7.06 / 0.60 (the rule picks the faster in each).
On ResNet-18 (probe 32) the gram route takes layer4, the 256-channel convs of layer3 and fc, the explicit
one the rest; bench/results/metric.md has whole-net timings and peak memory against the floor of
m backward passes.

Memory of gram_jvp: the stored output gradients (rows × the parametrized layers' outputs, kept until the
Metric is dropped: `vjp` reads them) + one BLOCK_BYTES buffer + the gram route's blocks; never k × n.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from . import layers
from .layers import EXACT_BLOCK
from .params import ParamSpec, spec_of, unflatten

OUTPUT_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {  # the names: core/output_maps.py
    "logits": lambda z: z,
    "probs": lambda z: torch.softmax(z, dim=-1),
    "sqrt_probs": lambda z: torch.exp(0.5 * torch.log_softmax(z, dim=-1)),  # Hellinger; JᵀJ = Fisher / 4
}


def row_basis(y: torch.Tensor, phi: str) -> torch.Tensor | None:
    """Q: (B, m − 1, m), per sample an orthonormal basis of the outputs' directions that can move, or None.

    φ = √softmax keeps Σ_c y_c² = 1 and φ = softmax keeps Σ_c y_c = 1, so u_bᵀ J_b = 0 exactly for the unit
    vector u_b = φ(f(x_b)) (resp. 1/√m): one of each sample's m rows of J is a combination of the others, and
    J_bᵀ J_b = (Q_b J_b)ᵀ (Q_b J_b). Q_b is the Householder reflector taking u_b to −e_0, less its first row
    (h = u_b + e_0, |h|² = 2 + 2u_{b,0} ≥ 2: stable). None for the logits, which have no such constraint."""
    B, m = y.shape
    if phi == "logits" or m < 2:
        return None
    u = y * math.sqrt(B) if phi == "sqrt_probs" else y.new_full((B, m), 1 / math.sqrt(m))
    u = u / u.norm(dim=1, keepdim=True)  # exactly unit, for the reflector
    h = u.clone()
    h[:, 0] += 1
    reflect = 2 * h[:, :, None] * h[:, None, :] / (h * h).sum(1)[:, None, None]
    return (torch.eye(m, dtype=y.dtype, device=y.device) - reflect)[:, 1:].contiguous()


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

BLOCK_BYTES = 128 * 2**20  # working memory of one explicit block J_c or one Gram block (float32 bytes)
ROUTES = ("auto", "explicit", "gram")
SUPPORTED = layers.supported()
GRAM_SLOWDOWN = 4.0  # a multiply-add of the trick (small products, inner dimension T) costs ~4 of the explicit route


def gram(J: torch.Tensor, upper: bool = False) -> torch.Tensor:
    """K = JJᵀ for J: (k, n) in J's dtype; `upper`: only the upper triangle (zeros below), which sums of
    blocks accumulate before one symmetrization. On CPU, BLAS syrk computes one triangle (half the flops of
    J @ Jᵀ, and a row-major J is read in place as the column-major Jᵀ) on as many threads as torch uses;
    elsewhere a plain matmul."""
    if J.device.type != "cpu" or J.dtype not in (torch.float64, torch.float32) or J.requires_grad:
        return (J @ J.T).triu() if upper else J @ J.T
    from scipy.linalg.blas import dsyrk, ssyrk

    syrk = dsyrk if J.dtype == torch.float64 else ssyrk
    with _blas_threads(torch.get_num_threads()):  # scipy's own BLAS would otherwise take every core
        U = torch.from_numpy(syrk(1.0, J.contiguous().numpy().T, trans=1))  # (Jᵀ)ᵀ(Jᵀ): upper triangle
    return U if upper else U + U.triu(1).T


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _blas_threads(n: int):
    return _blas_controller().limit(limits=n, user_api="blas")


def _param_owner(model: nn.Module, spec: ParamSpec) -> dict[str, tuple[str, str]]:
    """parameter name -> (module name, 'weight'|'bias') for the layers with a rule; raises for anything else."""
    owners, unsupported = {}, []
    for mname, mod in model.named_modules():
        own = [p for p, _ in mod.named_parameters(recurse=False)]
        if not own:
            continue
        rule = layers.rule_for(mod)
        if rule is not None and set(own) <= rule.params:
            owners.update({f"{mname}.{p}" if mname else p: (mname, p) for p in own})
        else:
            unsupported.append(f"{mname or 'the model'} ({type(mod).__name__}: {', '.join(own)})")
    missing = [n for n in spec.names if n not in owners]
    if unsupported or missing:
        raise NotImplementedError(f"the fast metric has no per-sample rule for the parameters of "
                                  f"{'; '.join(unsupported) or ', '.join(missing)}. Layers with parameters it "
                                  f"supports: {layers.supported()}; parameter-free modules and functions (ReLU, "
                                  "pooling, flatten, additions) need no rule. metric.jacobian handles any model.")
    return owners


def _check_eval(model: nn.Module) -> None:
    """Samples must be independent: each layer's rule checks its own (BatchNorm on running statistics), and no
    random dropout."""
    for name, mod in model.named_modules():
        rule = layers.rule_for(mod)
        if rule is not None:
            rule.check(name, mod)
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.training and mod.p > 0:
            raise ValueError(f"dropout {name!r} is in training mode (a random net per call); call model.eval()")


def check_layers(model: nn.Module) -> None:
    """Refuse now, naming the layer, a model the layer-wise metric cannot take (NotImplementedError: a layer with
    parameters it has no rule for, a layer called twice per forward pass; ValueError: batch statistics): one
    forward pass of two images, before any run folder is made."""
    from .groups import example_input
    from .params import flatten

    LayerTape(model, flatten(model), example_input(model, 2), "logits")


class LayerTape:
    """One forward pass at w on x recording each parametrized layer's input and output.

    `output_grads()` runs one backward pass per row c of a sample and keeps, for every layer, what its rule's
    `recorder` asks of the output gradients ∂y_{b,c}/∂z_l (layers.py): the gradients themselves (Linear, Conv2d)
    or already the rows (BatchNorm). Samples are independent in eval mode, so one backward pass serves the whole
    batch. Parameter-free operations between layers (ReLU, pooling, flatten, residual additions, in-place ones too)
    need nothing: autograd carries the output gradients through them. The per-layer algebra (blocks of J_l, J_l v,
    J_lᵀu, the Gram trick) is the layer's rule's, in the layer's own columns; the tape places them in w.
    """

    def __init__(self, model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str, reduce: bool = False):
        _check_eval(model)
        self.model, self.spec = model, spec_of(model)
        self.owners = _param_owner(model, self.spec)
        self.layers = {m: model.get_submodule(m) for m, _ in self.owners.values()}
        self.rules = {m: layers.rule_for(mod) for m, mod in self.layers.items()}
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}
        self._columns: dict[str, torch.Tensor] = {}
        hooks = [mod.register_forward_hook(self._hook(name)) for name, mod in self.layers.items()]
        try:
            params = {k: v.detach() for k, v in unflatten(self.spec, w).items()}
            with torch.enable_grad():
                self.y = output_map(phi)(functional_call(model, params, (x,))) / math.sqrt(x.shape[0])
        finally:
            for h in hooks:
                h.remove()
        changed = [n for n, v in self._versions.items() if self.inputs[n]._version != v]
        if changed:
            raise ValueError(f"the inputs of {changed} were modified in place after the layer used them")
        self.B, self.m = self.y.shape
        # reduce: the rows of J in the basis Q (row_basis), m − 1 per sample where φ allows: one backward pass less
        self.Q = row_basis(self.y.detach(), phi) if reduce else None
        self.rows = self.m if self.Q is None else self.Q.shape[1]

    def _hook(self, name: str):
        def hook(mod, inp, out):
            if name in self.inputs:
                raise NotImplementedError(f"layer {name!r} is called more than once per forward pass (shared "
                                          "weights); the fast metric needs one call per layer")
            if not out.requires_grad:
                out.requires_grad_(True)
            self.inputs[name] = inp[0].detach()
            self._versions[name] = inp[0]._version
            self.outputs[name] = out
            return out.clone()  # later in-place ops (ReLU(inplace=True), +=) act on the copy, not on z_l
        return hook

    def columns(self, layer: str) -> torch.Tensor:
        """Flat indices of a layer's weight then bias: the column order of its block J_l (its rule's columns)."""
        if layer not in self._columns:
            names = [f"{layer}.{p}" for p in ("weight", "bias") if f"{layer}.{p}" in self.spec.names]
            self._columns[layer] = torch.cat([torch.arange(self.spec.slice(nm).start, self.spec.slice(nm).stop)
                                              for nm in names])
        return self._columns[layer]

    def output_grads(self) -> dict[str, list[torch.Tensor]]:
        """Per layer, one entry per row c of a sample (`rows` backward passes: the output classes, or with `reduce`
        the basis Q_b's rows): what the layer's rule keeps of its output gradients g_c (B, *out): g_c itself for
        Linear/Conv2d (autograd's own tensor, no copy), already its rows (B, 2C) for BatchNorm."""
        names = list(self.layers)
        outs = [self.outputs[n] for n in names]
        keep = {n: self.rules[n].recorder(self.layers[n], self.inputs[n]) for n in names}
        store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for c in range(self.rows):
            if self.Q is None:
                seed = torch.zeros_like(self.y)
                seed[:, c] = 1.0
            else:  # row c of every sample's basis Q_b: the rows Q_b J_b
                seed = self.Q[:, c].to(self.y.dtype)
            grads = torch.autograd.grad(self.y, outs, seed, retain_graph=c < self.rows - 1, allow_unused=True)
            for n, g in zip(names, grads):
                store[n].append(keep[n](torch.zeros_like(self.outputs[n]) if g is None else g))
        return store

    def blocks(self, layer: str, gs: list[torch.Tensor], max_elems: int | None = None,
               buffer: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """J_l in column chunks: (flat indices (n_c,), J_c (B·m, n_c), class_major), every J_c of at most
        `max_elems` entries where one output channel allows (None: one chunk); together the chunks cover the
        layer. Rows are sample-major ((b, c): row b·m + c) or, when class_major, (c, b): row c·B + b. With
        `buffer` (1-D, ≥ max_elems) each J_c may be a view into it, valid until the next. The rule's `blocks`,
        its columns placed in w."""
        cols = self.columns(layer)
        for idx, Jc, class_major in self.rules[layer].blocks(self.layers[layer], self.inputs[layer], gs, max_elems,
                                                             buffer):
            yield cols[idx].to(Jc.device), Jc, class_major

    def gram_trick(self, layer: str, gs: list[torch.Tensor], max_elems: int) -> torch.Tensor:
        """K_l = J_l J_lᵀ, (B, m, B, m) float64, without J_l: the rule's `gram` (layers.AffineRule.gram)."""
        return self.rules[layer].gram(self.layers[layer], self.inputs[layer], gs, max_elems)

    def linearized(self, layer: str, gs: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
        """J_l v_l, (rows·B,) class-major, for v (n,): the rule's `jv` on the layer's part of v (Linear/Conv2d
        from the layer applied to v_l, Σ_{outputs} g_{b,c}·δz_b; BatchNorm from its rows)."""
        return self.rules[layer].jv(self.layers[layer], self.inputs[layer], gs, v[self.columns(layer)])

    def pulled(self, layer: str, gs: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """J_lᵀu for u: (B, rows) in the tape's rows, in the order of `columns(layer)`: the rule's `pull` (one
        weight-gradient product for the combined output gradient ĝ_b = Σ_c u_{b,c} g_{b,c}, no backward pass
        through the net; BatchNorm: Σ_{b,c} u_{b,c} row_{b,c})."""
        return self.rules[layer].pull(self.layers[layer], self.inputs[layer], gs, u)

    def to_rows(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, m) in output coordinates as (B, rows) in the tape's rows (Q_b u_b when reduced)."""
        return u if self.Q is None else torch.einsum("bjc,bc->bj", self.Q.to(u.dtype), u)

    def from_rows(self, r: torch.Tensor) -> torch.Tensor:
        """r: (B, rows) in the tape's rows as (B, m) output coordinates (Q_bᵀ r_b when reduced)."""
        return r if self.Q is None else torch.einsum("bjc,bj->bc", self.Q.to(r.dtype), r)

    def route(self, layer: str, max_elems: int, free: bool = True, prefer: str = "auto") -> str:
        """'gram' or 'explicit' for K_l, by the cost rule in the module docstring (multiply-adds); `prefer`
        'explicit' or 'gram' forces a route wherever it applies (the Gram trick needs a fully free layer whose
        rule has one: one group of the affine form, not BatchNorm)."""
        dims = self.rules[layer].gram_dims(self.layers[layer], self.inputs[layer], self.outputs[layer])
        if dims is None or not free:
            return "explicit"
        if prefer != "auto":
            return prefer
        B, m, k = self.B, self.m, self.B * self.m
        T, cout, d1 = dims
        if m * cout * T + T * T > max_elems:  # not even one pair of samples fits the budget
            return "explicit"
        explicit = k * T * cout * d1 + k * k * cout * d1 / 2
        trick = GRAM_SLOWDOWN * B * (B + 1) / 2 * (T * T * d1 + m * cout * T * T + m * m * cout * T) + B * T * cout * d1
        return "gram" if trick < explicit else "explicit"


def jacobian_fast(model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs") -> torch.Tensor:
    """J (B·m, n) from per-sample layer gradients: m backward passes in all. Stores J: for small nets and tests."""
    tape = LayerTape(model, w, x, phi)
    B, m = tape.B, tape.m
    J = torch.zeros(B * m, w.numel(), dtype=w.dtype, device=w.device)
    for layer, gs in tape.output_grads().items():
        for idx, Jc, class_major in tape.blocks(layer, gs):
            J[:, idx] = Jc.view(m, B, -1).transpose(0, 1).reshape(B * m, -1) if class_major else Jc
    return J


class Metric:
    """The metric at w on a probe batch x, as an operator: K = JJᵀ, Jθ, Jᵀu, Gθ = Jᵀ(Jθ); J never stored.

    K = Σ_l J_l J_lᵀ is assembled layer by layer, each layer by the cheaper of two routes (module docstring):
    its block J_l formed in column chunks of at most `block_bytes`, or the Gram trick.

    `free` (boolean (n,)) restricts the metric to the free coordinates: J becomes J·diag(free), so frozen
    coordinates neither move nor count (K = J_free J_freeᵀ).
    """

    def __init__(self, model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str = "sqrt_probs",
                 free: torch.Tensor | None = None, block_bytes: int = BLOCK_BYTES, route: str = "auto"):
        self.model, self.w, self.x, self.phi = model, w.detach(), x, phi
        self.k = x.shape[0] * self._m()
        self.n = w.numel()
        self.free = None if free is None or bool(free.all()) else free.to(torch.bool)
        if route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
        self.block_bytes, self.route = block_bytes, route
        self.routes: dict[str, str] = {}  # layer -> route taken by the last gram_jvp
        self._fn = lambda w_: scaled_outputs(model, w_, x, phi)
        self._vjp = None
        self._tape: LayerTape | None = None  # the last gram_jvp's tape and output gradients, for vjp
        self._grads: dict[str, list[torch.Tensor]] = {}

    def _m(self) -> int:
        with torch.no_grad():
            return model_fn(self.model)(self.w, self.x[:1]).shape[-1]

    def _mask(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.free is None else torch.where(self.free, t, torch.zeros_like(t))

    def jvp(self, theta: torch.Tensor) -> torch.Tensor:
        """Jθ, shape (k,): one forward-mode pass."""
        return jvp(self._fn, (self.w,), (self._mask(theta.to(self.w.dtype)),))[1]

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """Jᵀu, shape (n,). After gram_jvp: from its tape, one weight-gradient product per layer (no pass
        through the net); before: one backward pass (the forward shared across calls)."""
        if self._tape is not None:
            return self._pull(u)
        if self._vjp is None:
            _, self._vjp = vjp(self._fn, self.w)
        return self._mask(self._vjp(u.to(self.w.dtype))[0])

    def _pull(self, u: torch.Tensor) -> torch.Tensor:
        """Jᵀu from the tape: Σ_l J_lᵀ u with u in the tape's rows (Q u_b: exact, Q_bᵀQ_b = I − u_bu_bᵀ and
        J_bᵀu_b = 0)."""
        tape = self._tape
        ur = tape.to_rows(u.to(self.w.dtype).view(tape.B, tape.m))
        out = torch.zeros_like(self.w)
        for layer, gs in self._grads.items():
            if self.routes.get(layer) != "frozen":
                out[tape.columns(layer)] = tape.pulled(layer, gs, ur)
        return self._mask(out)

    def outputs(self) -> torch.Tensor:
        """y(w) = vec(φ f(x, w)) / √B, (k,): the outputs whose Jacobian is J (from the last gram_jvp's forward pass
        when there is one)."""
        if self._tape is not None:
            return self._tape.y.detach().reshape(-1)
        with torch.no_grad():
            return self._fn(self.w)

    def change(self, theta: torch.Tensor, y0: torch.Tensor | None = None) -> float:
        """|y(w + θ) − y(w)|² = mean_x |φ f(x, w + θ) − φ f(x, w)|² on the probe batch, measured (one forward pass):
        what the metric predicts as θᵀGθ = |Jθ|² to first order."""
        y0 = self.outputs() if y0 is None else y0
        with torch.no_grad():
            return float((self._fn(self.w + self._mask(theta.to(self.w.dtype))) - y0).pow(2).sum())

    def G(self, theta: torch.Tensor) -> torch.Tensor:
        """Gθ = Jᵀ(Jθ), shape (n,)."""
        return self.vjp(self.jvp(theta))

    def gram(self) -> torch.Tensor:
        """K = JJᵀ, shape (k, k), float64, without storing J."""
        return self.gram_jvp()[0]

    def gram_jvp(self, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, Jv): K = JJᵀ (k, k) in float64 and, when v is given, Jv (k,) from the same layer pass (no jvp).

        The rows are those of the basis Q (row_basis: m − 1 per sample for φ = √softmax or softmax, whose row
        along u_b is exactly zero), so m − 1 backward passes serve, and K's products shrink by ((m − 1)/m)²; K and Jv
        come back in output coordinates, K = Qᵀ K_Q Q (exact: the dropped rows of J are zero).
        Per layer: route 'explicit' adds J_c J_cᵀ (float32 syrk: 4× faster than float64, ~1e-7 relative; float64
        for chunks of at most EXACT_BLOCK entries) for each column chunk J_c; route 'gram' adds
        LayerTape.gram_trick (float64 for layers as small). Jv: LayerTape.linearized (one product of the layer
        with v), BatchNorm from its rows. The tape and its output gradients stay for `vjp` (no backward pass).
        """
        tape = LayerTape(self.model, self.w, self.x, self.phi, reduce=True)
        B, m, r = tape.B, tape.m, tape.rows
        max_elems = max(1, self.block_bytes // self.w.element_size())
        K = torch.zeros(B, r, B, r, dtype=torch.float64, device=self.w.device)  # Gram-trick layers, (b, c) rows
        # Σ J_c J_cᵀ (upper triangles) for sample-major (b, c) and class-major (c, b) chunks
        U = torch.zeros(2, B * r, B * r, dtype=torch.float64, device=self.w.device)
        Jv = None if v is None else torch.zeros(r, B, dtype=self.w.dtype, device=self.w.device)  # class-major
        v = None if v is None else self._mask(v.to(self.w.dtype))
        grads = tape.output_grads()
        buffer = None
        self.routes = {}
        for layer, gs in grads.items():
            free = None if self.free is None else self.free[tape.columns(layer)]
            if free is not None and not bool(free.any()):
                self.routes[layer] = "frozen"
                continue
            route = self.routes[layer] = tape.route(layer, max_elems, free is None or bool(free.all()), self.route)
            if v is not None:
                Jv += tape.linearized(layer, gs, v).view(r, B)
            if route == "gram":
                K += tape.gram_trick(layer, gs, max_elems)
                continue
            if buffer is None:  # one block buffer for every chunk: no fresh pages per chunk
                buffer = self.w.new_empty(min(max_elems, r * B * self.n))
            for idx, Jc, class_major in tape.blocks(layer, gs, max_elems, buffer):
                if self.free is not None:
                    keep = self.free[idx]
                    if not bool(keep.all()):
                        if not bool(keep.any()):
                            continue
                        Jc = Jc[:, keep]
                U[int(class_major)] += gram(Jc.double() if Jc.numel() <= EXACT_BLOCK else Jc, upper=True)
        self._tape, self._grads = tape, grads
        U = U + U.triu(1).transpose(1, 2)
        K += U[0].view(B, r, B, r) + U[1].view(r, B, r, B).permute(1, 0, 3, 2)
        if tape.Q is not None:  # back to output coordinates: K[b,c,b′,c′] = Σ Q[b,j,c] K_Q[b,j,b′,j′] Q[b′,j′,c′]
            Q = tape.Q.to(K.dtype)
            K = torch.einsum("bjc,bjdk,dke->bcde", Q, K, Q)
        Jv = None if Jv is None else tape.from_rows(Jv.T).reshape(-1)
        return K.reshape(B * m, B * m), Jv
