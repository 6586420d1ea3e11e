"""Bad input, as a new user or a damaged disk gives it: every case ends with one readable line (no traceback), a
non-zero exit where nothing useful was done, and nothing the user had written changed or lost."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CKPT, open_page
from safetensors.torch import load_file, save_file

from geodesic import cli
from geodesic.experiments.sweep import SweepSpec, cells
from geodesic.store import runs
from geodesic.store.source import Source

MLP = CKPT / "mlp-mnist.safetensors"

NETS = '''"""Architectures a user might get wrong."""
import sys
import torch
from torch import nn


class Wrong(nn.Module):  # its head expects 10 features, the convolution gives 2704
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(10, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Twice(nn.Module):  # one convolution applied twice (shared weights)
    def __init__(self):
        super().__init__()
        self.conv, self.fc1, self.fc2 = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(784, 8), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.conv(torch.relu(self.conv(x))).flatten(1))))


class Recurrent(nn.Module):  # an LSTM: no rule in the metric, no prunable groups
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 10, batch_first=True)

    def forward(self, x):
        return self.lstm(x.flatten(1, 2))[0][:, -1]


class BatchStats(nn.Module):  # BatchNorm1d without running statistics
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 16), nn.Linear(16, 10)
        self.bn = nn.BatchNorm1d(16, track_running_stats=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x.flatten(1)))))


class Hidden(nn.Module):  # a fine net
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 8), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def wrong():
    return Wrong()


def twice():
    return Twice()


def recurrent():
    return Recurrent()


def batch_stats():
    return BatchStats()


def hidden():
    return Hidden()


def exits():
    sys.exit(3)
'''


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> Path:
    """nets.py (the architectures above), a checkpoint of each that builds (<factory>.safetensors), and a file
    that calls sys.exit(0) when it is loaded."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / "nets.py").write_text(NETS)
    (folder / "exits_on_load.py").write_text("import sys\nsys.exit(0)\n")
    sys.path.insert(0, str(folder))
    try:
        import nets as module
    finally:
        sys.path.remove(str(folder))
    for name in ("wrong", "twice", "recurrent", "batch_stats", "hidden"):
        torch.manual_seed(0)
        save_file(getattr(module, name)().state_dict(), str(folder / f"{name}.safetensors"))
    return folder


def main(argv: list[str], capsys) -> tuple[int, str]:
    """cli.main's exit code and stderr (an argparse error is a SystemExit)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    """The one `error:` line of stderr (and no traceback)."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def own(nets: Path, name: str, command: str = "sparsify") -> list:
    extra = {"sparsify": ["--filters", "1", "--max-steps", "2"], "train": ["--epochs", "1"],
             "recover": ["--kind", "zero", "--level", "0.1", "--steps", "2"]}[command]
    ckpt = [] if command == "train" else ["--checkpoint", nets / f"{name}.safetensors", "--data", "bundled"]
    return [command, *ckpt, "--arch", f"{nets / 'nets.py'}:{name}", "--dataset", "mnist", *extra]


# --- architectures: tracebacks and silence, before any folder -----------------------------------------------


@pytest.mark.parametrize("command,name,message", [
    ("sparsify", "wrong", "the model's forward fails on a batch of 1×28×28 images (RuntimeError: mat1 and mat2"),
    ("train", "wrong", "the model's forward fails on a batch of 1×28×28 images"),
    ("sparsify", "twice", "layer 'conv' is called more than once per forward pass"),
    ("sparsify", "recurrent", "has no prunable groups"),
    ("recover", "recurrent", "no per-sample rule for the parameters of lstm (LSTM"),
    ("sparsify", "batch_stats", "BatchNorm 'bn' keeps no running statistics (track_running_stats=False)"),
    ("sparsify", "exits", "calling exits() called sys.exit(3)"),
])
def test_an_architecture_that_cannot_work_is_one_line_before_any_folder(nets, tmp_path, capsys, command, name,
                                                                         message):
    out = tmp_path / ("net.safetensors" if command == "train" else "run")
    if name == "exits":
        shutil.copy(nets / "hidden.safetensors", nets / "exits.safetensors")
    code, err = main([*own(nets, name, command), "--out", out], capsys)
    assert code == 2 and message in one_error(err).replace("\\", "")
    assert not out.exists()


