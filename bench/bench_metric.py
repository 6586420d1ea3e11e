"""Cost of the metric on nets with BatchNorm and skip connections, against the floor of any exact step.

The floor: one forward pass and m = 10 backward passes of the probe batch (parameter gradients, as training
computes them), with no per-layer work; every route to J needs at least that. Measured in the same process as
what it bounds:
- ResNet8 (zoo.ResNet8, random init, eval mode), probe 32: `Metric.gram_jvp` (K = JJᵀ and Jv) with the
  per-layer route rule, with every layer forced to the explicit route, and one step of a real path (solver
  "gram": K, Jv, the exact solve and the step's bookkeeping), each as a multiple of the floor.
- torchvision ResNet-18 (11.2 M weights; 1-channel 3×3 stem, no max-pool, 28×28 inputs), eval mode, probe 8
  and 32: one gram_jvp with the route rule and one with every layer explicit, each in a fresh process between
  two floor runs (× floor against their mean), with the peak resident memory (ru_maxrss) after the first floor
  and after gram_jvp (J itself would be 320 × 11.2 M floats = 14 GB at probe 32).
All on one torch thread with the engine's allocator policy (threads.configure); the load average before and after goes into the note.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import pandas as pd
import torch
from common import save
from torch import nn
from torch.func import functional_call

from geodesic.core import metric
from geodesic.core.objectives import BatchSampler, sparsify
from geodesic.core.params import flatten, group_mask, output_unit_groups, spec_of, unflatten
from geodesic.core.path import Evaluation, Path, PathConfig
from geodesic.infra import threads
from geodesic.store import data, zoo

PHI = "sqrt_probs"


def floor(model: nn.Module, w: torch.Tensor, x: torch.Tensor) -> None:
    """Forward + one backward pass per output class to every parameter (an ordinary backward, as in training,
    on the parameter tensors themselves, not on slices of the flat w): no per-layer work."""
    params = {k: t.detach().requires_grad_(True) for k, t in unflatten(spec_of(model), w).items()}
    out = functional_call(model, {**params, **dict(model.named_buffers())}, (x,))
    y = metric.output_map(PHI)(out) / x.shape[0] ** 0.5
    for c in range(y.shape[1]):
        torch.autograd.grad(y[:, c].sum(), list(params.values()), retain_graph=c < y.shape[1] - 1)


def tape(model: nn.Module, w: torch.Tensor, x: torch.Tensor) -> None:
    """What gram_jvp runs before its per-layer work: forward + m − 1 backward passes to the layer outputs (the
    rows of J in the basis of directions √softmax can move in, metric.row_basis)."""
    metric.LayerTape(model, w, x, PHI, reduce=True).output_grads()


def blocks_and_products(model: nn.Module, w: torch.Tensor, x: torch.Tensor) -> tuple[callable, callable, int]:
    """(form every layer's blocks J_c, K's products alone on blocks formed beforehand, multiply-adds of those
    products): the two parts of gram_jvp after the tape, every layer explicit."""
    tp = metric.LayerTape(model, w, x, PHI, reduce=True)
    grads = tp.output_grads()
    kept = [Jc.clone() for layer, gs in grads.items() for _, Jc, _ in tp.blocks(layer, gs)]
    k = kept[0].shape[0]

    def form() -> None:
        for layer, gs in grads.items():
            for _ in tp.blocks(layer, gs):
                pass

    def products() -> None:
        for Jc in kept:
            metric.gram(Jc, upper=True)

    return form, products, k * k * w.numel() // 2


def median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each callable, the callables interleaved so that load changes hit them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def path_step(model: nn.Module, steps: int) -> dict[str, float]:
    """Median per-step times of a sparsify path on ResNet8 (8 filters of layer3.conv2, MNIST probe batches)."""
    train, test = data.load("mnist", "train", "bundled"), data.load("mnist", "test", "bundled")
    w0 = flatten(model)
    groups = output_unit_groups(model, ["layer3.conv2"])
    target = group_mask(groups[:8], w0.numel())
    cfg = PathConfig(probe=32, max_steps=steps, eval_every=10 * steps, snapshot_every=steps, solver="gram")
    p = Path(model, w0, sparsify(target), cfg, BatchSampler.of(train, 0), Evaluation(test.x[:500], test.y[:500]),
             groups, target=target)
    recs = [s for s in p if s.step > 0 and s.phase == "walk"]
    return {"metric": statistics.median(s.t_jacobian for s in recs),
            "solve": statistics.median(s.t_solve for s in recs), "other": statistics.median(s.t_other for s in recs),
            "step": statistics.median(s.t_jacobian + s.t_solve + s.t_other for s in recs),
            "tangent": statistics.median(s.t_jacobian + s.t_solve for s in recs)}


def resnet8_rows(repeats: int, steps: int) -> list[dict]:
    torch.manual_seed(0)
    model = zoo.ResNet8().eval()
    w, x = flatten(model), data.load("mnist", "train", "bundled").x[:32]
    v = torch.randn(w.numel())
    form, products, macs = blocks_and_products(model, w, x)
    t = median_seconds({
        "floor": lambda: floor(model, w, x),
        "tape": lambda: tape(model, w, x),
        "form": form,
        "products": products,
        "auto": lambda: metric.Metric(model, w, x, PHI).gram_jvp(v),
        "explicit": lambda: metric.Metric(model, w, x, PHI, route="explicit").gram_jvp(v),
    }, repeats)
    M = metric.Metric(model, w, x, PHI)
    M.gram_jvp(v)
    gram_layers = [k for k, r in M.routes.items() if r == "gram"]
    step = path_step(model, steps)
    base = dict(net="ResNet8", weights=w.numel(), probe=32)
    f, form_s = t["floor"], t["form"]
    return [
        {**base, "what": "floor: forward + 10 backward passes", "seconds": f, "× floor": 1.0},
        {**base, "what": "forward + 9 backward passes to the layer outputs (gram_jvp's first part: m − 1 rows per "
                         "sample, √softmax's outputs move in 9 directions)", "seconds": t["tape"], "× floor": t["tape"] / f},
        {**base, "what": "every layer's blocks J_l formed (gram_jvp's second part)", "seconds": form_s,
         "× floor": form_s / f},
        {**base, "what": f"K's products alone, J_l J_lᵀ by syrk ({macs / 1e9:.2f} G multiply-adds: (B·9)²·n/2)",
         "seconds": t["products"], "× floor": t["products"] / f},
        {**base, "what": f"gram_jvp, route rule (Gram trick: {', '.join(gram_layers) or 'none'})",
         "seconds": t["auto"], "× floor": t["auto"] / f},
        {**base, "what": "gram_jvp, every layer explicit", "seconds": t["explicit"], "× floor": t["explicit"] / f},
        {**base, "what": f"path step, median of {steps} (metric {step['metric']:.2f} s, solve {step['solve']:.2f} s, "
                         f"other {step['other']:.2f} s: the record, D on 256 held-out images)", "seconds": step["step"],
         "× floor": step["step"] / f},
        {**base, "what": "path step's tangent alone (metric + solve: K, Jv, eigh, 2 Jᵀu)", "seconds": step["tangent"],
         "× floor": step["tangent"] / f},
    ]


def resnet18() -> nn.Module:
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net.eval()


def child(route: str, probe: int) -> None:
    """In this fresh process: the floor, gram_jvp with `route` twice (the second timed: a path's later steps, after
    the first has set up the convolution kernels for these shapes), the floor again; prints a JSON line with the
    gram_jvp's time, the mean floor time, and the peak resident memory after the first floor and after gram_jvp."""
    threads.configure(1)  # the engine's policy: one thread, freed memory kept (geodesic.infra.allocator)
    torch.manual_seed(0)
    model = resnet18()
    w, x = flatten(model), data.load("mnist", "train", "bundled").x[:probe]
    v = torch.randn(w.numel())
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731  (KiB on Linux)
    start = peak()
    t0 = time.perf_counter()
    floor(model, w, x)
    first_floor = time.perf_counter() - t0
    floor_peak = peak()
    metric.Metric(model, w, x, PHI, route=route).gram_jvp(v)  # a path's first step: kernels set up, pages touched
    t1 = time.perf_counter()
    M = metric.Metric(model, w, x, PHI, route=route)
    M.gram_jvp(v)
    t2 = time.perf_counter()
    gram_peak = peak()
    floor(model, w, x)
    t3 = time.perf_counter()
    print(json.dumps({"seconds": t2 - t1, "floor": (first_floor + t3 - t2) / 2, "floor_peak_mb": floor_peak,
                      "peak_mb": gram_peak, "start_mb": start, "n": w.numel(),
                      "gram": [k for k, r in M.routes.items() if r == "gram"]}))


