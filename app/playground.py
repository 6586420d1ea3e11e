"""The Playground's two-weight net and everything its page draws, from engine calls only.

Importing this module does not import torch (the page draws its sliders while torch loads); each function
imports the engine when called.
"""

from __future__ import annotations

import pandas as pd


def two_weight_net(w1: float = 1.0, w2: float = 1.0):
    """f(x, w) = tanh(w1·x + w2·x²) as an nn.Module on inputs (x, x²): two weights, one output; the sparse
    axis is w2 = 0 (f = tanh(w1·x)). A Linear layer, so the engine's fast Jacobian applies."""
    import torch
    from torch import nn

    class TwoWeightNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1, bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[w1, w2]]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(x))

    return TwoWeightNet()


def points(count: int = 8):
    """Fixed inputs (count, 2) = (x, x²) for x evenly spaced in [−1.5, 1.5]."""
    import torch

    x = torch.linspace(-1.5, 1.5, count)
    return torch.stack([x, x**2], 1)


def contours(model, w_start, X, span: float, grid: int) -> pd.DataFrame:
    """D(w, w_start) on a grid × grid square of half-width `span` (metric.functional_distance, φ = identity)."""
    import torch

    from geodesic.core.metric import functional_distance

    axis = torch.linspace(-span, span, grid)
    return pd.DataFrame([{"w1": float(a), "w2": float(b),
                          "distance": functional_distance(model, torch.stack([a, b]), w_start, X, "logits")}
                         for b in axis for a in axis])


def ellipses(model, X, span: float, grid: int) -> pd.DataFrame:
    """The metric G = JᵀJ (metric.jacobian_fast) at the inner points of a grid × grid square, as its
    eigenvalues lam1 ≤ lam2 and eigenvectors (u1x, u1y), (u2x, u2y)."""
    import torch

    from geodesic.core.metric import jacobian_fast

    rows = []
    inner = torch.linspace(-span, span, grid)[1:-1]
    for a in inner:
        for b in inner:
            J = jacobian_fast(model, torch.stack([a, b]), X, "logits").double()
            lam, U = torch.linalg.eigh(J.T @ J)
            rows.append({"w1": float(a), "w2": float(b), "lam1": float(lam[0]), "lam2": float(lam[1]),
                         "u1x": float(U[0, 0]), "u1y": float(U[1, 0]), "u2x": float(U[0, 1]), "u2y": float(U[1, 1])})
    return pd.DataFrame(rows)


def walk(model, w_start, X, beta: float, eps: float, max_steps: int) -> tuple[pd.DataFrame, str]:
    """The engine's path (path.Path, sparsify field toward w2 = 0, exact tangent solver, φ = identity):
    one row per step with its weights, and how it ended."""
    import torch

    from geodesic.core.objectives import sparsify
    from geodesic.core.path import Evaluation, Path, PathConfig

    cfg = PathConfig(phi="logits", beta=beta, eps=eps, probe=len(X), max_steps=max_steps, eval_every=max_steps,
                     snapshot_every=1, solver="explicit")
    target, y = torch.tensor([False, True]), torch.zeros(len(X), dtype=torch.long)
    path = Path(model, w_start, sparsify(target), cfg, lambda size: (X, y), Evaluation(X, y, distance_batch=len(X)),
                [], target=target)
    steps = [{"step": s.step, "phase": s.phase, "length": s.length, "distance": s.distance, "mu": s.mu} for s in path]
    snaps = dict(path.snapshots)
    trace = pd.DataFrame(steps).drop_duplicates("step", keep="last").reset_index(drop=True)
    trace["w1"] = [float(snaps[s][0]) for s in trace["step"]]
    trace["w2"] = [float(snaps[s][1]) for s in trace["step"]]
    return trace, str(getattr(path.status, "value", path.status))


def landscape(w_start: tuple[float, float], beta: float, eps: float, max_steps: int = 200, grid: int = 41,
              span: float = 2.5, ellipse_grid: int = 7, count: int = 8) -> dict[str, pd.DataFrame]:
    """Everything the Playground draws for TwoWeightNet started at `w_start` on `count` fixed inputs:
    contours of D(w, w_start), metric ellipses, the path to w2 = 0 and its status."""
    import torch

    model, X = two_weight_net(*w_start), points(count)
    w0 = torch.tensor(w_start, dtype=torch.float32)
    trace, status = walk(model, w0, X, beta, eps, max_steps)
    return {"contours": contours(model, w0, X, span, grid), "ellipses": ellipses(model, X, span, ellipse_grid),
            "path": trace, "status": pd.DataFrame([{"status": status, "steps": int(trace["step"].max())}])}


def warm_metric() -> None:
    """One tiny metric (K, Jθ, Jᵀu) so that a run's first step does not pay torch's one-time set-up
    (forward-mode AD loads and scripts its decompositions on first use: ~2 s on this CPU)."""
    import torch

    from geodesic.core.metric import Metric

    m = Metric(two_weight_net(), torch.zeros(2), points(4), "logits")
    m.gram()
    m.vjp(m.jvp(torch.ones(2)))


__all__ = ["two_weight_net", "points", "landscape", "warm_metric"]
