"""The explorer's speed in a real browser (headless Chromium): time to interactive of every page, first paint,
live refresh rate, and how fast a lenet60 path advances in the app against the same path with no app.

Time to interactive (TTI): from navigation start until the page's primary control is drawn, visible, enabled and
current: the Start / Run button (Sparsify, Candidate paths, Damage & recovery, Two tasks), else its first input
(Playground: a slider; Trajectories, Runs: the run picker, with one run on disk; Sweeps: the sweep picker). Each page is opened on a
fresh server with one core kept busy by a spinning process (the machine's other work): first visit right after
the server starts, then a new tab at once (the engine still loading in the background), then a new tab once
the server is quiet (engine loaded).

Live rates: each trial starts a fresh server (no busy core); first paint and TTI of a first visit and a new tab,
then a lenet60 Sparsify run with the page's defaults is watched for --seconds. The engine-alone rate runs the
same job body (app.jobs.sparsify_job, one torch thread as the app uses) in a subprocess between trials.

    python bench/bench_app.py [--trials 3] [--tti-trials 2] [--seconds 15] [--only-tti]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from common import RESULTS, ROOT, markdown  # puts the repository root on sys.path

from tools.appdriver import (
    CONTROLS,
    busy_core,
    chromium,
    measure_live,
    server,
    start_sparsify,
    time_to_interactive,
    wait_idle,
    wait_quiet,
)

CHECKPOINT, DATASET = "lenet60-fashion-mnist", "fashion-mnist"
TARGETS = {"first paint, first visit (s)": "< 5", "time to interactive, first visit (s)": "< 5",
           "first paint, new tab (s)": "< 2", "time to interactive, new tab (s)": "< 2",
           "live panel refreshes per s": "≥ 2", "chart data updates per s": "",
           "lenet60 steps per s in the app": "≥ 3", "lenet60 steps per s, engine alone": "",
           "server time per refresh (ms, median)": ""}

ENGINE_ALONE = """
import dataclasses, sys, tempfile, time
from pathlib import Path
from app import jobs, playground
from geodesic.infra import threads
from geodesic.experiments.sparsify import SparsifyConfig
threads.configure()
playground.warm_metric()
seconds, after = float(sys.argv[1]), int(sys.argv[2])
cfg = SparsifyConfig()  # the page's default preset; Max steps 2000 as bench_app sets it in the page
cfg = dataclasses.replace(cfg, path=dataclasses.replace(cfg.path, max_steps=2000))
source = jobs.Source(str(jobs.CHECKPOINTS / "{ckpt}.safetensors"), "{ds}")
job = jobs.Registry().start("sparsify", jobs.sparsify_job(source, cfg, root=Path(tempfile.mkdtemp())))
while len(job.rows) < after and job.active:
    time.sleep(0.01)