def resnet18_rows(probes: list[int]) -> list[dict]:
    rows = []
    for probe in probes:
        out = {}
        for route in ("auto", "explicit"):
            res = subprocess.run([sys.executable, __file__, "--child", route, str(probe)], capture_output=True,
                                 text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            out[route] = json.loads(res.stdout.strip().splitlines()[-1])
        g, e = out["auto"], out["explicit"]
        base = dict(net="ResNet-18", weights=g["n"], probe=probe)
        rows.append({**base, "what": f"floor: forward + 10 backward passes (model loaded: {g['start_mb']:.0f} MB)",
                     "seconds": g["floor"], "× floor": 1.0, "peak RSS MB": g["floor_peak_mb"]})
        rows.append({**base, "what": f"gram_jvp, route rule (Gram trick on {len(g['gram'])} layers: "
                                     f"{', '.join(sorted(g['gram']))})",
                     "seconds": g["seconds"], "× floor": g["seconds"] / g["floor"], "peak RSS MB": g["peak_mb"]})
        rows.append({**base, "what": "gram_jvp, every layer explicit", "seconds": e["seconds"],
                     "× floor": e["seconds"] / e["floor"], "peak RSS MB": e["peak_mb"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5, help="ResNet8 timings: median of this many")
    ap.add_argument("--steps", type=int, default=6, help="path steps on ResNet8")
    ap.add_argument("--probes", type=int, nargs="*", default=[8, 32], help="ResNet-18 probe batch sizes")
    ap.add_argument("--child", nargs=2, metavar=("ROUTE", "PROBE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    threads.configure(1)  # the engine's policy: one thread, freed memory kept (geodesic.infra.allocator)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rows = resnet8_rows(args.repeats, args.steps) + resnet18_rows(args.probes)
    load1 = os.getloadavg()
    df = pd.DataFrame(rows)
    df["peak RSS MB"] = [f"{v:.0f}" if v == v else "—" for v in df["peak RSS MB"]]
    note = (f"1 torch thread; φ = √softmax, m = 10 classes; MNIST images; random initialization, eval mode. "
            f"Load average (1/5/15 min) {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before and "
            f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after, on {os.cpu_count()} cores; {time.perf_counter() - t0:.0f} s in all. ResNet8 rows: "
            f"median of {args.repeats} interleaved repeats in one process. ResNet-18 rows: each gram_jvp in a fresh "
            "process between two floor runs (× floor against their mean); peak RSS = ru_maxrss, torch and the model "
            "included.")
    print(save("metric", df, note, ".3g"))


if __name__ == "__main__":
    main()
