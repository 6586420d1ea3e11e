"""The one run lifecycle: phases, the one way to stop, statuses, and what a run folder keeps when a run fails."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from geodesic.infra.lifecycle import Phase, Status, Stop, combine, execute
from geodesic.store import runs

ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """A sink that remembers every call."""

    def __init__(self):
        self.rows, self.snaps, self.finished = [], [], None

    def add(self, row):
        self.rows.append(row)

    def add_snapshot(self, step, w):
        self.snaps.append(step)

    def finish(self, status, w, summary):
        self.finished = (status, w, summary)


def counting_phase(name, n, end=Status.DONE, start=0):
    state = {"w": torch.zeros(1), "snaps": []}

    def rows():
        for i in range(start, start + n):
            state["w"] = torch.tensor([float(i)])
            if i % 2 == 0:
                state["snaps"].append((i, state["w"].clone()))
            yield {"phase": name, "step": i}

    return Phase(name, rows(), lambda: end, lambda: state["snaps"], lambda: state["w"])


def test_phases_run_in_order_and_the_sink_sees_every_row_and_snapshot():
    sink = Recorder()
    rec = execute([counting_phase("walk", 3, Status.ARRIVED), counting_phase("relax", 3, start=2)], sink,
                  summary=lambda r: {"rows": len(r.rows)})
    assert [r["step"] for r in sink.rows] == [0, 1, 2, 2, 3, 4]
    assert sink.snaps == [0, 2, 2, 4] and [s for s, _ in rec.snapshots] == [0, 2, 4]  # step 2 kept once
    assert rec.status is Status.ARRIVED and sink.finished[0] is Status.ARRIVED  # ARRIVED then DONE stays ARRIVED
    assert sink.finished[2] == {"rows": 6} and float(rec.w) == 4.0


def test_stop_ends_the_run_within_one_row_and_closes_the_phase():
    stop, closed = Stop(), []

    def rows():
        try:
            for i in range(100):
                yield {"step": i}
        finally:
            closed.append(True)

    rec = execute([Phase("walk", rows()), counting_phase("never", 3)], stop=stop,
                  on_row=lambda r: stop.set() if r["step"] == 4 else None)
    assert rec.status is Status.STOPPED and [r["step"] for r in rec.rows] == [0, 1, 2, 3, 4]
    assert closed == [True] and "never" not in rec.phases


def test_an_exception_writes_what_exists_as_interrupted_then_propagates():
    sink = Recorder()

    def boom(row):
        if row["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute([counting_phase("walk", 10)], sink, on_row=boom)
    assert sink.finished[0] is Status.INTERRUPTED and float(sink.finished[1]) == 2.0 and len(sink.rows) == 3


def test_a_failing_phase_ends_the_run_and_wins_over_earlier_statuses():
    rec = execute([counting_phase("a", 1, Status.ARRIVED), counting_phase("b", 1, Status.DIVERGED),
                   counting_phase("c", 1)])
    assert rec.status is Status.DIVERGED and list(rec.phases) == ["a", "b"] and rec.status.failed
    assert combine(Status.MISSED, Status.DONE) is Status.MISSED


def test_after_a_divergence_only_final_phases_run_and_the_run_stays_diverged():
    """A method's scoring mask (a final phase) still runs on the weights a diverged phase left."""
    last = counting_phase("d", 1)
    final = Phase("mask", last.rows, weights=lambda: torch.tensor(7.0), final=True)
    rec = execute([counting_phase("walk", 2, Status.DIVERGED), counting_phase("relax", 3), final])
    assert list(rec.phases) == ["walk", "mask"] and rec.status is Status.DIVERGED and float(rec.w) == 7.0


@pytest.mark.parametrize("text,status", [("arrived, relaxed", Status.ARRIVED), ("max steps", Status.MISSED),
                                         ("distance budget", Status.MISSED), ("budget", Status.DONE),
                                         ("recovered", Status.ARRIVED), ("stopped", Status.STOPPED),
                                         ("gibberish", Status.INTERRUPTED)])