n0, t0 = len(job.rows), time.perf_counter()
time.sleep(seconds)
print((len(job.rows) - n0) / (time.perf_counter() - t0))
job.stop()
jobs.wait(job, 60)
""".format(ckpt=CHECKPOINT, ds=DATASET)

# one short mlp run with snapshots, copied into the runs folder of the pages that list runs
SEED = """
import dataclasses, sys
from pathlib import Path
from app import jobs
from geodesic.experiments.sparsify import PRESETS
from geodesic.core.path import PathConfig
cfg = dataclasses.replace(PRESETS["literal"], filters=2, path=PathConfig(max_steps=10, snapshot_every=2))
source = jobs.Source(str(jobs.CHECKPOINTS / "mlp-mnist.safetensors"), "mnist", eval_size=200)
job = jobs.Registry().start("s", jobs.sparsify_job(source, cfg, root=Path(sys.argv[1])))
assert jobs.wait(job, 300).status == "done", job.error
"""


def engine_alone(seconds: float, after_rows: int = 15) -> float:
    """Steps per second of the app's default lenet60 job with no server and no browser."""
    out = subprocess.run([sys.executable, "-c", ENGINE_ALONE, str(seconds), str(after_rows)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def seed_run(folder: Path) -> Path:
    subprocess.run([sys.executable, "-c", SEED, str(folder)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   check=True, capture_output=True, text=True)
    return next(p for p in folder.iterdir() if (p / "meta.json").is_file())


def tti_trial(path: str, seed: Path) -> dict:
    """One page on a fresh server: first visit, a new tab at once, a new tab once the server is quiet."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        if CONTROLS[path][3]:
            shutil.copytree(seed, root / seed.name)
        with server(root, Path(tmp) / "server.log") as url, chromium() as b:
            ctx = b.new_context(viewport={"width": 1400, "height": 1600})
            first = ctx.new_page()
            visit = time_to_interactive(first, url, path)
            wait_idle(first, 90)
            tab = ctx.new_page()
            loading = time_to_interactive(tab, url, path)
            wait_idle(tab, 90)
            waited = wait_quiet(url.pid)
            tab2 = ctx.new_page()
            settled = time_to_interactive(tab2, url, path)
    return {"page": CONTROLS[path][0], "control": CONTROLS[path][2],
            "first visit: first paint (s)": visit["first_paint_s"], "first visit: TTI (s)": visit["tti_s"],
            "new tab, engine loading: TTI (s)": loading["tti_s"], "new tab: first paint (s)": settled["first_paint_s"],
            "new tab: TTI (s)": settled["tti_s"], "quiet after (s)": waited}


def trial(seconds: float, flags: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "runs", Path(tmp) / "server.log", flags) as url, \
            chromium() as b:
        page = b.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        visit = time_to_interactive(page, url)
        out = {"first paint, first visit (s)": visit["first_paint_s"], "time to interactive, first visit (s)": visit["tti_s"]}
        wait_idle(page, 60)
        wait_quiet(url.pid)
        tab = page.context.new_page()
        again = time_to_interactive(tab, url)
        out.update({"first paint, new tab (s)": again["first_paint_s"], "time to interactive, new tab (s)": again["tti_s"]})
        tab.close()
        start_sparsify(page, CHECKPOINT, max_steps=2000)
        live = measure_live(page, seconds)
        page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop", exact=True).click()
        page.wait_for_function("document.body.innerText.includes(': stopped')", timeout=30_000)
    out.update({"live panel refreshes per s": live["live_refreshes_per_s"],
                "chart data updates per s": live["chart_updates_per_s"],
                "lenet60 steps per s in the app": live["steps_per_s"],
                "server time per refresh (ms, median)": live["server_redraw_ms_median"]})
    return out


def tti_table(trials: int) -> tuple[pd.DataFrame, str]:
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        seed = seed_run(Path(tmp))
        rows = []
        with busy_core():
            for i in range(trials):
                for path in CONTROLS:
                    r = tti_trial(path, seed)
                    rows.append(r)
                    print(f"TTI trial {i + 1}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in r.items()), flush=True)
    df = pd.DataFrame(rows)
    cols = ["first visit: first paint (s)", "first visit: TTI (s)", "new tab, engine loading: TTI (s)",
            "new tab: first paint (s)", "new tab: TTI (s)"]
    table = df.groupby(["page", "control"], sort=False)[cols].median().reset_index()
    table.insert(4, "first visit: TTI max (s)", df.groupby(["page", "control"], sort=False)["first visit: TTI (s)"].max().values)
    table["new tab: TTI max (s)"] = df.groupby(["page", "control"], sort=False)["new tab: TTI (s)"].max().values
    note = (f"Time to interactive (TTI): navigation start until the page's primary control is drawn, visible, enabled "
            f"and current (targets: < 5 s on a first visit, < 2 s in a new tab); medians of {trials} trials, max "
            f"beside. Each page on a fresh `streamlit run app/main.py` in headless Chromium (1400×1600) on this 2-core "
            f"machine with one core kept busy by a spinning process: a first visit right after the server starts, "
            f"then a new tab at once (torch and the engine still loading in the background), then a new tab once the "
            f"server is quiet (engine loaded). Trajectories and Runs with one mlp run on disk. Sweeps shows its shipped "
            f"example's picker. Theory has no control (text only). Load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    return table, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="fresh-server trials of the live measurement")
    ap.add_argument("--tti-trials", type=int, default=2, help="fresh-server trials per page of time to interactive")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each live measurement")
    ap.add_argument("--only-tti", action="store_true", help="time to interactive only (no live trials, nothing saved)")
    args = ap.parse_args()
    tti, tti_note = tti_table(args.tti_trials)
    print(markdown(tti, ".3g"), flush=True)
    if args.only_tti:
        return
    load0 = os.getloadavg()[0]
    rows = []
    for i in range(args.trials):
        r = trial(args.seconds)
        r["lenet60 steps per s, engine alone"] = engine_alone(args.seconds)
        rows.append(r)
        print(f"trial {i + 1}: " + ", ".join(f"{k} {v:.3g}" for k, v in r.items()), flush=True)
    # Streamlit's default runs gc.collect(2) after every script and fragment run; .streamlit/config.toml turns it off
    try:
        gc_on = trial(args.seconds, ("--runner.postScriptGC", "true"))
    except Exception as e:  # noqa: BLE001 — with gc on the run may not even reach its first rows: record that
        print(f"post-run gc on: no measurement ({type(e).__name__}: the run did not reach 15 steps in time)")
        gc_on = {}
    print("post-run gc on: " + ", ".join(f"{k} {v:.3g}" for k, v in gc_on.items()), flush=True)
    df = pd.DataFrame(rows)
    table = pd.DataFrame({"measure": list(TARGETS), "target": list(TARGETS.values()),
                          "median": [df[k].median() for k in TARGETS],
                          "min": [df[k].min() for k in TARGETS], "max": [df[k].max() for k in TARGETS],
                          "Streamlit's post-run gc on (1 trial)": [gc_on.get(k, float("nan")) for k in TARGETS]})
    note = (f"{args.trials} trials, each on a fresh `streamlit run app/main.py` in headless Chromium (1400×1600) on this "
            f"2-core machine with no busy core, browser and server included; the new tab once the server is quiet; "
            f"live rates over {args.seconds:g} s of a {CHECKPOINT} Sparsify run with the page's defaults (the "
            f"benchmarked preset, `SparsifyConfig()`: probe batch 32, pull ρ = 2, accuracy on 500 images every 10 "
            f"steps), after its first 15 steps; engine alone: the same job body with no server or browser, run "
            f"between trials. Last column: one more trial with Streamlit's default gc.collect() after every rerun, "
            f"which .streamlit/config.toml turns off (blank: the run did not reach 15 steps within 120 s). Load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tti.to_csv(RESULTS / "app-tti.csv", index=False)
    table.to_csv(RESULTS / "app-speed.csv", index=False)
    text = f"{markdown(tti, '.3g')}\n\n{tti_note}\n\n{markdown(table, '.3g')}\n\n{note}\n"
    (RESULTS / "app-speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
