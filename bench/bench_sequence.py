"""Task sequences: every method of `geodesic sequence` in each scenario of a sequence, side by side, at one CPU
budget per task, one table per sequence (ACC, BWT, FWT, forgetting per method, mean ± sd over seeds).

    python bench/bench_sequence.py --tasks split-mnist --scenarios task,domain,class --seeds 0,1,2 --seconds 10
    python bench/bench_sequence.py --report --name first ...   # the table from sequence folders already run
    python bench/bench_sequence.py --scenarios class --methods geodesic,agem,replay --memories 10,100,1000 \
        --name memory                                            # a memory curve: ACC against M, one table

Runs each scenario's cells through the CLI (resumable folders under
bench/out/sequences/<tasks>-<scenario>[-<name>][-m<M>]), then writes bench/results/sequence-<tasks>[-<name>].md/.csv.
With several --memories, each memory size is its own sequence folder (M is part of what a folder runs) and the table
has a row per scenario, method and M. Each folder's sequence.json records the settings the cells
ran with (the methods' λ, c, memory, budget); the report names them, so that a table never claims the defaults of
another version.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pandas as pd
from common import ROOT, save

OUT = ROOT / "bench" / "out" / "sequences"


def folder(tasks: str, scenario: str, name: str = "", memory: int | None = None):
    """bench/out/sequences/<tasks>-<scenario>[-<name>][-m<M>]: a named run keeps its own folders (another budget is
    another sequence run, which the command refuses to mix into a folder); a memory curve has one per M."""
    return OUT / (f"{tasks.replace(':', '').replace(',', '-')}-{scenario}" + (f"-{name}" if name else "")
                  + (f"-m{memory}" if memory is not None else ""))


def memories(args) -> list[int | None]:
    """The memory sizes to run: None (the folder without an -m suffix) for a single --memory."""
    return [int(m) for m in args.memories.split(",")] if args.memories else [None]


def run(args, scenario: str, memory: int | None) -> None:
    cmd = [sys.executable, "-m", "geodesic", "sequence", "--tasks", args.tasks, "--scenario", scenario, "--seeds",
           args.seeds, "--seconds", str(args.seconds), "--steps", str(args.steps),
           "--model", args.model, "--backend", args.backend,
           "--out", str(folder(args.tasks, scenario, args.name, memory))]
    m = args.memory if memory is None else memory
    cmd += ["--memory", str(m)] if m is not None else []  # else the benchmark's (choices.memory_for)
    cmd += ["--methods", args.methods] if args.methods else []
    print(" ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if rc == 1:  # some cells failed: the table counts them under "errors"; the next scenario still runs
        print(f"{scenario}: some cells failed (see the errors above); going on", flush=True)
    elif rc:
        raise SystemExit(f"the sequence command exited {rc}")


def matrices(cells) -> list:
    """Each cell's accuracy matrix R (accuracy.safetensors)."""
    from safetensors.torch import load_file

    return [load_file(str(c / "accuracy.safetensors"))["R"] for c in cells]


def last_row(R: list) -> str:
    """R's last row, each task's accuracy after the whole sequence, averaged over the cells ("" past five tasks)."""
    if not R or R[0].shape[0] > 5:
        return ""
    return " / ".join(f"{sum(r[-1, j].item() for r in R) / len(R):.4f}" for j in range(R[0].shape[0]))


def decay(path: dict) -> str:
    """How the geodesic's cap on ε ran: constant, or decayed (cosine) to eps_final over each task's budget."""
    final = float(path.get("eps_final", 0.0))
    return f" decaying to {final:g}" if final else ""


def table(args) -> tuple[pd.DataFrame, list[str]]:
    rows, notes = [], []
    for scenario, memory in [(s, m) for s in args.scenarios.split(",") for m in memories(args)]:
        where = folder(args.tasks, scenario, args.name, memory)
        df = pd.read_csv(where / "results.csv")
        spec = json.loads((where / "sequence.json").read_text())
        learn = spec["learn"]
        notes.append(f"{scenario}: {spec['model']}, {learn['seconds']:g} CPU s and at most {learn['steps']} steps a "
                     f"task, memory {learn['memory']} images per earlier task, EWC λ {learn['ewc_lambda']:g} (γ "
                     f"{learn['ewc_gamma']:g}), SI c {learn['si_c']:g}, the geodesic's β {learn['path']['beta']:g}, "
                     f"ε {learn['path']['eps']:g} (self-checked){decay(learn['path'])}, pull {learn['pull']:g}")
        for method, part in df.groupby("method", sort=False):
            ok = part[part["status"] != "error"]
            row = {"scenario": scenario, "method": method, "memory": learn["memory"], "seeds": len(ok),
                   "errors": len(part) - len(ok)}
            R = matrices([where / "cells" / c for c in ok["cell"]])
            ok = ok.assign(learned=[r.diagonal().nanmean().item() for r in R])  # mean R[i, i]: how well it learns
            for k in ("ACC", "BWT", "FWT", "forgetting", "learned"):
                v = ok[k]
                row[k] = f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else (f"{v.mean():.4f}" if len(v) else "")
            row["each task at the end"] = last_row(R)
            row["CPU s a cell"] = f"{ok['seconds'].mean():.0f}" if len(ok) else ""
            row["steps a cell"] = f"{ok['steps'].mean():.0f}" if len(ok) else ""
            rows.append(row)
    return pd.DataFrame(rows), notes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="split-mnist")
    p.add_argument("--scenarios", default="task,domain,class")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--memory", type=int, help="images per earlier task (default: the benchmark's)")
    p.add_argument("--memories", default="", help="a memory curve: comma-separated M, each its own folder")
    p.add_argument("--methods", default="", help="comma-separated (default every method)")
    p.add_argument("--model", default="mlp100")
    p.add_argument("--backend", default="ray")
    p.add_argument("--name", default="", help="suffix of the result file")
    p.add_argument("--report", action="store_true", help="only the table, from folders already run")
    args = p.parse_args()
    if not args.report:
        for scenario in args.scenarios.split(","):
            for memory in memories(args):
                run(args, scenario, memory)
    df, notes = table(args)
    if not args.memories:
        df = df.drop(columns="memory")
    if not df["each task at the end"].any():
        df = df.drop(columns="each task at the end")
    load = os.getloadavg()
    note = (f"{args.tasks}, full test sets, one torch thread a cell; mean ± sd over the cells' seeds; learned: the mean of R[i, i], each task's accuracy right after it was learned. "
            + "; ".join(notes) + f". Load average at the report: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}.")
    name = f"sequence-{args.tasks.replace(':', '').replace(',', '-')}" + (f"-{args.name}" if args.name else "")
    print(save(name, df, note))


if __name__ == "__main__":
    main()