def test_merge_refuses_a_layer_called_twice(nets, tmp_path, capsys):
    ckpt = nets / "twice.safetensors"
    code, err = main(["merge", "--a", ckpt, "--b", ckpt, "--arch", f"{nets / 'nets.py'}:twice", "--task-a", "mnist",
                      "--task-b", "fashion-mnist", "--data", "bundled", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "called more than once per forward pass" in one_error(err)
    assert not (tmp_path / "m").exists()


def test_an_architecture_file_that_exits_when_loaded_is_one_line(nets, tmp_path, capsys):
    code, err = main(["sparsify", "--checkpoint", nets / "hidden.safetensors", "--arch",
                      f"{nets / 'exits_on_load.py'}:hidden", "--dataset", "mnist", "--data", "bundled",
                      "--filters", "1", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "running the file called sys.exit(0)" in one_error(err)
    assert not (tmp_path / "run").exists()


def test_model_with_arch_is_refused_not_ignored(nets, tmp_path, capsys):
    code, err = main(["sparsify", "--checkpoint", nets / "hidden.safetensors", "--model", "mlp", "--arch",
                      f"{nets / 'nets.py'}:hidden", "--dataset", "mnist", "--filters", "1", "--out", tmp_path / "r"],
                     capsys)
    assert code == 2 and "give --model (a zoo architecture) or --arch (your own), not both" in one_error(err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("scale,says", [(1e37, "not finite"), (1e8, "as large as")])
def test_weights_out_of_range_are_refused_at_load_naming_the_file(tmp_path, capsys, scale, says):
    big = {k: v * scale for k, v in load_file(str(MLP)).items()}  # finite float32, absurd
    save_file(big, str(tmp_path / "big.safetensors"))
    code, err = main(["sparsify", "--checkpoint", tmp_path / "big.safetensors", "--model", "mlp", "--dataset",
                      "mnist", "--data", "bundled", "--filters", "2", "--out", tmp_path / "r"], capsys)
    line = one_error(err)
    assert code == 2 and f"big.safetensors: the net's outputs are {says}" in line and "out of range" in line
    assert "diverged" not in err and not (tmp_path / "r").exists()


def test_a_card_naming_the_wrong_dataset_without_an_accuracy_is_questioned(tmp_path, capsys):
    shutil.copy(MLP, tmp_path / "x.safetensors")
    card = json.loads(MLP.with_suffix(".json").read_text())
    card = {k: v for k, v in card.items() if k != "test_accuracy"} | {"dataset": "fashion-mnist"}
    (tmp_path / "x.json").write_text(json.dumps(card))
    code, err = main(["damage", "--checkpoint", tmp_path / "x.safetensors", "--kind", "zero", "--level", "0.1",
                      "--seeds", "1", "--data", "bundled", "--eval-size", "100", "--out", tmp_path / "d"], capsys)
    assert "near chance (10%): is the dataset right (its card says fashion-mnist)?" in err


# --- sweeps --------------------------------------------------------------------------------------------------


def sweep_argv(out, *more) -> list:
    return ["sweep", "--checkpoint", MLP, "--dataset", "mnist", "--data-source", "bundled", "--eval-size", "100",
            "--methods", "magnitude", "--seconds", "0.2", "--backend", "loop", "--out", out, *more]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """A finished one-cell sweep (magnitude, 5 groups, seed 0), run in this process."""
    from geodesic.experiments.sweep import run_sweep

    out = tmp_path_factory.mktemp("sweeps") / "done"
    spec = SweepSpec(Source(str(MLP), "mnist", "bundled", 100), filters=(5,), methods=("magnitude",), seconds=0.2)
    run_sweep(spec, out, backend="loop")
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_seed_no_generator_takes_is_one_line(tmp_path, capsys):
    code, err = main(sweep_argv(tmp_path / "s", "--filters", "5", "--seeds", "1180591620717411303424"), capsys)
    assert code == 2 and "seeds must be in [0, 2**32)" in one_error(err) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("record", ["[]", "{}", '{"source": {"checkpoint": "x"', '{"source": 3}'])
def test_a_damaged_sweep_record_is_named_and_left_alone(finished_sweep, tmp_path, capsys, record):
    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)
    (out / "sweep.json").write_text(record)
    before = snapshot(out)
    code, err = main(sweep_argv(out, "--filters", "5"), capsys)
    line = one_error(err)
    assert code == 2 and f"{out / 'sweep.json'}: not a sweep record" in line
    assert snapshot(out) == before


def test_the_same_cell_named_twice_runs_once_and_keeps_the_finished_row(finished_sweep, tmp_path, capsys):
    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)
    row = pd.read_csv(out / "results.csv").iloc[0].to_dict()
    folder = snapshot(out / "cells" / "magnitude-f5-dall-s0")
    named_twice = (["--filters", "5,5"], ["--filters", "5", "--seeds", "0,0"], ["--filters", "16", "--fractions", "0.5"])
    for twice in named_twice:
        code, err = main(sweep_argv(out, *twice), capsys)
        assert code == 0, err
        table = pd.read_csv(out / "results.csv")
        assert table["cell"].is_unique and set(table["status"]) == {"done"}
        kept = table.set_index("cell").loc["magnitude-f5-dall-s0"]
        assert kept["accuracy"] == row["accuracy"] and kept["steps"] == row["steps"]
        assert snapshot(out / "cells" / "magnitude-f5-dall-s0") == folder  # the finished cell was not run again
    assert sorted(table["cell"]) == ["magnitude-f16-dall-s0", "magnitude-f5-dall-s0"]


def test_cells_are_unique_whatever_names_them():
    spec = SweepSpec(Source(str(MLP)), filters=(16, 16, 5), fractions=(0.5,), methods=("magnitude",), seeds=(0, 0))
    assert [c.id for c in cells(spec, 32)] == ["magnitude-f16-dall-s0", "magnitude-f5-dall-s0"]


def test_a_folder_of_the_users_own_results_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("experiment,score\nbaseline,0.93\n")
    code, err = main(sweep_argv(out, "--filters", "5"), capsys)
    assert code == 2 and "holds files but no sweep (sweep.json)" in one_error(err)
    assert [p.name for p in out.iterdir()] == ["results.csv"]
    assert (out / "results.csv").read_text() == "experiment,score\nbaseline,0.93\n"


@pytest.mark.parametrize("more,message", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--address", "127.0.0.1:6379"], "--address needs the ray backend"),
])
def test_a_backend_that_cannot_open_leaves_no_folder(tmp_path, capsys, more, message):
    code, err = main(sweep_argv(tmp_path / "s", "--filters", "5", *more), capsys)
    assert code == 2 and message in one_error(err) and not (tmp_path / "s").exists()


@pytest.mark.parametrize("pid", [2**31, 10**30])
def test_a_cell_left_running_by_an_impossible_pid_is_rerun(finished_sweep, tmp_path, capsys, pid):
    out = tmp_path / "s"
    shutil.copytree(finished_sweep, out)
    meta_path = out / "cells" / "magnitude-f5-dall-s0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running", "pid": pid}))
    assert runs.load_run(meta_path.parent).status.value == "stale"
    code, err = main(sweep_argv(out, "--filters", "5"), capsys)
    assert code == 0, err
    assert json.loads(meta_path.read_text())["status"] == "done"


