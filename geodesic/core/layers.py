"""Per-sample rules of the layers that own parameters: one small class per module type, found by the module's type.

The metric's fast routes (metric.LayerTape, metric.Metric) record each parametrized layer's input x (B, *in) and,
per row c of J (one backward pass each), its output gradients g_c = ∂y_{·,c}/∂z (B, *out); z is the layer's output.
Every row of J is then a per-sample weight gradient of one layer, and what a layer type contributes is its rule:
- `check`: refuse a layer that couples the samples (ValueError);
- `recorder`: what to keep of each g_c (g_c itself, or already the layer's rows when they are few);
- `blocks`: J_l in column chunks; `jv`: J_l v_l; `pull`: J_lᵀu;
- `gram_dims`, `gram`: the sizes of the Gram trick and K_l = J_l J_lᵀ without J_l (layers of the affine form).
Columns are the layer's own, numbered 0 … n_l − 1: its weight flattened, then its bias; rows are those of the tape,
m per sample (gs holds one entry per row c).

`rule_for(module)` finds the rule registered for the module's type or the nearest of its base classes (so
BatchNorm2d finds the rule of _BatchNorm, a subclass of Conv2d that of Conv2d). Adding a layer type is adding one
rule with `@register(ModuleType)` and its jacrev test in tests/test_metric.py; the metric needs no change.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

Block = tuple[torch.Tensor, torch.Tensor, bool]  # (layer columns (n_c,), J_c (B·m, n_c), class_major)

# blocks up to this many entries go through syrk in float64 (cheap there): a tiny net's rank-deficient K keeps an
# exact null space, which the tangent solver's rank test reads; larger blocks use float32 (4× faster, ~1e-7)
EXACT_BLOCK = 1 << 18
# one-group convolutions with at least this many output positions per sample form their blocks with the
# convolution's weight-gradient kernel (Conv2dRule.kernel_blocks), the others by unfold + batched matmul. Measured on
# one thread, probe 32 (probe 8), m = 9, ms matmul / kernel: 16→16 at 28×28 16.6 / 7.4 (4.3 / 1.7); 64→64 at 28×28
# 313 / 194 (52 / 25); 32→32 at 14×14 14.9 / 7.9; 64→128 stride 2 to 14×14 117 / 161 (27 / 15); 128→128 at 7×7
# (probe 8) 14.7 / 33.3: the kernel wins from 14×14 outputs up, loses at 7×7.
CONV_BLOCKS_MIN_T = 196

RULES: dict[type, "Rule"] = {}  # module type -> its rule, in the order registered


def register(module_type: type) -> Callable[[type], type]:
    """Class decorator: an instance of the decorated rule serves `module_type` and its subclasses."""
    def add(cls: type) -> type:
        RULES[module_type] = cls()
        return cls
    return add


def rule_for(module: nn.Module) -> "Rule | None":
    """The rule of the module's type or of its nearest base class that has one; None when no rule applies."""
    for cls in type(module).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def supported() -> str:
    """The layer types with parameters that have a rule, as the error for any other layer lists them."""
    return ", ".join(rule.name for rule in RULES.values())