def test_statuses_of_older_run_folders_are_read(text, status):
    assert Status.parse(text) is status


def test_meta_json_is_strict_json(tmp_path):
    w = runs.RunWriter({"kind": "x", "config": {"max_distance": float("inf"), "tol": float("nan")}}, root=tmp_path)
    w.finish(Status.DONE, None, {"accuracy": float("nan"), "length": float("-inf")})
    meta = json.loads((w.dir / "meta.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in meta.json"))
    assert meta["config"] == {"max_distance": "inf", "tol": None} and meta["summary"]["length"] == "-inf"
    assert meta["status"] == "done" and meta["pid"] == os.getpid()


def test_a_run_whose_process_is_gone_reads_as_stale_and_delete_refuses_live_ones(tmp_path):
    live = runs.RunWriter({"kind": "x"}, root=tmp_path, run_id="live")
    assert runs.load_run(live.dir).status is Status.RUNNING
    with pytest.raises(ValueError, match="still being written"):
        runs.delete_run(runs.load_run(live.dir))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live.update(pid=int(dead.stdout))
    run = runs.load_run(live.dir)
    assert run.status is Status.STALE
    link = tmp_path / "link"
    link.symlink_to(live.dir)
    with pytest.raises(ValueError, match="symbolic link"):
        runs.delete_run(runs.load_run(link))
    runs.delete_run(run)
    assert not live.dir.exists()


KILLED_RUN = """
import sys
from dataclasses import replace
from geodesic.store import inputs, runs
from geodesic.experiments.sparsify import PRESETS, run_sparsify
from geodesic.core.path import Evaluation, PathConfig
ck = inputs.open_checkpoint("assets/checkpoints/mlp-mnist.safetensors")
train, test = inputs.splits("mnist", "bundled", 200)
cfg = replace(PRESETS["literal"], filters=6, path=PathConfig(max_steps=100000, eps=1e-6, snapshot_every=2))
w = runs.RunWriter({"kind": "sparsify", "model": "mlp"}, root=sys.argv[1], run_id="killed")
run_sparsify(ck.model, ck.w, ck.groups, cfg, train, Evaluation(test.x, test.y), writer=w)
"""


@pytest.mark.slow
def test_a_killed_run_keeps_its_rows_snapshots_and_start_and_reads_as_stale(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path)], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "killed" / "snapshots").glob("*.safetensors"))) < 3:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = runs.load_run(tmp_path / "killed")
    steps, W = run.snapshots()
    assert len(steps) >= 3 and W.shape[1] == run.extra("state.safetensors")["w_start"].numel()
    assert len(run.metrics) >= 5 and run.status is Status.STALE


def test_reading_run_folders_does_not_import_torch():
    """The app lists runs and their statuses while torch still loads behind the first page."""
    code = "import sys, geodesic.store.runs as r; r.scan_with_gallery(); assert 'torch' not in sys.modules, 'torch loaded'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_run_folders_of_the_older_format_still_open(tmp_path):
    """Older folders: flat w/w_start in final.safetensors, one snapshots.safetensors, free-text status, Infinity."""
    from safetensors.torch import save_file

    d = tmp_path / "old"
    d.mkdir()
    (d / "meta.json").write_text('{"id": "old", "kind": "sparsify", "status": "arrived, relaxed", '
                                 '"config": {"path": {"max_distance": Infinity}}}')
    w, w0 = torch.arange(4.0), torch.ones(4)
    save_file({"w": w, "w_start": w0}, str(d / "final.safetensors"))
    save_file({"step": torch.tensor([0, 5]), "w": torch.stack([w0, w])}, str(d / "snapshots.safetensors"))
    run = runs.load_run(d)
    assert run.status is Status.ARRIVED and run.meta["config"]["path"]["max_distance"] == float("inf")
    assert torch.equal(run.final()["w"], w) and torch.equal(run.final()["w_start"], w0)
    steps, W = run.snapshots()
    assert steps.tolist() == [0, 5] and torch.equal(W[1], w)
