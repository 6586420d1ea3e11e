"""Sweeps: the sparsity–accuracy front per method, data budgets, the paper's recipe, Ray's overhead.

    python bench/bench_sweep.py front [--dataset fashion-mnist] [--seconds 120]   # 2 loopback nodes, `geodesic sweep --address`
    python bench/bench_sweep.py front --model resnet8 --fractions 0.5 --seconds 240
    python bench/bench_sweep.py data  [--seconds 60]     # 1,000 and 100 training images at 50 of 60 filters
    python bench/bench_sweep.py overhead                 # the same cells in a plain loop and on a local Ray
    python bench/bench_sweep.py report                   # the tables again from the sweep folders
    python bench/bench_sweep.py checked --model resnet8  # geodesic cells of a front rerun with the self-checking step
    python bench/bench_sweep.py checked --parts grow --label grow  # ... from folders <front>-grow, as sweep-grow-<front>
    python bench/bench_sweep.py alive                    # every zoo net: geodesic against fine-tuning, side by side
    python bench/bench_sweep.py alive --label grow       # ... from folders <front>-grow, as sweep-alive-grow
    python bench/bench_sweep.py side --model resnet8 --parts side   # every method of sweeps run side by side
    python bench/bench_sweep.py regression --parts fronts  # lenet60's default against its stored front, by margin

Every cell is `geodesic sweep`'s: the same CPU budget on one thread per task, full test sets. The front runs the
command unchanged against a two-node Ray cluster simulated on this machine (tools/ray_cluster.py: `ray start`
on 127.0.0.1 only) and records which node ran each cell. Sweep folders go to bench/out/sweeps/ (not kept in
git); their results tables and the summaries go to bench/results/sweep-*.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from common import RESULTS, ROOT, save

from geodesic.experiments import fronts

OUT = ROOT / "bench" / "out" / "sweeps"
CKPT = ROOT / "assets" / "checkpoints"
LEVELS = "30,40,50,55,58"
METHODS = "geodesic,magnitude,finetune,distill,fip"


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def sweep(args: list[str], env: dict | None = None) -> float:
    """`python -m geodesic sweep ARGS`; its wall seconds (the command's own progress bar shows on stderr)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "geodesic", "sweep", *args], cwd=ROOT, env=env)
    if r.returncode not in (0, 1):
        raise SystemExit(f"sweep failed with exit code {r.returncode}")
    return time.perf_counter() - t0


def mean_sd(table: pd.DataFrame, by: tuple[str, ...]) -> pd.DataFrame:
    """geodesic.experiments.fronts.front as printed: accuracy "mean ± sd", seeds, CPU seconds, steps."""
    f = fronts.front(table, by)
    f["accuracy"] = [f"{m:.4f} ± {s:.4f}" for m, s in zip(f["mean"], f["sd"])]
    return f.drop(columns=["mean", "sd"]).round({"seconds": 1, "steps": 0})


def front_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per sparsity, one column per method: accuracy mean ± sd over seeds, the best mean in bold."""
    f = fronts.front(table)
    rows = []
    for filters, part in f.groupby("filters"):
        best = part.loc[part["mean"].idxmax(), "method"]
        row = {"filters zeroed": int(filters)}
        for _, r in part.iterrows():
            cell = f"{r['mean']:.4f} ± {r['sd']:.4f}"
            row[r["method"]] = f"**{cell}**" if r["method"] == best else cell
        rows.append(row)
    return pd.DataFrame(rows)


def front_name(a: argparse.Namespace) -> str:
    """front-<dataset> for lenet60 (its table names predate other models), else front-<model>-<dataset>."""
    return f"front-{a.dataset}" if a.model == "lenet60" else f"front-{a.model}-{a.dataset}"


def run_front(a: argparse.Namespace) -> None:
    from tools.ray_cluster import start_cluster, stop_cluster

    name = front_name(a)
    out = OUT / name
    load0 = load()
    levels = ["--fractions", a.fractions] if a.fractions else ["--filters", LEVELS]
    before = set(pd.read_csv(out / "results.csv")["cell"]) if (out / "results.csv").is_file() else set()
    address, pgids = start_cluster(nodes=2, cpus_per_node=1, port=a.port)
    try:
        wall = sweep(["--checkpoint", str(CKPT / f"{a.model}-{a.dataset}.safetensors"), *levels,
                      "--methods", METHODS, "--seeds", "0,1,2", "--seconds", str(a.seconds), "--out", str(out),
                      "--address", address], env=dict(os.environ))
    finally:
        stop_cluster(pgids)
    meta = RESULTS / f"sweep-{name}.meta"
    new = len(set(pd.read_csv(out / "results.csv")["cell"]) - before)
    if meta.is_file() and before and new:  # a grown sweep (more sparsities): its cells and wall time are added
        meta.write_text(meta.read_text() + f"grown={' '.join(levels)}|{new}|{wall:.0f}|{load0}|{load()}\n")
    elif meta.is_file():  # a resumed sweep: the first pass's wall time stays, this pass's is added
        meta.write_text(meta.read_text() + f"rerun_s={wall:.0f}\n")
    else:
        meta.write_text(f"wall_s={wall:.0f}\nload_start={load0}\nload_end={load()}\nseconds={a.seconds}\n")
    report_front(a)


def ship(out, name: str) -> None:
    """The sweep's table (sweep.json, results.csv/.parquet, no cell folders) as the app's shipped example
    assets/gallery/sweeps/<name>: the Sweeps page shows it on a first visit."""
    import shutil

    dest = ROOT / "assets" / "gallery" / "sweeps" / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("results.csv", "results.parquet"):
        shutil.copy2(out / f, dest / f)
    spec = json.loads((out / "sweep.json").read_text())  # the checkpoint as a path in this repository
    ckpt = Path(spec["source"]["checkpoint"])
    spec["source"]["checkpoint"] = str(ckpt.relative_to(ROOT)) if ckpt.is_relative_to(ROOT) else ckpt.name
    (dest / "sweep.json").write_text(json.dumps(spec, indent=2) + "\n")


def report_front(a: argparse.Namespace) -> None:
    name = front_name(a)
    out = OUT / name
    ship(out, f"front-{a.model}-{a.dataset}")
    table = pd.read_csv(out / "results.csv")
    table.to_csv(RESULTS / f"sweep-{name}-cells.csv", index=False)
    lines = (RESULTS / f"sweep-{name}.meta").read_text().split("\n")
    meta = dict(line.split("=", 1) for line in lines if "=" in line)
    grown = [line.split("=", 1)[1].split("|") for line in lines if line.startswith("grown=")]
    nodes = table.groupby("node")["cell"].count()
    node_note = ", ".join(f"node {n[:8]}…: {c} cell{'s' * (c != 1)}" for n, c in nodes.items())
    if "first_pass_nodes" in meta:  # rows kept on resume lost their node before the cells recorded it
        node_note = f"first pass {meta['first_pass_nodes']}; cells run again: {node_note}"
    words = (("filters", "sparsity", "sparsities"), ("method", "method", "methods"), ("seed", "seed", "seeds"))
    grid = " × ".join(f"{n} {one if n == 1 else many}" for n, one, many in ((table[c].nunique(), o, m) for c, o, m in words))
    levels = (f"fractions {', '.join(f'{x:g}' for x in sorted(table['fraction'].dropna().unique()))} of the groups"
              if "fraction" in table and table["fraction"].notna().any() else "filters zeroed as in the first column")
    note = (f"{a.model} on {a.dataset}, full training split (geodesic, distill and fip use no labels), full test set; "
            f"{len(table)} cells ({grid}; {levels}), each {meta['seconds']} CPU seconds on one "
            f"thread (geodesic: the recommended setting, its relaxation fitted to what the budget leaves after the "
            f"walk). `geodesic sweep --address` on two Ray nodes started on this 2-core machine with `ray start` "
            f"(127.0.0.1 only, one CPU each): {node_note}. Wall time of the whole sweep {float(meta['wall_s']) / 60:.1f}"
            f" min{' (target ≤ 90)' if a.model == 'lenet60' else ''}. Load average {meta['load_start']} at the start, {meta['load_end']} at the end."
            + (f" Cells run again after a change, resuming the same command (a new cluster, so new node ids): "
               f"{float(meta['rerun_s']) / 60:.1f} min."
               if "rerun_s" in meta else "")
            + "".join(f" Grown later by `{g[0]}` (the same command with more sparsities): {g[1]} new cells in "
                      f"{float(g[2]) / 60:.1f} min, load average {g[3]} at the start, {g[4]} at the end."
                      for g in grown))
    md = save(f"sweep-{name}", front_table(table), note)
    print(md)
    rec = fronts.recipe(table)
    if len(rec):
        print(save(f"sweep-recipe-{name.removeprefix('front-')}", rec,
                   "Geodesic cells of the front, one path per seed at each sparsity (3 paths): the paper's recipe "
                   "keeps the shortest. r: Pearson correlation over the 3 paths (negative: shorter is more "
                   "accurate)."))


def run_data(a: argparse.Namespace) -> None:
    out = OUT / f"data-{a.dataset}"
    load0 = load()
    wall = sweep(["--checkpoint", str(CKPT / f"lenet60-{a.dataset}.safetensors"), "--filters", "50",
                  "--methods", "geodesic,finetune,distill,fip", "--seeds", "0,1,2", "--data", "1000,100",
                  "--seconds", str(a.seconds), "--out", str(out), "--workers", "2"])
    table = pd.read_csv(out / "results.csv")
    table.to_csv(RESULTS / f"sweep-data-{a.dataset}-cells.csv", index=False)
    print(save(f"sweep-data-{a.dataset}", mean_sd(table, ("data", "method")),
               f"lenet60 on {a.dataset}, 50 of 60 filters zeroed, with only 1,000 or 100 training images (the same "
               f"images for every method; labels used by finetune only), {a.seconds} CPU seconds per cell on one "
               f"thread, 3 seeds, full test set. Local Ray, 2 workers; {wall / 60:.1f} min. Load average {load0} at "
               f"the start, {load()} at the end."))


def run_overhead(a: argparse.Namespace) -> None:
    """The same cells (fip and distill at 50 filters, 3 seeds, 30 CPU s each) in a plain loop in one process and
    as Ray tasks on a local Ray with one worker (both sequential, so wall times compare); Ray's start included."""
    import shutil

    base = ["--checkpoint", str(CKPT / f"lenet60-{a.dataset}.safetensors"), "--filters", "50",
            "--methods", "fip,distill", "--seeds", "0,1,2", "--seconds", "30", "--data", "1000"]
    rows, load0 = [], load()
    for backend in ("loop", "ray"):
        out = OUT / f"overhead-{backend}"
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--backend", "loop"] if backend == "loop" else ["--workers", "1"]
        wall = sweep([*base, *extra, "--out", str(out)])
        cells = pd.read_csv(out / "results.csv")
        rows.append({"backend": backend, "cells": len(cells), "wall s": wall, "cells' own wall s": cells["wall"].sum(),
                     "outside the cells s": wall - cells["wall"].sum(), "CPU budget s": cells["seconds"].sum()})
    df = pd.DataFrame(rows)
    loop, ray = df.iloc[0], df.iloc[1]
    total = (ray["wall s"] - loop["wall s"]) / loop["cells' own wall s"]
    extra = (ray["outside the cells s"] - loop["outside the cells s"]) / loop["cells' own wall s"]
    print(save("sweep-overhead", df,
               f"Ray's overhead against a plain loop, the same {int(loop['cells'])} cells one after another "
               f"(lenet60 {a.dataset}, 30 CPU s each): what Ray adds outside the cells (its start and stop, "
               f"scheduling, each worker's imports and data loading) is {extra:+.1%} of the cells' time (target "
               f"≤ 5%); the whole wall time differs by {total:+.1%}, which includes the cells' own wall-time "
               f"noise under load. Load average {load0} at the start, {load()} at the end."))


def checked_front(a: argparse.Namespace) -> None:
    """The geodesic cells of a front run again with the self-checking step (geodesic.core.trust) in
    bench/out/sweeps/<front>-<part> for each --parts (`geodesic sweep --methods geodesic --backend loop` or on Ray),
    beside the front's stored cells of the other methods, whose code did not change: one row per sparsity, the
    geodesic before and after, the best other method, and the verdict (level: the means differ by less than the two
    spreads together)."""
    name = front_name(a)
    new = sweep_cells(name, a.parts)
    old = pd.read_csv(RESULTS / f"sweep-{name}-cells.csv")
    before = fronts.front(old[old["method"] == "geodesic"]).set_index("filters")
    others = fronts.front(old[old["method"] != "geodesic"])
    after = fronts.front(new)
    rows = []
    for filters, part in after.groupby("filters"):
        best = others[others["filters"] == filters].sort_values("mean").iloc[-1]
        row = {"filters zeroed": int(filters), "geodesic before": _ms(before.loc[filters])}
        for _, r in part.iterrows():
            row[f"{r['method']} (checked)"] = f"{_ms(r)} ({int(r['seeds'])} seeds)"
        g = part[part["method"] == "geodesic"].iloc[0]
        gap, verdict = compare(g, best)
        tuned = others[(others["filters"] == filters) & (others["method"] == "finetune")].iloc[0]
        alive = "alive" if g["mean"] >= tuned["mean"] - 0.05 else "below"
        rows.append({**row, "best other": f"{best['method']} {_ms(best)}", "geodesic vs best": f"{gap:+.4f} ({verdict})",
                     "vs fine-tuning": f"{g['mean'] - tuned['mean']:+.4f} ({alive})"})
    budget = sweep_seconds(name, a.parts)
    note = (f"{a.model} on {a.dataset}, full test set, a budget of {budget:g} CPU s a cell on one thread (the stored "
            f"cells': {int(old['seconds'].max() + 0.5)} s at most spent). 'geodesic before': the stored "
            f"front (fixed ε = 0.1); '(checked)': the same cells run again with the default walk of today (every step "
            f"checking itself, geodesic.core.trust; the walk due within half the budget, else projected and restored "
            f"by descent, sparsify.sparsify_phases), from sweep folders {a.parts} (a cell run again in a later one "
            f"counts once, its last run). The other methods are the stored "
            f"front's cells (their code is unchanged). Level: the means differ by less than the two seed spreads "
            f"together. Alive: no more than 5 points below magnitude pruning + fine-tuning. "
            f"Load average at the report: {load()}.")
    print(save(f"sweep-{a.label or 'checked'}-{name}", pd.DataFrame(rows), note))


def side_by_side(a: argparse.Namespace) -> None:
    """Every method of the sweep folders <front>-<part> (--parts), run in the same sweeps, with today's code and
    today's machine: a CPU budget buys a machine's steps, and the stored front's baselines took two to three times as
    many steps per CPU second as the same cells do today, so only cells run together compare. One row per sparsity:
    each method's mean ± sd and mean steps, and the geodesic against the best other method."""
    name = front_name(a)
    cells = sweep_cells(name, a.parts)
    table = fronts.front(cells)
    rows = []
    for filters, part in table.groupby("filters"):
        row = {"groups zeroed": int(filters)}
        for _, r in part.sort_values("method").iterrows():
            row[r["method"]] = f"{_ms(r)} ({int(r['seeds'])}; {r['steps']:.0f} steps)"
        others = part[part["method"] != "geodesic"].sort_values("mean")
        g = part[part["method"] == "geodesic"]
        if len(g) and len(others):
            g, best = g.iloc[0], others.iloc[-1]
            gap, verdict = compare(g, best)
            row["geodesic vs best"] = f"{gap:+.4f} against {best['method']} ({verdict})"
        rows.append(row)
    budget = sweep_seconds(name, a.parts)
    note = (f"{a.model} on {a.dataset}, full test set, {budget:g} CPU s a cell on one thread, every method run in "
            f"the same sweep folders ({a.parts}; a cell run again in a later one counts once, its last run), two "
            f"cells at a time on this 2-core machine. Each cell: mean ± sd (seeds; mean steps a cell). +recal: "
            f"BatchNorm statistics re-estimated on unlabeled training images at the mask "
            f"(geodesic.experiments.methods). Level: the means differ by less than the two seed spreads together. "
            f"Load average at the report: {load()}.")
    methods = sorted(table["method"].unique(), key=lambda m: (m != "geodesic", m))
    columns = ["groups zeroed", *methods, "geodesic vs best"]
    print(save(f"sweep-side-{name}", pd.DataFrame(rows).reindex(columns=columns).fillna("-"), note))


def regression(a: argparse.Namespace) -> None:
    """The geodesic and fine-tuning of sweep folders <front>-<part> (--parts), run side by side, against the stored
    front (sweep-front-<dataset>-cells.csv, another day): for each sparsity both accuracies, and the geodesic's margin
    over fine-tuning today and then. Since a CPU second buys different work on different days, the margin (both
    methods of one day) is what tells whether the default lost ground: kept when today's margin is no more than the
    two geodesic seed spreads together below the stored one."""
    name = front_name(a)
    today, stored = sweep_cells(name, a.parts), pd.read_csv(RESULTS / f"sweep-{name}-cells.csv")
    rows = []
    for filters in sorted(set(today["filters"]) & set(stored["filters"])):
        pick = lambda t, m: fronts.front(t[(t["method"] == m) & (t["filters"] == filters)]).iloc[0]  # noqa: E731
        g1, f1, g0, f0 = pick(today, "geodesic"), pick(today, "finetune"), pick(stored, "geodesic"), pick(stored, "finetune")
        m1, m0, spread = g1["mean"] - f1["mean"], g0["mean"] - f0["mean"], g1["sd"] + g0["sd"]
        rows.append({"filters zeroed": int(filters), "geodesic today": _ms(g1), "fine-tuning today": _ms(f1),
                     "geodesic stored": _ms(g0), "fine-tuning stored": _ms(f0),
                     "steps today (geodesic, fine-tuning)": f"{g1['steps']:.0f}, {f1['steps']:.0f}",
                     "steps stored": f"{g0['steps']:.0f}, {f0['steps']:.0f}",
                     "margin today": f"{m1:+.4f}", "margin stored": f"{m0:+.4f}",
                     "verdict": "kept" if m1 >= m0 - spread else "lost ground"})
    budget = sweep_seconds(name, a.parts)
    seeds = ", ".join(str(int(s)) for s in sorted(today["seed"].unique()))
    note = (f"{a.model} on {a.dataset}, full test set, {budget:g} CPU s a cell on one thread, seeds {seeds} (mean ± sd). Today: "
            f"the default geodesic and magnitude pruning + fine-tuning run in the same sweep folders ({a.parts}), two "
            f"cells at a time on this 2-core machine. Stored: the front of sweep-{name}.md, run on another day with "
            f"the geodesic of that day (a fixed ε). Margin: geodesic minus fine-tuning of the same day; kept when "
            f"today's margin is at most the two geodesic seed spreads together below the stored one. Load average at "
            f"the report: {load()}.")
    print(save(f"sweep-{a.label or 'regression'}-{name}", pd.DataFrame(rows), note))


def compare(g: pd.Series, best: pd.Series) -> tuple[float, str]:
    """(the geodesic's mean minus the best other's, and the verdict): level when they differ by less than the two
    seed spreads together."""
    gap, spread = g["mean"] - best["mean"], g["sd"] + best["sd"]
    return gap, "ahead" if gap > spread else "level" if gap >= -spread else "behind"


def sweep_seconds(name: str, parts: str) -> float:
    """The CPU budget a cell had in the first of the sweep folders <name>-<part> (sweep.json)."""
    return json.loads((OUT / f"{name}-{parts.split(',')[0]}" / "sweep.json").read_text())["seconds"]


def sweep_cells(name: str, parts: str) -> pd.DataFrame:
    """The results of sweep folders <name>-<part> for each of the comma-separated `parts` that exists; a cell run
    again in a later part replaces its earlier row."""
    paths = [OUT / f"{name}-{part}" / "results.csv" for part in parts.split(",")]
    tables = [pd.read_csv(p) for p in paths if p.is_file()]
    if not tables:
        return pd.DataFrame()
    return pd.concat(tables, ignore_index=True).drop_duplicates("cell", keep="last")


# each zoo net's sweep folders <front>-<part> holding its default geodesic and fine-tuning cells, run side by side
ALIVE = {"mlp": ("front-mlp-{ds}", "deadline,fronts"), "lenet60": ("front-{ds}", "fronts"),
         "resnet8": ("front-resnet8-{ds}", "side,side2,side3,half")}


def alive(a: argparse.Namespace) -> None:
    """Every zoo net on both datasets: the default geodesic cells against magnitude pruning + fine-tuning run in the
    same sweep folders (ALIVE, or <front>-<label> for every net with --label): alive when no more than 5 points
    below it. A sparsity without fine-tuning cells in those folders has no row."""
    rows = []
    for net, (folder, parts) in ALIVE.items():
        parts = a.label or parts
        for ds in ("fashion-mnist", "mnist"):
            new = sweep_cells(folder.format(ds=ds), parts)
            if new.empty:
                continue
            geo, tuned = fronts.front(new[new["method"] == "geodesic"]), fronts.front(new[new["method"] == "finetune"])
            for _, g in geo.iterrows():
                t = tuned[tuned["filters"] == g["filters"]]
                if t.empty:
                    continue
                gap = g["mean"] - t["mean"].iloc[0]
                part = new[(new["method"] == "geodesic") & (new["filters"] == g["filters"])]
                rows.append({"net": net, "dataset": ds, "groups zeroed": int(g["filters"]),
                             "geodesic": f"{_ms(g)} ({int(g['seeds'])} seeds)",
                             "restored by descent": f"{int((part['status'] == 'missed').sum())} of {len(part)}",
                             "fine-tuning": _ms(t.iloc[0]),
                             "vs fine-tuning": f"{gap:+.4f} ({'alive' if gap >= -0.05 else 'below'})",
                             "CPU s a cell": int(part["seconds"].max() + 0.5)})
    note = ("The default geodesic (recommended setting: every step self-checked; the walk due within half the "
            "budget, else projected and restored by descent, sparsify.sparsify_phases) against magnitude pruning + "
            "Adam on the labels at the same CPU budget, both run in the same sweep folders, one thread a cell, "
            "two cells at a time, full test sets, 3 seeds. lenet60: the sparsities of its front, of 60 filters "
            "(15 is a quarter, 30 half); resnet8 and the mlp (32 hidden units): a quarter and half of their groups. "
            "restored by descent: cells whose walk ended missed and were restored. Sweep folders <front>-<part>: "
            + "; ".join(f"{net} {a.label or parts}" for net, (_, parts) in ALIVE.items()
                        if any(r["net"] == net for r in rows)) + " (a cell run again in a "
            f"later part counts once, its last run). Load average at the report: {load()}.")
    print(save(f"sweep-alive{'-' + a.label if a.label else ''}", pd.DataFrame(rows), note))


def _ms(r) -> str:
    return f"{r['mean']:.4f} ± {r['sd']:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("front", "data", "overhead", "report", "checked", "alive", "side", "regression"))
    p.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    p.add_argument("--model", default="lenet60", choices=("lenet60", "resnet8"), help="the front's shipped net")
    p.add_argument("--fractions", default=None, help="front: fractions of the groups (e.g. 0.25,0.5) instead of "
                                                       "lenet60's filters " + LEVELS)
    p.add_argument("--seconds", type=float, default=None, help="CPU seconds per cell (front 120, data 60)")
    p.add_argument("--port", type=int, default=6390)
    p.add_argument("--parts", default="checked", help="checked: the sweep folders <front>-<part> to read")
    p.add_argument("--label", default="", help="checked, regression: the result files' name, sweep-<label>-<front> "
                   "(default: the part's name), so that a later rerun keeps the earlier table; alive: read the "
                   "folders <front>-<label> and write sweep-alive-<label>")
    a = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.part == "front":
        a.seconds = a.seconds or 120.0
        run_front(a)
    elif a.part == "data":
        a.seconds = a.seconds or 60.0
        run_data(a)
    elif a.part == "overhead":
        run_overhead(a)
    elif a.part == "checked":
        checked_front(a)
    elif a.part == "alive":
        alive(a)
    elif a.part == "side":
        side_by_side(a)
    elif a.part == "regression":
        regression(a)
    else:
        report_front(a)


if __name__ == "__main__":
    main()