class Rule:
    """What the fast metric needs of one module type. `mod` the module, `x` (B, *in) its recorded input, `gs` the
    m recorded rows (each what `recorder` kept of g_c); `name` lists the type in errors; `params` are the only
    parameter names a module may own for the rule to apply."""

    name = ""
    params = frozenset({"weight", "bias"})

    def check(self, name: str, mod: nn.Module) -> None:
        """Raise ValueError when the layer, as set, couples the probe samples (J would not be per sample)."""

    def recorder(self, mod: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """g_c (B, *out) ↦ what the tape keeps of it for the layer's rows: by default g_c itself (autograd's
        tensor, no copy)."""
        return lambda g: g

    def blocks(self, mod: nn.Module, x: torch.Tensor, gs: list[torch.Tensor], max_elems: int | None = None,
               buffer: torch.Tensor | None = None) -> Iterator[Block]:
        """J_l in column chunks (layer columns, J_c (B·m, n_c), class_major): every J_c of at most `max_elems`
        entries where one output channel allows (None: one chunk), the chunks covering the layer's columns. Rows
        are sample-major ((b, c): row b·m + c) or, when class_major, (c, b): row c·B + b. With `buffer` (1-D,
        ≥ max_elems) a J_c may be a view into it, valid until the next."""
        raise NotImplementedError

    def jv(self, mod: nn.Module, x: torch.Tensor, gs: list[torch.Tensor], v: torch.Tensor) -> torch.Tensor:
        """J_l v for the layer's part v (n_l,) of a direction: (m·B,), class-major."""
        raise NotImplementedError

    def pull(self, mod: nn.Module, x: torch.Tensor, gs: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
        """J_lᵀu for u (B, m): (n_l,) in the layer's column order."""
        raise NotImplementedError

    def gram_dims(self, mod: nn.Module, x: torch.Tensor, z: torch.Tensor) -> tuple[int, int, int] | None:
        """(T, C_out, d₁) of the Gram trick (`gram`) for a layer whose output is z; None where it does not apply."""
        return None

    def gram(self, mod: nn.Module, x: torch.Tensor, gs: list[torch.Tensor], max_elems: int) -> torch.Tensor:
        """K_l = J_l J_lᵀ, (B, m, B, m) float64, without forming J_l."""
        raise NotImplementedError


# --- Linear and Conv2d as one form: z_{b,g,o,t} = W_{g,o} · a_{b,g,t} (+ bias_o) per group g and position t -----


class AffineRule(Rule):
    """Layers whose output channel o of group g at position t is W_{g,o} · a_{b,g,t} (+ bias_o): a weight row
    applied to a per-position input. Row (b, c) of J_l holds, for output channel o,
        [Σ_t g_{b,c,o,t} a_{b,g,t}, Σ_t g_{b,c,o,t}]   (weight row of o: d = C_in/G·kh·kw or in_features; its bias),
    d₁ = d + 1 columns per channel with a bias, d without. A subclass states the form: `positions` (a), `gview`
    (g by group, channel and position), `groups`, `positions_out` (T), `forward` (the layer at other weights) and
    `weight_grads` (the weight-gradient product)."""

    def groups(self, mod: nn.Module) -> int:
        return 1

    def positions(self, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """a: (B, G, d, T), per group the per-position inputs."""
        raise NotImplementedError

    def gview(self, mod: nn.Module, g: torch.Tensor) -> torch.Tensor:
        """One row's output gradients g_c: (B, *out) as (B, G, C_out/G, T), a view."""
        raise NotImplementedError

    def positions_out(self, mod: nn.Module, x: torch.Tensor, z: torch.Tensor) -> int:
        """T, the output positions per sample and channel."""
        raise NotImplementedError

    def forward(self, mod: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The layer's output at other weights: z(x; weight, bias), (B, *out)."""
        raise NotImplementedError

    def weight_grads(self, mod: nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
        """The gradients of Σ g·z with respect to the weight (and bias) for output gradients g (B, *out): the
        weight-gradient product alone, without the layer's forward pass."""
        raise NotImplementedError

    def patches(self, mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """a: (B, G, d₁, T): `positions` with a row of ones appended when the layer has a bias (d₁ = d + 1)."""
        a = self.positions(mod, x)
        if mod.bias is not None:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1, a.shape[-1])], 2)
        return a

    def columns(self, mod: nn.Module, ch: torch.Tensor) -> torch.Tensor:
        """The layer columns of output channels ch (n, 1), each its weight row then its bias: (n·d₁,)."""
        d = mod.weight[0].numel()
        idx = [ch * d + torch.arange(d)] + ([mod.weight.numel() + ch] if mod.bias is not None else [])
        return torch.cat(idx, 1).reshape(-1)

    def blocks(self, mod, x, gs, max_elems=None, buffer=None):
        """One group (the usual case): the rows' gradients are stacked once per layer and each chunk is one batched
        matmul over samples, J_c[b] = [g_{b,c,o,t}]_{(c,o),t} · [a_{b,t}]_{t,d₁}, m times taller than one per row
        (~1.6× faster); grouped layers: one matmul per row and chunk (class-major rows)."""
        m, B = len(gs), gs[0].shape[0]
        a, gv = self.patches(mod, x), [self.gview(mod, g) for g in gs]
        G, oc, d1 = a.shape[1], gv[0].shape[2], a.shape[2]
        aT = a.transpose(2, 3)  # (B, G, T, d₁)
        per = max(1, (max_elems or B * m * d1 * G * oc) // (B * m * d1))  # output channels per chunk
        gst = torch.stack([g[:, 0] for g in gv], 1) if G == 1 else None  # (B, m, C_out, T)
        for g0, g1, o0, o1 in channel_chunks(G, oc, per):
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
            yield self.columns(mod, ch), Jc.view(m * B, -1), gst is None

    def jv(self, mod, x, gs, v):
        """From the layer's output change δz = z(x; v_weight, v_bias) (its linearization, no J_l):
        (J_l v)_{c,b} = Σ_{outputs} g_{b,c}·δz_b."""
        B, nw = gs[0].shape[0], mod.weight.numel()
        dz = self.forward(mod, x, v[:nw].view_as(mod.weight), v[nw:] if mod.bias is not None else None).reshape(B, -1)
        return torch.cat([(g.reshape(B, -1) * dz).sum(1) for g in gs])

    def pull(self, mod, x, gs, u):
        """The layer's parameter gradient for the combined output gradient ĝ_b = Σ_c u_{b,c} g_{b,c} (one
        weight-gradient product, no backward pass through the net)."""
        shape = (-1,) + (1,) * (gs[0].dim() - 1)
        ghat = gs[0] * u[:, 0].to(gs[0].dtype).view(shape)
        for c in range(1, len(gs)):
            ghat.addcmul_(gs[c], u[:, c].to(gs[c].dtype).view(shape))
        return torch.cat([g.reshape(-1) for g in self.weight_grads(mod, x, ghat)])

    def gram_dims(self, mod, x, z):
        if self.groups(mod) != 1:
            return None
        return self.positions_out(mod, x, z), mod.weight.shape[0], mod.weight[0].numel() + (mod.bias is not None)

    def gram(self, mod, x, gs, max_elems):
        """One group. With G_{b,c} (C_out × T) the output gradients and M = A_bᵀA_{b′} (T × T) the products of two
        samples' per-position inputs (a with its 1 for a bias),
            K_l[(b,c),(b′,c′)] = Σ_o Σ_{t,t′} g_{b,c,o,t} M_{t,t′} g_{b′,c′,o,t′} = ⟨G_{b,c} M, G_{b′,c′}⟩:
        per pair of samples T²·d₁ + m·C_out·T² + m²·C_out·T multiply-adds (M, then G·M, then the inner products)
        instead of the explicit m²·C_out·d₁ plus forming J_l. Computed on blocks of s samples whose products
        (s²·(m·C_out·T + T²) entries) stay under `max_elems`."""
        m, B = len(gs), gs[0].shape[0]
        a = self.patches(mod, x)[:, 0].transpose(1, 2).contiguous()  # (B, T, d₁)
        g = torch.stack([self.gview(mod, gc)[:, 0] for gc in gs], 1)  # (B, m, C_out, T)
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


def channel_chunks(groups: int, per_group: int, per_chunk: int) -> Iterator[tuple[int, int, int, int]]:
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


@register(nn.Linear)
class LinearRule(AffineRule):
    """z = x Wᵀ + bias on x: (B, *lead, in): one group, the T = Π lead positions of a sample share W (C_out, in);
    a_{b,t} = x_{b,t,:} (d = in), g viewed as (B, 1, C_out, T)."""

    name = "Linear"

    def positions(self, mod, x):
        return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)[:, None]  # (B, 1, in, T)

    def gview(self, mod, g):
        return g.reshape(g.shape[0], -1, g.shape[-1]).transpose(1, 2)[:, None]

    def positions_out(self, mod, x, z):
        return x[0].numel() // x.shape[-1]

    def forward(self, mod, x, weight, bias):
        return F.linear(x, weight, bias)

    def weight_grads(self, mod, x, g):
        """Σ_{b,t} g_{b,t} x_{b,t}ᵀ (C_out, in) and Σ_{b,t} g_{b,t} (C_out,)."""
        g, x = g.detach(), x.detach()
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        return [g2.T @ x2] + ([g2.sum(0)] if mod.bias is not None else [])


@register(nn.Conv2d)
class Conv2dRule(AffineRule):
    """z = conv2d(x, W) + bias on x: (B, C_in, H, W), W: (C_out, C_in/G, kh, kw), any stride, dilation and groups:
    a_{b,g,t} = the unfolded patch of group g under output position t (d = C_in/G·kh·kw), T = H′·W′ positions, g
    viewed as (B, G, C_out/G, T). Padding other than zeros given by numbers ('same'/'valid', reflect, circular,
    replicate) is applied to x once, in `padded`, and the layer is then a convolution without padding."""

    name = "Conv2d (any stride, padding, dilation, groups)"

    def padded(self, mod: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(x padded as the layer pads it, the padding left to the convolution): (x, mod.padding) for zeros given
        by numbers, else (F.pad(x, …), (0, 0))."""
        if mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
            return x, mod.padding
        mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
        return F.pad(x, mod._reversed_padding_repeated_twice, mode=mode), (0, 0)

    def groups(self, mod):
        return mod.groups

    def positions(self, mod, x):
        B = x.shape[0]
        x, pad = self.padded(mod, x)
        a = F.unfold(x, mod.kernel_size, mod.dilation, pad, mod.stride)  # (B, C_in·kh·kw, T)
        return a.view(B, mod.groups, -1, a.shape[-1])

    def gview(self, mod, g):
        return g.reshape(g.shape[0], mod.groups, g.shape[1] // mod.groups, -1)

    def positions_out(self, mod, x, z):
        return z[0, 0].numel()

    def forward(self, mod, x, weight, bias):
        return mod._conv_forward(x, weight, bias)

    def weight_grads(self, mod, x, g):
        """The convolution's own weight-gradient kernel: Σ_{b,t} g_{b,o,t} a_{b,g,t} per channel, and Σ_{b,t} g."""
        g, x = g.detach(), x.detach()
        x, pad = self.padded(mod, x)
        bias = mod.bias is not None
        _, gw, gb = torch.ops.aten.convolution_backward(g, x, mod.weight.detach(), [mod.out_channels] if bias else None,
                                                        mod.stride, pad, mod.dilation, False, [0, 0], mod.groups,
                                                        [False, True, bias])
        return [gw] + ([gb] if bias else [])

    def blocks(self, mod, x, gs, max_elems=None, buffer=None):
        """One group and at least CONV_BLOCKS_MIN_T output positions: `kernel_blocks`; else unfold + matmul."""
        if mod.groups == 1 and gs[0][0, 0].numel() >= CONV_BLOCKS_MIN_T:
            return self.kernel_blocks(mod, x, gs, max_elems, buffer)
        return super().blocks(mod, x, gs, max_elems, buffer)

    def kernel_blocks(self, mod: nn.Conv2d, x: torch.Tensor, gs: list[torch.Tensor], max_elems: int | None,
                      buffer: torch.Tensor | None) -> Iterator[Block]:
        """`blocks` of a one-group Conv2d by the convolution's own weight-gradient kernel: the batch as B groups of
        one sample (input (1, B·C_in, H, W), output gradients (1, B·m·C_out, H′, W′)) gives every sample's and
        row's weight gradient, (B·m·C_out, C_in, kh, kw), in one call; ~2× faster than unfold + batched matmul
        where a sample has many output positions (CONV_BLOCKS_MIN_T). Rows sample-major."""
        m, B = len(gs), gs[0].shape[0]
        x, pad = self.padded(mod, x)
        cin, oc, d = x.shape[1], mod.out_channels, mod.weight[0].numel()
        xs, bias = x.reshape(1, B * cin, *x.shape[2:]), mod.bias is not None
        d1 = d + bias
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
            yield self.columns(mod, torch.arange(o0, o1).reshape(-1, 1)), Jc.reshape(m * B, -1), False


# --- BatchNorm in eval mode: an affine map per channel with the running statistics as constants ----------------


@register(nn.modules.batchnorm._BatchNorm)
class BatchNormRule(Rule):
    """BatchNorm1d/2d/3d in eval mode on x: (B, C, *positions): z = γ x̂ + β per channel, x̂ = (x − running_mean) /
    √(running_var + eps) a constant of the metric. Row (b, c) of J_l is [Σ_positions g_{b,c}·x̂_b (γ, C entries),
    Σ_positions g_{b,c} (β, C entries)]: 2C columns, few enough to keep the rows themselves (`recorder`), (B, 2C)
    per row c. Batch statistics (training mode, track_running_stats=False) couple the samples: refused."""

    name = "BatchNorm1d/2d/3d in eval mode"

    def check(self, name, mod):
        if mod.training or mod.running_mean is None:
            raise ValueError(f"BatchNorm {name!r} normalizes with batch statistics ("
                             f"{'training mode' if mod.training else 'track_running_stats=False'}), which couples "
                             "the probe samples; call model.eval() (running statistics are constants of the metric)")

    def recorder(self, mod, x):
        """g_c (B, C, *positions) ↦ the rows (B, 2C); one buffer per layer for g·x̂, reused for every row."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xhat = (x - mod.running_mean.view(shape)) * torch.rsqrt(mod.running_var.view(shape) + mod.eps)
        buf = None

        def keep(g: torch.Tensor) -> torch.Tensor:
            nonlocal buf
            pos, B = tuple(range(2, g.dim())), g.shape[0]  # BatchNorm1d on (B, C): no positions
            if pos:
                buf = torch.mul(g, xhat, out=buf)
            parts = [(buf.sum(pos) if pos else g * xhat) if mod.weight is not None else None,
                     (g.sum(pos) if pos else g) if mod.bias is not None else None]
            return torch.cat([p for p in parts if p is not None], 1).reshape(B, -1)

        return keep

    def blocks(self, mod, x, gs, max_elems=None, buffer=None):
        """The kept rows, class-major, in one chunk (2C columns)."""
        yield torch.arange(gs[0].shape[1]), torch.cat(gs), True

    def jv(self, mod, x, gs, v):
        return torch.cat(gs) @ v

    def pull(self, mod, x, gs, u):
        """Σ_{b,c} u_{b,c} row_{b,c}."""
        return torch.einsum("bc,cbk->k", u.to(gs[0].dtype), torch.stack(gs))