# --- run folders ------------------------------------------------------------------------------------------------


def write_meta(folder: Path, **meta) -> Path:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"id": folder.name, "kind": "sparsify", **meta}))
    return folder


def test_a_pid_reused_by_a_later_process_is_not_the_writer(tmp_path):
    from geodesic.store.runs import process_start

    started = process_start(os.getpid())
    assert started is not None and abs(started - time.time()) < 86_400 * 365
    before = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started - 3600))  # an hour before this process
    after = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started + 5))
    common = {"status": "running", "pid": os.getpid(), "host": runs.platform.node()}
    reused = write_meta(tmp_path / "reused", created=before, **common)
    mine = write_meta(tmp_path / "mine", created=after, **common)
    assert runs.load_run(reused).status.value == "stale"  # this process started after that run: not its writer
    assert runs.load_run(mine).status.value == "running" and runs.load_run(mine).live


def test_meta_json_nested_too_deep_is_an_unreadable_folder(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        runs.load_run(folder)
    found, problems = runs.scan(tmp_path)
    assert not found and len(problems) == 1 and problems[0].startswith("deep: ")


# --- the app's pages ---------------------------------------------------------------------------------------------


def page(name: str, root: Path, monkeypatch):
    """Page app/views/<name>.py over the runs folder `root`, drawn as a browser does (controls, then the rest)."""
    monkeypatch.setenv("GEODESIC_RUNS", str(root))
    return open_page(name)


def texts(at, *kinds: str) -> str:
    return " ".join(e.value for kind in kinds for e in getattr(at, kind)).replace("\\", "")


@pytest.fixture(scope="module")
def poisoned_runs(finished_sweep, tmp_path_factory) -> Path:
    """A runs folder with one good run and the folders that broke the pages: meta.json nested 100,000 levels
    deep, and runs "running" under pids no process can have."""
    root = tmp_path_factory.mktemp("poisoned")
    shutil.copytree(finished_sweep / "cells" / "magnitude-f5-dall-s0", root / "good")
    (root / "deep").mkdir()
    (root / "deep" / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    for name, pid in (("pid31", 2**31), ("pid30", 10**30)):
        shutil.copytree(root / "good", root / name)
        meta = json.loads((root / name / "meta.json").read_text())
        (root / name / "meta.json").write_text(json.dumps({**meta, "id": name, "status": "running", "pid": pid}))
    return root


@pytest.mark.parametrize("name", ["runs", "trajectories"])
def test_run_pages_draw_past_poisoned_folders(poisoned_runs, monkeypatch, name):
    at = page(name, poisoned_runs, monkeypatch)
    assert "skipped run folder deep" in texts(at, "warning") and "nested too deeply" in texts(at, "warning")
    if name == "runs":
        table = at.dataframe[0].value.set_index("run")
        assert set(table.index) >= {"good", "pid31", "pid30"}
        assert table.loc["pid31", "status"] == "stale" and table.loc["pid30", "status"] == "stale"


def sweep_with_table(finished_sweep, root: Path, change) -> Path:
    """A copy of the finished sweep under root/sweeps/x whose results tables `change(table, folder)` rewrites."""
    out = root / "sweeps" / "x"
    shutil.copytree(finished_sweep, out)
    change(pd.read_csv(out / "results.csv"), out)
    return out


def both(edit):
    """Rewrite results.csv and results.parquet with edit(table)."""
    def change(table, out):
        t = edit(table)
        t.to_csv(out / "results.csv", index=False)
        t.to_parquet(out / "results.parquet", index=False)
    return change


@pytest.mark.parametrize("change,says", [
    (both(lambda t: t.drop(columns=["status"])), "not a sweep's results table (no status column)"),
    (lambda t, out: (out / "results.parquet").unlink() or t.drop(columns=["status"]).to_csv(out / "results.csv"),
     "not a sweep's results table (no status column)"),
    (both(lambda t: t.assign(accuracy="high")), "not numbers read as missing: accuracy (1 rows)"),
    (both(lambda t: t.assign(filters="five")), "1 rows of the results table left out"),
])
def test_the_sweeps_page_says_what_is_wrong_with_a_damaged_table(finished_sweep, tmp_path, monkeypatch, change,
                                                                  says):
    sweep_with_table(finished_sweep, tmp_path, change)
    at = page("sweeps", tmp_path, monkeypatch)
    assert says in texts(at, "warning", "info")


def test_the_sweeps_page_falls_back_to_the_csv_beside_a_garbage_parquet(finished_sweep, tmp_path, monkeypatch):
    out = sweep_with_table(finished_sweep, tmp_path, lambda t, out: (out / "results.parquet").write_bytes(b"junk"))
    at = page("sweeps", tmp_path, monkeypatch)
    assert "1 cells finished" in texts(at, "caption") and not at.warning
    assert (out / "results.parquet").read_bytes() == b"junk"  # read, never rewritten


def test_the_sweeps_page_says_run_folders_are_unreadable_rather_than_absent(finished_sweep, tmp_path, monkeypatch):
    out = sweep_with_table(finished_sweep, tmp_path, lambda t, out: None)
    (out / "cells" / "magnitude-f5-dall-s0" / "meta.json").write_text("{broken")
    at = page("sweeps", tmp_path, monkeypatch)
    at.session_state["sw-front"] = {"selection": {"points": [{"customdata": ["magnitude", 5.0]}]}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "cannot read the run folder of magnitude-f5-dall-s0" in texts(at, "warning")
    assert "No run folders beside this table" not in texts(at, "caption")


def test_the_picker_says_an_architecture_file_exits_and_draws_the_page(nets, tmp_path, monkeypatch):
    from app import picker

    at = page("sparsify", tmp_path, monkeypatch)
    at.selectbox(key="sp-ckpt").set_value(picker.OWN_ARCH).run()
    at.text_input(key="sp-own-path").input(str(nets / "hidden.safetensors"))
    at.text_input(key="sp-own-arch").input(f"{nets / 'exits_on_load.py'}:hidden")
    at.button(key="sp-own-load").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "running the file called sys.exit(0)" in at.error[0].value.replace("\\", "")
    assert at.title[0].value.startswith("Sparsify") and at.info  # the rest of the page is drawn


def test_the_sparsify_page_shows_the_job_just_started_not_the_one_picked_before(tmp_path, monkeypatch):
    from app import job_panel, jobs

    done = lambda job: {"status": "done"}  # noqa: E731 — finished jobs, no engine needed
    first, second = (job_panel.registry().start("sparsify", done) for _ in range(2))
    for j in (first, second):
        jobs.wait(j, 30)
    at = page("sparsify", tmp_path, monkeypatch)
    at.selectbox(key="sp-job-select").set_value(first.id).run()  # the user looks at an older job
    assert at.selectbox(key="sp-job-select").value == first.id
    third = job_panel.registry().start("sparsify", done)  # what pressing Start does
    jobs.wait(third, 30)
    at.session_state["sp-job"] = third.id
    at.run()
    assert at.selectbox(key="sp-job-select").value == third.id
    at.selectbox(key="sp-job-select").set_value(second.id).run()  # and the picker still picks
    assert at.selectbox(key="sp-job-select").value == second.id
