"""The explorer's speed in a real browser (headless Chromium): first paint, live refresh rate, and how fast a
lenet60 path advances in the app, against the same path with no app, measured side by side in one run.

Each trial starts a fresh server: the first visit is timed right after it starts, a new tab once the first
page has finished loading; then a lenet60 Sparsify run (the page's defaults) is watched for --seconds. The
engine-alone rate runs the same job body (app.jobs.sparsify_job, one torch thread as the app uses) in a
subprocess between trials.

    python bench/bench_app.py [--trials 3] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from appdriver import chromium, first_paint, measure_live, server, start_sparsify, wait_idle
from common import ROOT, save

CHECKPOINT, DATASET = "lenet60-fashion-mnist", "fashion-mnist"
TARGETS = {"first paint, first visit (s)": "< 5", "first paint, new tab (s)": "< 2",
           "live panel refreshes per s": "≥ 2", "chart data updates per s": "",
           "lenet60 steps per s in the app": "≥ 3", "lenet60 steps per s, engine alone": "",
           "server time per refresh (ms, median)": ""}

ENGINE_ALONE = """
import sys, tempfile, time
from pathlib import Path
import torch
from app import jobs
from app.playground import warm_metric
from geodesic.experiments import SparsifyConfig
from geodesic.path import PathConfig
torch.set_num_threads(jobs.default_threads())
warm_metric()
seconds, after = float(sys.argv[1]), int(sys.argv[2])
body = jobs.sparsify_job(jobs.Source(str(jobs.CHECKPOINTS / "{ckpt}.safetensors"), "{ds}"),
                         SparsifyConfig(path=PathConfig(max_steps=2000)), root=Path(tempfile.mkdtemp()))
job = jobs.Registry().start("sparsify", body)
while len(job.rows) < after and job.active:
    time.sleep(0.01)
n0, t0 = len(job.rows), time.perf_counter()
time.sleep(seconds)
print((len(job.rows) - n0) / (time.perf_counter() - t0))
job.stop_event.set()
jobs.wait(job, 60)
""".format(ckpt=CHECKPOINT, ds=DATASET)


def engine_alone(seconds: float, after_rows: int = 15) -> float:
    """Steps per second of the app's default lenet60 job with no server and no browser."""
    out = subprocess.run([sys.executable, "-c", ENGINE_ALONE, str(seconds), str(after_rows)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def trial(seconds: float, flags: tuple[str, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "runs", Path(tmp) / "server.log", flags) as url, \
            chromium() as b:
        page = b.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        out = {"first paint, first visit (s)": first_paint(page, url)}
        wait_idle(page, 60)
        tab = page.context.new_page()
        out["first paint, new tab (s)"] = first_paint(tab, url)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each live measurement")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows = []
    for i in range(args.trials):
        r = trial(args.seconds)
        r["lenet60 steps per s, engine alone"] = engine_alone(args.seconds)
        rows.append(r)
        print(f"trial {i + 1}: " + ", ".join(f"{k} {v:.3g}" for k, v in r.items()), flush=True)
    # Streamlit's default runs gc.collect(2) after every script and fragment run; .streamlit/config.toml turns it off
    gc_on = trial(args.seconds, ("--runner.postScriptGC", "true"))
    print("post-run gc on: " + ", ".join(f"{k} {v:.3g}" for k, v in gc_on.items()), flush=True)
    df = pd.DataFrame(rows)
    table = pd.DataFrame({"measure": list(TARGETS), "target": list(TARGETS.values()),
                          "median": [df[k].median() for k in TARGETS],
                          "min": [df[k].min() for k in TARGETS], "max": [df[k].max() for k in TARGETS],
                          "Streamlit's post-run gc on (1 trial)": [gc_on.get(k, float("nan")) for k in TARGETS]})
    note = (f"{args.trials} trials, each on a fresh `streamlit run app/main.py` in headless Chromium (1400×1600) on this "
            f"2-core machine, browser and server included; live rates over {args.seconds:g} s of a {CHECKPOINT} "
            f"Sparsify run with the page's defaults (probe batch 32, accuracy on 500 images every 10 steps), after its "
            f"first 15 steps; engine alone: the same job body with no server or browser, run between trials. Last column: one more trial with Streamlit's default gc.collect() after every rerun, which "
            f".streamlit/config.toml turns off. Load "
            f"average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")
    print(save("app-speed", table, note, floatfmt=".3g"))


if __name__ == "__main__":
    main()
