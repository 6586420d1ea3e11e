"""What commands leave behind: files that follow the umask (readable on shared storage), and progress that suits
where it goes (a bar on a terminal, a few plain lines on a file or a pipe)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import pytest
from conftest import CKPT, ROOT

from geodesic.infra import files
from geodesic.infra.progress import Lines, progress


@pytest.fixture
def umask_002():
    """umask 002 (group-writable files: 0664) for the test, restored after."""
    old = os.umask(0o002)
    try:
        yield 0o664
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_umask_is_read_without_changing_it(umask_002):
    assert files.umask() == 0o002 and files.default_mode() == 0o664
    assert files.umask() == 0o002


def test_run_folders_checkpoints_and_exports_follow_the_umask(umask_002, tmp_path):
    from geodesic.experiments.sweep import SweepSpec, run_sweep
    from geodesic.store import checkpoints
    from geodesic.store.export import export
    from geodesic.store.source import Source

    spec = SweepSpec(Source(str(CKPT / "mlp-mnist.safetensors"), "mnist", "bundled", 100), filters=(5,),
                     methods=("magnitude",), seconds=0.2)
    run_sweep(spec, tmp_path / "sweep", backend="loop")
    cell = tmp_path / "sweep" / "cells" / "magnitude-f5-dall-s0"
    export(cell, tmp_path / "export", batches=())
    model, card = checkpoints.load(CKPT / "mlp-mnist.safetensors")
    checkpoints.save(model, tmp_path / "copy.safetensors", card)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"final.safetensors", "state.safetensors", "meta.json", "metrics.parquet", "results.csv", "results.parquet",
            "sweep.json", "model.safetensors", "model.onnx", "model.json", "copy.safetensors", "copy.json"} <= names
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written if mode(p) != umask_002} == {}


def test_off_a_terminal_progress_is_a_few_plain_lines():
    out = io.StringIO()
    bar = progress(470, "train mlp", "step", file=out)
    assert isinstance(bar, Lines)
    for i in range(470):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}", refresh=False)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 11  # every 10%, and once at the end
    assert lines[0].startswith("train mlp: 47/470 step (10%), 0 s, loss=")
    assert lines[-1].startswith("train mlp: 470/470 step (100%)")


def test_progress_lines_also_come_with_time_and_without_a_total():
    out = io.StringIO()
    bar = Lines(None, "cells", "cell", file=out, every_s=0.0)
    bar.update(2)
    bar.total = 4  # a total learned later (a sweep's cells)
    bar.update(2)
    bar.close()
    assert out.getvalue().splitlines() == [l for l in out.getvalue().splitlines() if l.startswith("cells: ")]
    assert out.getvalue().splitlines()[0].startswith("cells: 2 cell, ")
    assert "cells: 4/4 cell (100%)" in out.getvalue()
    quiet = io.StringIO()
    Lines(10, "never started", file=quiet).close()
    assert quiet.getvalue() == ""


def test_on_a_terminal_progress_is_a_tqdm_bar():
    from tqdm import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress(10, "walk", file=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()


def test_a_command_piped_to_a_file_writes_lines_not_carriage_returns(tmp_path):
    r = subprocess.run([sys.executable, "-m", "geodesic", "damage", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"),
                        "--kind", "zero", "--level", "0.1", "--seeds", "20", "--data", "bundled", "--eval-size", "100",
                        "--out", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    progress_lines = [l for l in r.stderr.splitlines() if l.startswith("damage zero 0.1: ")]
    assert "\r" not in r.stderr and 2 <= len(progress_lines) <= 11, r.stderr
