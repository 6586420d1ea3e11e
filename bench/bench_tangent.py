"""Speed, memory and agreement of the tangent solvers (exact, matrix_free, cvxpy SCS / Clarabel).

    python bench/bench_tangent.py             # small sizes + (320, 20000), (1000, 5000), (500, 60000)
    python bench/bench_tangent.py --quick     # small sizes only (smoke test, < 30 s, nothing saved)
    python bench/bench_tangent.py --sizes 320x20000 --csv out.csv

Except with --quick, the table is saved to bench/results/tangent.{md,csv} (docs/results.md: Tangent solver).

Each (method, size) runs in a fresh process (forked from a server that has imported torch and cvxpy but
run nothing) that loads the saved problem, records ru_maxrss, solves, and records ru_maxrss again:
"peak" is the process high-water mark, "extra" what the solve added on top of the loaded problem (torch
allocations are invisible to tracemalloc). exact and matrix_free: median of --repeats timed runs after
one warm-up; cvxpy: one run, canonicalization included (that is its cost). One torch thread by default:
SCS and Clarabel run on one core, and on a shared 2-core machine two OpenMP threads can make small
LAPACK calls 100× slower (exact at 50×500: 1 ms with one thread, 150 ms with two under load 3).
Problem: J = A diag(s) B with s log-spaced over 10^0 … 10^-3, A: (k, k), B: (k, n) Gaussian; v = −w on a
random 10% of coordinates (a sparsify-like target, mostly off J's row space), all seeded, float64.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
QUICK = [(50, 500), (400, 300)]  # k < n and k > n
SMALL = [(50, 500), (100, 2000), (400, 300)]
LARGE = [(320, 20000), (1000, 5000), (500, 60000)]
METHODS = ["exact", "matrix_free", "cvxpy-SCS", "cvxpy-CLARABEL"]
CVXPY_MAX_KN = 2e7  # above this cvxpy needs minutes and ~6 GB (500×60000: 85–253 s): skipped unless --full


def make_problem(k: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(k, k, generator=g, dtype=torch.float64) / k**0.5
    s = torch.logspace(0, -3, k, dtype=torch.float64)
    J = (A * s) @ (torch.randn(k, n, generator=g, dtype=torch.float64) / n**0.5)
    w = 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    mask = torch.rand(n, generator=g) < 0.1
    return J, torch.where(mask, -w, torch.zeros_like(w))


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(path: str, method: str, beta: float, eps: float, repeats: int, threads: int, conn) -> None:
    """Runs in a fresh process (forked from a server that has only imported the modules): load, solve."""
    from geodesic.core.tangent import solve_cvxpy, solve_tangent

    if threads:
        torch.set_num_threads(threads)
    J, v = torch.load(path)
    base = maxrss_mb()
    if method.startswith("cvxpy"):
        runs = [lambda: solve_cvxpy(J, v, beta, eps, solver=method.split("-")[1])]
    else:
        solve = lambda: solve_tangent(J, v, beta, eps, method)  # noqa: E731
        solve()  # warm-up
        runs = [solve] * repeats
    times = []
    for run in runs:
        t = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t)
    peak = maxrss_mb()
    conn.send(dict(time=statistics.median(times), runs=len(times), peak_mb=peak, extra_mb=peak - base,
                   objective=res.objective, mu=res.mu, iterations=res.iterations))


def measure(ctx, path: str, method: str, args: argparse.Namespace) -> dict:
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=child, args=(path, method, args.beta, args.eps, args.repeats, args.threads, send))
    p.start()
    send.close()
    got = recv.poll(args.timeout)
    out = recv.recv() if got else None
    p.join(5)
    if p.is_alive():
        p.kill()
        p.join()
    if out is None:
        return dict(status=f"timeout > {args.timeout:.0f} s" if not got else f"failed (exit {p.exitcode})")
    return dict(status="ok", **out)


def bench_size(ctx, k: int, n: int, args: argparse.Namespace, tmp: str) -> list[dict]:
    path = os.path.join(tmp, f"problem_{k}x{n}.pt")
    torch.save(make_problem(k, n, args.seed), path)
    rows = []
    for method in args.methods:
        if method.startswith("cvxpy") and k * n > CVXPY_MAX_KN and not args.full:
            r = dict(status=f"skipped (k·n > {CVXPY_MAX_KN:.0e}; --full)")
        else:
            r = measure(ctx, path, method, args)
        rows.append(dict(k=k, n=n, method=method, **r))
        print(f"  {k}x{n} {method}: {r.get('status')} {r.get('time', '')}", file=sys.stderr, flush=True)
    os.remove(path)
    ok = [r for r in rows if r["status"] == "ok"]
    best = min(r["objective"] for r in ok) if ok else None
    for r in ok:
        r["gap"] = (r["objective"] - best) / abs(best) if best else 0.0
    by = {r["method"]: r for r in ok}
    if "exact" in by and "cvxpy-SCS" in by:
        by["exact"]["speedup_vs_scs"] = by["cvxpy-SCS"]["time"] / by["exact"]["time"]
    return rows


COLUMNS = ["k", "n", "method", "status", "time", "runs", "peak_mb", "extra_mb", "objective", "gap", "mu",
           "iterations", "speedup_vs_scs"]


def fmt(key: str, x) -> str:
    if x is None or x == "":
        return ""
    if key == "time":
        return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"
    if key in ("peak_mb", "extra_mb"):
        return f"{x:.0f}"
    if key in ("objective", "mu"):
        return f"{x:.10g}"
    if key == "gap":
        return f"{x:.1e}"
    if key == "speedup_vs_scs":
        return f"{x:.0f}×"
    return str(x)


def markdown(rows: list[dict]) -> str:
    head = ["k", "n", "method", "time (median)", "runs", "peak RSS MB", "extra RSS MB", "objective",
            "rel. gap to best", "μ", "iters", "exact vs SCS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [fmt(c, r.get(c)) for c in COLUMNS]
        if r["status"] != "ok":
            cells[4] = r["status"]
        del cells[3]  # status shown in the time column
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_size(s: str) -> tuple[int, int]:
    k, n = s.lower().split("x")
    return int(k), int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument("--full", action="store_true", help="run cvxpy at every size, 500x60000 included")
    ap.add_argument("--sizes", nargs="+", type=parse_size, help="sizes as KxN, e.g. 320x20000")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--beta", type=float, default=0.01)
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs for exact / matrix_free")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per (method, size) process")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run; 0: torch's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", type=Path, help="also write the table as CSV here")
    args = ap.parse_args()
    sizes = args.sizes or (QUICK if args.quick else SMALL + LARGE)
    ctx = multiprocessing.get_context("forkserver")  # children start with the imports done, no OpenMP state
    ctx.set_forkserver_preload(["torch", "cvxpy", "scs", "clarabel", "geodesic.core.tangent"])
    rows, load0 = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in sizes:
            rows += bench_size(ctx, k, n, args, tmp)
    note = (f"float64, β = {args.beta}, ε = {args.eps}, torch {torch.__version__}, "
            f"{args.threads or torch.get_num_threads()} torch thread(s) on {os.cpu_count()} cores, load average "
            f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. Median of {args.repeats} runs "
            f"(cvxpy: 1); gap: (objective − best)/|best|; extra RSS: ru_maxrss growth during the solve.")
    table = markdown(rows)
    print(table + "\n\n" + note)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "tangent.md").write_text(table + "\n\n" + note + "\n")
        write_csv(RESULTS / "tangent.csv", rows)
    if args.csv:
        write_csv(args.csv, rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
