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

Layers. Per-sample rules exist for the layers that own parameters: Linear (any number of leading dims),
Conv2d (stride, padding incl. 'same' and reflect/circular, dilation, groups), BatchNorm1d/2d/3d in eval mode
(γ, β are weights, the running statistics constants: rows Σ_positions g·x̂ and Σ_positions g with
x̂ = (x − running_mean)/√(running_var + eps)). Parameter-free operations between them (ReLU, in-place or not,
pooling of any kind, flatten, residual additions) need none: autograd carries the output gradients g through
them. Any other module owning parameters raises NotImplementedError naming it. Samples must be independent,
so BatchNorm in training mode (batch statistics) and active dropout raise ValueError: call model.eval().

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
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .params import ParamSpec, spec_of, unflatten

OUTPUT_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
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
_BatchNorm = nn.modules.batchnorm._BatchNorm
ROUTES = ("auto", "explicit", "gram")
SUPPORTED = "Linear, Conv2d (any stride, padding, dilation, groups), BatchNorm1d/2d/3d in eval mode"


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
    """parameter name -> (module name, 'weight'|'bias') for the supported layers; raises for anything else."""
    owners, unsupported = {}, []
    for mname, mod in model.named_modules():
        own = [p for p, _ in mod.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(mod, (nn.Linear, nn.Conv2d, _BatchNorm)) and set(own) <= {"weight", "bias"}:
            owners.update({f"{mname}.{p}" if mname else p: (mname, p) for p in own})
        else:
            unsupported.append(f"{mname or 'the model'} ({type(mod).__name__}: {', '.join(own)})")
    missing = [n for n in spec.names if n not in owners]
    if unsupported or missing:
        raise NotImplementedError(f"the fast metric has no per-sample rule for the parameters of "
                                  f"{'; '.join(unsupported) or ', '.join(missing)}. Layers with parameters it "
                                  f"supports: {SUPPORTED}; parameter-free modules and functions (ReLU, pooling, "
                                  "flatten, additions) need no rule. metric.jacobian handles any model.")
    return owners


def _check_eval(model: nn.Module) -> None:
    """Samples must be independent: BatchNorm on running statistics, no random dropout."""
    for name, mod in model.named_modules():
        if isinstance(mod, _BatchNorm) and (mod.training or mod.running_mean is None):
            raise ValueError(f"BatchNorm {name!r} normalizes with batch statistics ("
                             f"{'training mode' if mod.training else 'track_running_stats=False'}), which couples "
                             "the probe samples; call model.eval() (running statistics are constants of the metric)")
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

    `output_grads()` runs one backward pass per output class c and keeps, for every layer, what its rows of
    J need: the output gradients ∂y_{b,c}/∂z_l (Linear, Conv2d), or already the rows (Σ g·x̂, Σ g) summed over
    positions (BatchNorm). Samples are independent in eval mode, so one backward pass serves the whole batch.
    Parameter-free operations between layers (ReLU, pooling, flatten, residual additions, in-place ones too)
    need nothing: autograd carries the output gradients through them.
    """

    def __init__(self, model: nn.Module, w: torch.Tensor, x: torch.Tensor, phi: str, reduce: bool = False):
        _check_eval(model)
        self.model, self.spec = model, spec_of(model)
        self.owners = _param_owner(model, self.spec)
        self.layers = {m: model.get_submodule(m) for m, _ in self.owners.values()}
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._versions: dict[str, int] = {}
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
        """Flat indices of a layer's weight then bias: the column order of its block J_l."""
        names = [f"{layer}.{p}" for p in ("weight", "bias") if f"{layer}.{p}" in self.spec.names]
        return torch.cat([torch.arange(self.spec.slice(nm).start, self.spec.slice(nm).stop) for nm in names])

    def _offset(self, layer: str, p: str) -> int | None:
        name = f"{layer}.{p}"
        return self.spec.slice(name).start if name in self.spec.names else None

    def _xhat(self, layer: str) -> torch.Tensor:
        """BatchNorm's normalized input (x − running_mean)/√(running_var + eps), (B, C, *)."""
        mod, x = self.layers[layer], self.inputs[layer]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - mod.running_mean.view(shape)) * torch.rsqrt(mod.running_var.view(shape) + mod.eps)

    def output_grads(self) -> dict[str, list[torch.Tensor]]:
        """Per layer, one entry per row c of a sample (`rows` backward passes: the output classes, or with `reduce`
        the basis Q_b's rows): the output gradients g_c (B, *out) of a
        Linear/Conv2d layer; for BatchNorm already its rows (B, parts·C), parts = (Σ_positions g·x̂ for γ,
        Σ_positions g for β) as present. The gradients are autograd's own tensors (no copies)."""
        names = list(self.layers)
        outs = [self.outputs[n] for n in names]
        bn = {n: (self._xhat(n), None) for n in names if isinstance(self.layers[n], _BatchNorm)}
        store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for c in range(self.rows):
            if self.Q is None:
                seed = torch.zeros_like(self.y)
                seed[:, c] = 1.0
            else:  # row c of every sample's basis Q_b: the rows Q_b J_b
                seed = self.Q[:, c].to(self.y.dtype)
            grads = torch.autograd.grad(self.y, outs, seed, retain_graph=c < self.rows - 1, allow_unused=True)
            for n, g in zip(names, grads):
                g = torch.zeros_like(self.outputs[n]) if g is None else g
                if n in bn:
                    xhat, buf = bn[n]
                    pos, B = tuple(range(2, g.dim())), g.shape[0]  # BatchNorm1d on (B, C): no positions
                    if pos:  # one buffer per layer for g·x̂, reused for every class
                        buf = torch.mul(g, xhat, out=buf)
                        bn[n] = (xhat, buf)
                    parts = [(buf.sum(pos) if pos else g * xhat) if self._offset(n, "weight") is not None else None,
                             (g.sum(pos) if pos else g) if self._offset(n, "bias") is not None else None]
                    g = torch.cat([p for p in parts if p is not None], 1).reshape(B, -1)
                store[n].append(g)
        return store

    # --- Linear and Conv2d as one form: z_{b,t} = W_g a_{b,g,t} (+ bias) per group g and position t -----

    def patches(self, layer: str) -> torch.Tensor:
        """a: (B, G, d₁, T): per group, the layer's per-position inputs (unfolded patches of a conv, the leading
        dims of a Linear input), with a row of ones appended when the layer has a bias (d₁ = d + 1)."""
        mod, a = self.layers[layer], self.inputs[layer]
        B = a.shape[0]
        if isinstance(mod, nn.Linear):
            a = a.reshape(B, -1, a.shape[-1]).transpose(1, 2)[:, None]  # (B, 1, in, T)
        else:
            pad = mod.padding
            if mod.padding_mode != "zeros" or isinstance(pad, str):  # reflect/circular, 'same'/'valid'
                mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
                a, pad = F.pad(a, mod._reversed_padding_repeated_twice, mode=mode), 0
            a = F.unfold(a, mod.kernel_size, mod.dilation, pad, mod.stride)  # (B, Cin·kh·kw, T)
            a = a.view(B, mod.groups, -1, a.shape[-1])
        if mod.bias is not None:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1, a.shape[-1])], 2)
        return a

    def _gview(self, layer: str, g: torch.Tensor) -> torch.Tensor:
        """One class's output gradients g_c: (B, *out) as (B, G, C_out/G, T), a view."""
        mod, B = self.layers[layer], g.shape[0]
        if isinstance(mod, nn.Linear):
            return g.reshape(B, -1, g.shape[-1]).transpose(1, 2)[:, None]
        return g.reshape(B, mod.groups, g.shape[1] // mod.groups, -1)

    def blocks(self, layer: str, gs: list[torch.Tensor], max_elems: int | None = None,
               buffer: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """J_l in column chunks: (flat indices (n_c,), J_c (B·m, n_c), class_major), every J_c of at most
        `max_elems` entries where one output channel allows (None: one chunk); together the chunks cover the
        layer. Rows are sample-major ((b, c): row b·m + c) or, when class_major, (c, b): row c·B + b. With
        `buffer` (1-D, ≥ max_elems) each J_c is a view into it, valid until the next.

        Linear/Conv2d row (b, c), output channel o of group g: [Σ_t g_{b,c,o,t} a_{b,g,t}, Σ_t g_{b,c,o,t}] (weight
        row of channel o, its bias). One group (the usual case): the classes' gradients are stacked once per layer
        and each chunk is one batched matmul over samples, m times taller than one per class (~1.6× faster);
        grouped convolutions: one matmul per class and chunk. BatchNorm: the stored rows.
        """
        mod, m, B = self.layers[layer], len(gs), gs[0].shape[0]
        if isinstance(mod, _BatchNorm):
            yield self.columns(layer), torch.cat(gs), True
            return
        if isinstance(mod, nn.Conv2d) and mod.groups == 1 and gs[0][0, 0].numel() >= CONV_BLOCKS_MIN_T:
            yield from self._conv_blocks(layer, gs, max_elems, buffer)
            return
        a, gv = self.patches(layer), [self._gview(layer, g) for g in gs]
        G, oc, d1 = a.shape[1], gv[0].shape[2], a.shape[2]
        aT = a.transpose(2, 3)  # (B, G, T, d₁)
        d, w0, b0 = mod.weight[0].numel(), self._offset(layer, "weight"), self._offset(layer, "bias")
        per = max(1, (max_elems or B * m * d1 * G * oc) // (B * m * d1))  # output channels per chunk
        gst = torch.stack([g[:, 0] for g in gv], 1) if G == 1 else None  # (B, m, C_out, T)
        for g0, g1, o0, o1 in _channel_chunks(G, oc, per):
            shape = (m, B, g1 - g0, o1 - o0, d1)
            size = math.prod(shape)
            Jc = buffer[:size] if buffer is not None and buffer.numel() >= size else a.new_empty(size)
            if gst is not None:
                rows = gst[:, :, o0:o1].reshape(B, m * (o1 - o0), -1)  # a copy only when chunked
                torch.bmm(rows, aT[:, 0], out=Jc.view(B, m * (o1 - o0), d1))
            else:
                Jc = Jc.view(shape)
                for c in range(m):
                    torch.matmul(gv[c][:, g0:g1, o0:o1], aT[:, g0:g1], out=Jc[c])
            ch = (torch.arange(g0, g1)[:, None] * oc + torch.arange(o0, o1)).reshape(-1, 1)  # output channels
            idx = [w0 + ch * d + torch.arange(d)] + ([b0 + ch] if b0 is not None else [])
            yield torch.cat(idx, 1).reshape(-1).to(a.device), Jc.view(m * B, -1), gst is None

    def _conv_blocks(self, layer: str, gs: list[torch.Tensor], max_elems: int | None,
                     buffer: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """`blocks` of a one-group Conv2d by the convolution's own weight-gradient kernel: the batch as B groups
        of one sample (input (1, B·C_in, H, W), output gradients (1, B·m·C_out, H′, W′)) gives every sample's and
        row's weight gradient, (B·m·C_out, C_in, kh, kw), in one call; ~2× faster than unfold + batched matmul
        where a sample has many output positions (CONV_BLOCKS_MIN_T)."""
        mod, m, B = self.layers[layer], len(gs), gs[0].shape[0]
        x, pad = self.inputs[layer], mod.padding
        if mod.padding_mode != "zeros" or isinstance(pad, str):  # reflect/circular, 'same'/'valid'
            mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
            x, pad = F.pad(x, mod._reversed_padding_repeated_twice, mode=mode), (0, 0)
        cin, oc, d = x.shape[1], mod.out_channels, mod.weight[0].numel()
        xs, bias = x.reshape(1, B * cin, *x.shape[2:]), mod.bias is not None
        d1, w0, b0 = d + bias, self._offset(layer, "weight"), self._offset(layer, "bias")
        per = max(1, (max_elems or B * m * d1 * oc) // (B * m * d1))  # output channels per chunk
        gst = torch.stack(gs, 1)  # (B, m, C_out, H′, W′)
        for o0 in range(0, oc, per):
            o1 = min(oc, o0 + per)
            n = o1 - o0
            go = gst[:, :, o0:o1].reshape(1, B * m * n, *gst.shape[3:])  # a copy only when chunked
            shape = x.new_empty(B * m * n, cin, *mod.kernel_size)  # the grouped weight's shape
            gw = torch.ops.aten.convolution_backward(go, xs, shape, None, mod.stride, pad, mod.dilation, False,
                                                     [0, 0], B, [False, True, False])[1]
            if bias:  # [weight row, bias] per output channel
                size = B * m * n * d1
                Jc = buffer[:size] if buffer is not None and buffer.numel() >= size else x.new_empty(size)
                Jc = Jc.view(B, m * n, d1)
                Jc[..., :d] = gw.view(B, m * n, d)
                torch.sum(go.view(B, m * n, -1), -1, out=Jc[..., d])
            else:
                Jc = gw
            ch = torch.arange(o0, o1).reshape(-1, 1)
            idx = [w0 + ch * d + torch.arange(d)] + ([b0 + ch] if bias else [])
            yield torch.cat(idx, 1).reshape(-1).to(x.device), Jc.reshape(m * B, -1), False

    def gram_trick(self, layer: str, gs: list[torch.Tensor], max_elems: int) -> torch.Tensor:
        """K_l = J_l J_lᵀ, (B, m, B, m), without J_l (one group). With G_{b,c} (C_out × T) the output gradients
        and M = A_bᵀA_{b′} (T × T) the products of two samples' per-position inputs (a with its 1 for a bias),
            K_l[(b,c),(b′,c′)] = Σ_o Σ_{t,t′} g_{b,c,o,t} M_{t,t′} g_{b′,c′,o,t′} = ⟨G_{b,c} M, G_{b′,c′}⟩:
        per pair of samples T²·d₁ + m·C_out·T² + m²·C_out·T multiply-adds (M, then G·M, then the inner products)
        instead of the explicit m²·C_out·d₁ plus forming J_l. Computed on blocks of s samples whose products
        (s²·(m·C_out·T + T²) entries) stay under `max_elems`."""
        m, B = len(gs), gs[0].shape[0]
        a = self.patches(layer)[:, 0].transpose(1, 2).contiguous()  # (B, T, d₁)
        g = torch.stack([self._gview(layer, x)[:, 0] for x in gs], 1)  # (B, m, C_out, T)
        T, cout = a.shape[1], g.shape[2]
        if B * m * cout * a.shape[2] <= EXACT_BLOCK:  # as small as an explicit block that goes through float64
            a, g = a.double(), g.double()
        s = max(1, min(B, math.isqrt(max(1, max_elems // (m * cout * T + T * T)))))
        s = -(-B // -(-B // s))  # blocks of equal size
        K = torch.zeros(B, m, B, m, dtype=torch.float64, device=a.device)
        for i in range(0, B, s):
            ai, gi = a[i : i + s], g[i : i + s]
            si = ai.shape[0]
            for j in range(i, B, s):
                aj, gj = a[j : j + s], g[j : j + s]
                sj = aj.shape[0]
                M = (ai.reshape(si * T, -1) @ aj.reshape(sj * T, -1).T).view(si, T, sj, T)  # M[i, t, j, t′]
                H = g.new_empty(sj, si, m * cout, T)  # (G_{i,c} M_{ij})[o, t′], laid out for the next product
                for jj in range(sj):
                    torch.bmm(gi.reshape(si, m * cout, T), M[:, :, jj], out=H[jj])
                Kij = torch.bmm(H.view(sj, si * m, cout * T), gj.reshape(sj, m, cout * T).transpose(1, 2))
                Kij = Kij.view(sj, si, m, m).permute(1, 2, 0, 3).double()  # (si, m, sj, m)
                K[i : i + si, :, j : j + sj] += Kij
                if j != i:
                    K[j : j + sj, :, i : i + si] += Kij.permute(2, 3, 0, 1)
        return K

    def linearized(self, layer: str, gs: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
        """J_l v_l, (m·B,) class-major, from the layer's output change δz = layer(x; v_l) (no J_l):
        Σ_{outputs} g_{b,c}·δz_b."""
        mod, x, B = self.layers[layer], self.inputs[layer], gs[0].shape[0]
        vw = v[self.spec.slice(f"{layer}.weight")].view_as(mod.weight)
        vb = v[self.spec.slice(f"{layer}.bias")] if mod.bias is not None else None
        dz = (F.linear(x, vw, vb) if isinstance(mod, nn.Linear) else mod._conv_forward(x, vw, vb)).reshape(B, -1)
        return torch.cat([(g.reshape(B, -1) * dz).sum(1) for g in gs])

    def pulled(self, layer: str, gs: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """J_lᵀu for u: (B, rows) in the tape's rows, in the order of `columns(layer)`: the layer's parameter
        gradient for the combined output gradient ĝ_b = Σ_c u_{b,c} g_{b,c} (one weight-gradient product, no
        backward pass through the net); BatchNorm: Σ_{b,c} u_{b,c} row_{b,c}."""
        mod, x = self.layers[layer], self.inputs[layer]
        if isinstance(mod, _BatchNorm):
            return torch.einsum("bc,cbk->k", u.to(gs[0].dtype), torch.stack(gs))
        shape = (-1,) + (1,) * (gs[0].dim() - 1)
        ghat = gs[0] * u[:, 0].to(gs[0].dtype).view(shape)
        for c in range(1, len(gs)):
            ghat.addcmul_(gs[c], u[:, c].to(gs[c].dtype).view(shape))
        return torch.cat([g.reshape(-1) for g in _parameter_grads(mod, x, ghat)])

    def to_rows(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, m) in output coordinates as (B, rows) in the tape's rows (Q_b u_b when reduced)."""
        return u if self.Q is None else torch.einsum("bjc,bc->bj", self.Q.to(u.dtype), u)

    def from_rows(self, r: torch.Tensor) -> torch.Tensor:
        """r: (B, rows) in the tape's rows as (B, m) output coordinates (Q_bᵀ r_b when reduced)."""
        return r if self.Q is None else torch.einsum("bjc,bj->bc", self.Q.to(r.dtype), r)

    def route(self, layer: str, max_elems: int, free: bool = True, prefer: str = "auto") -> str:
        """'gram' or 'explicit' for K_l, by the cost rule in the module docstring (multiply-adds); `prefer`
        'explicit' or 'gram' forces a route wherever it applies (the Gram trick needs a fully free layer of
        one group, not BatchNorm)."""
        mod = self.layers[layer]
        if isinstance(mod, _BatchNorm) or not free or (isinstance(mod, nn.Conv2d) and mod.groups != 1):
            return "explicit"
        if prefer != "auto":
            return prefer
        B, m, k = self.B, self.m, self.B * self.m
        cout, d1 = mod.weight.shape[0], mod.weight[0].numel() + (mod.bias is not None)
        x = self.inputs[layer]
        T = x[0].numel() // x.shape[-1] if isinstance(mod, nn.Linear) else self.outputs[layer][0, 0].numel()
        if m * cout * T + T * T > max_elems:  # not even one pair of samples fits the budget
            return "explicit"
        explicit = k * T * cout * d1 + k * k * cout * d1 / 2
        trick = GRAM_SLOWDOWN * B * (B + 1) / 2 * (T * T * d1 + m * cout * T * T + m * m * cout * T) + B * T * cout * d1
        return "gram" if trick < explicit else "explicit"


# blocks up to this many entries go through syrk in float64 (cheap there): a tiny net's rank-deficient K keeps an
# exact null space, which the tangent solver's rank test reads; larger blocks use float32 (4× faster, ~1e-7)
EXACT_BLOCK = 1 << 18
# one-group convolutions with at least this many output positions per sample form their blocks with the
# convolution's weight-gradient kernel (_conv_blocks), the others by unfold + batched matmul. Measured on one
# thread, probe 32 (probe 8), m = 9, ms matmul / kernel: 16→16 at 28×28 16.6 / 7.4 (4.3 / 1.7); 64→64 at 28×28
# 313 / 194 (52 / 25); 32→32 at 14×14 14.9 / 7.9; 64→128 stride 2 to 14×14 117 / 161 (27 / 15); 128→128 at 7×7
# (probe 8) 14.7 / 33.3: the kernel wins from 14×14 outputs up, loses at 7×7.
CONV_BLOCKS_MIN_T = 196
GRAM_SLOWDOWN = 4.0  # a multiply-add of the trick (small products, inner dimension T) costs ~4 of the explicit route


def _parameter_grads(mod: nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """The gradients of Σ g·z for a Linear/Conv2d layer z = layer(x) with respect to its weight (and bias): the
    weight-gradient product alone, without the layer's forward pass."""
    g, x = g.detach(), x.detach()
    if isinstance(mod, nn.Linear):
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        return [g2.T @ x2] + ([g2.sum(0)] if mod.bias is not None else [])
    pad = mod.padding
    if mod.padding_mode != "zeros" or isinstance(pad, str):  # reflect/circular, 'same'/'valid'
        mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
        x, pad = F.pad(x, mod._reversed_padding_repeated_twice, mode=mode), (0, 0)
    bias = mod.bias is not None
    _, gw, gb = torch.ops.aten.convolution_backward(g, x, mod.weight.detach(), [mod.out_channels] if bias else None,
                                                    mod.stride, pad, mod.dilation, False, [0, 0], mod.groups,
                                                    [False, True, bias])
    return [gw] + ([gb] if bias else [])


def _channel_chunks(groups: int, per_group: int, per_chunk: int) -> Iterator[tuple[int, int, int, int]]:
    """(g0, g1, o0, o1): whole groups [g0, g1) when `per_chunk` channels hold at least one group, else slices
    [o0, o1) of one group's channels."""
    if per_chunk >= per_group:
        step = per_chunk // per_group
        for g0 in range(0, groups, step):
            yield g0, min(groups, g0 + step), 0, per_group
    else:
        for g0 in range(groups):
            for o0 in range(0, per_group, per_chunk):
                yield g0, g0 + 1, o0, min(per_group, o0 + per_chunk)


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
                Jv += self._layer_jv(tape, layer, gs, v).view(r, B)
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

    def _layer_jv(self, tape: "LayerTape", layer: str, gs: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
        """J_l v_l, (rows·B,) class-major: BatchNorm from its rows, other layers by linearization."""
        if isinstance(tape.layers[layer], _BatchNorm):
            return torch.cat(gs) @ v[tape.columns(layer)]
        return tape.linearized(layer, gs, v)
