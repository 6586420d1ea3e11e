"""FIP: the functionally invariant path of Raghavan & Thomson, run to a filter target, as a baseline.

Each step, on a fresh batch X of `batch` inputs (labels unused), with p_b = softmax f(x_b, w) the current and
q_b = softmax f(x_b, w0) the original outputs:
    B(w) = Σ_b −log Σ_k √(p_bk q_bk)              (Bhattacharyya distance, summed over the batch)
    w_sparse = w with the target coordinates T set to 0,  so  w − w_sparse = 1_T ⊙ w
    u = ∇B(w) + λ (w − w_sparse),   w ← w − lr · u / |u|     (every step has length lr)
and at the end w_T := 0 (the mask).

Followed: the authors' public code, https://github.com/Guruprasad93/FlexibleMachineLearning —
`moveSparseNet_bhDist` in Sparsification_Resnet_CIFAR.ipynb (batch 200, λ = 0.1, lr = 0.01, loss
Σ_b −log Σ_k √(p q) summed, not averaged, over the batch; w_sparse recomputed from the current weights before
every step) and `NGD.step(wts_sparse, lambda1)` in moveSparseHyper_GPU.py (u = grad + λ(w − w_sparse),
normalized to unit length, times lr; their momentum and weight decay default to 0).
Differences: the target is a fixed set of whole filters (theirs: the p% smallest |w_i| at every step,
unstructured); √(p q) is computed as exp(½(log p + log q)), exact and finite, in place of their guard
√(p q + ε), ε = max(10⁻¹², 10⁻³ min q); batches are drawn with replacement; the model is called as given (the
project's nets are in eval mode; the notebook ran BatchNorm in training mode); the run stops on the caller's
budget (theirs: a number of epochs, or |w − w_sparse| < 0.01 checked every 50 batches).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import nn

from ..core.metric import model_fn
from ..store.data import Split

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bhattacharyya(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """mean_b −log Σ_k √(p_bk q_bk), p = softmax(p_logits), q = softmax(q_logits) over the last dim; 0 iff p = q."""
    half = 0.5 * (torch.log_softmax(p_logits, -1) + torch.log_softmax(q_logits, -1))
    return -torch.logsumexp(half, -1).mean()


def pull(w: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """w − w_sparse = 1_T ⊙ w: the offset from w to its projection on the sparse hyperplane {w_T = 0}."""
    return torch.where(target, w, torch.zeros_like(w))


def bhattacharyya_grad(f: Fn, w: torch.Tensor, x: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """∇_w B(w) with B = Σ_b −log Σ_k √(p_bk q_bk) on the batch x (the sum, as in the authors' loss)."""
    with torch.enable_grad():
        w = w.detach().requires_grad_(True)
        loss = x.shape[0] * bhattacharyya(f(w, x), q_logits)
        return torch.autograd.grad(loss, w)[0]


def direction(f: Fn, w: torch.Tensor, x: torch.Tensor, q_logits: torch.Tensor, target: torch.Tensor,
              lam: float) -> torch.Tensor:
    """u = ∇B(w) + λ (w − w_sparse), not normalized."""
    return bhattacharyya_grad(f, w, x, q_logits) + lam * pull(w, target)


@torch.no_grad()
def step(w: torch.Tensor, u: torch.Tensor, lr: float) -> torch.Tensor:
    """w − lr · u / |u| (w itself when u = 0: already on the hyperplane, outputs unchanged)."""
    norm = u.norm()
    return w.clone() if norm == 0 else w - (lr / norm) * u


def _fraction(used: float, limit: float | None) -> float:
    """The spent share of one budget: 0 when unset, ∞ when the budget is 0."""
    if limit is None:
        return 0.0
    return used / limit if limit > 0 else math.inf


def _check(w0: torch.Tensor, target: torch.Tensor, budgets: tuple[float | None, ...]) -> None:
    if all(b is None for b in budgets):
        raise ValueError("give a budget: steps, seconds or cpu_seconds")
    if target.dtype != torch.bool or target.shape != w0.shape:
        raise ValueError(f"target must be a boolean mask of shape {tuple(w0.shape)}, got {target.dtype} "
                         f"{tuple(target.shape)}")


def fip(model: nn.Module, w0: torch.Tensor, target: torch.Tensor, train: Split, *, steps: int | None = None,
        cpu_seconds: float | None = None, seconds: float | None = None, lam: float = 0.1, lr: float = 0.01,
        batch: int = 200, seed: int = 0, on_step: Callable[[int, torch.Tensor], None] | None = None
        ) -> tuple[torch.Tensor, int]:
    """FIP steps w ← w − lr·u/|u|, u = ∇B + λ(w − w_sparse), from w0 toward {w_target = 0} (module docstring).

    Runs until `steps` steps, `seconds` of wall time or `cpu_seconds` of this process's CPU time, whichever comes
    first (ValueError when none is given). `on_step(k, w_k)` gets each iterate before the mask. Returns (final w
    with the target coordinates set to exactly 0, steps done).
    """
    _check(w0, target, (steps, seconds, cpu_seconds))
    f, g = model_fn(model), torch.Generator().manual_seed(seed)
    w, done = w0.detach().clone(), 0
    t0, c0 = time.perf_counter(), time.process_time()

    def spent() -> float:
        return max(_fraction(done, steps), _fraction(time.perf_counter() - t0, seconds),
                   _fraction(time.process_time() - c0, cpu_seconds))

    while spent() < 1.0:
        x, _ = train.batch(batch, g)
        with torch.no_grad():
            q_logits = f(w0, x)
        w = step(w, direction(f, w, x, q_logits, target, lam), lr)
        done += 1
        if on_step:
            on_step(done, w.clone())
    return torch.where(target, torch.zeros_like(w), w), done
