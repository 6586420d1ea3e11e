"""Reading a run folder without torch (geodesic.store.runs: read_meta, safetensors_shapes, snapshot_problem),
checked against folders and files the engine writes (RunWriter, safetensors.torch) and against the torch reader
(Run.snapshots, load_run): what the header check accepts, the engine reads; what it refuses, the engine refuses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from geodesic.store import runs
from geodesic.store.zoo_table import WEIGHT_COUNTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished mlp run folder as RunWriter writes it: meta, three rows, snapshots at steps 0, 5, 10, the end."""
    torch.manual_seed(0)
    w0 = torch.randn(WEIGHT_COUNTS["mlp"])
    writer = runs.RunWriter({"kind": "sparsify", "model": "mlp", "config": {"filters": 2}}, root=tmp_path)
    writer.begin(None, w0)
    for step in (0, 5, 10):
        writer.add({"step": step, "accuracy": 0.9})
        writer.add_snapshot(step, w0 * (1 - step / 10))
    writer.finish(runs.Status.ARRIVED, w0 * 0, {"accuracy": 0.9})
    return writer.dir


def test_read_meta_is_load_runs_meta(run_dir):
    meta = runs.read_meta(run_dir)
    assert meta == runs.load_run(run_dir).meta
    assert meta["status"] == "arrived" and meta["config"] == {"filters": 2} and meta["model"] == "mlp"


@pytest.mark.parametrize("text, why", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "holds a list, not a JSON object"),
    ('{"summary": [1]}', "summary is a list, not a JSON object"),
    ('{"config": "x"}', "config is a str, not a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_read_meta_refuses_what_load_run_refuses(tmp_path, text, why):
    (tmp_path / "meta.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=why):
        runs.read_meta(tmp_path)
    with pytest.raises(ValueError, match=why):
        runs.load_run(tmp_path)


def test_read_meta_of_a_folder_without_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        runs.read_meta(tmp_path)
    (tmp_path / "meta.json").mkdir()  # not a file
    with pytest.raises(FileNotFoundError):
        runs.read_meta(tmp_path)


def test_safetensors_shapes_are_the_files_shapes(tmp_path):
    """Every dtype the engine writes, a scalar, an empty tensor and metadata: the shapes torch reads back."""
    tensors = {"w": torch.randn(7, 3), "step": torch.tensor(4), "mask": torch.ones(5, dtype=torch.uint8),
               "half": torch.zeros(2, 2, dtype=torch.float16), "long": torch.arange(3), "empty": torch.zeros(0, 4),
               "flag": torch.tensor([True, False])}
    p = tmp_path / "t.safetensors"
    save_file(tensors, str(p), metadata={"by": "test"})
    assert runs.safetensors_shapes(p) == {k: tuple(v.shape) for k, v in tensors.items()}


def test_safetensors_shapes_refuse_a_damaged_file(tmp_path):
    p = tmp_path / "t.safetensors"
    save_file({"w": torch.randn(100)}, str(p))
    whole = p.read_bytes()
    p.write_bytes(whole[:-4])  # truncated: the data no longer fits
    with pytest.raises(ValueError, match="does not fit the file"):
        runs.safetensors_shapes(p)
    p.write_bytes(b"\x00" * 4)  # shorter than the length field
    with pytest.raises(ValueError, match="not a .safetensors file"):
        runs.safetensors_shapes(p)
    n = int.from_bytes(whole[:8], "little")
    p.write_bytes(whole[:8] + b"\xff" * n + whole[8 + n:])  # a header that is not JSON
    with pytest.raises(ValueError, match="bad header"):
        runs.safetensors_shapes(p)
    header = json.loads(whole[8:8 + n])
    header["w"]["dtype"] = "X9"  # a dtype of no known width
    text = json.dumps(header).encode()
    p.write_bytes(len(text).to_bytes(8, "little") + text + whole[8 + n:])
    with pytest.raises(ValueError, match="bad header entry"):
        runs.safetensors_shapes(p)


def test_the_snapshots_a_run_writes_have_no_problem_and_read(run_dir):
    run = runs.load_run(run_dir)
    assert runs.snapshot_problem(run) is None
    steps, w = run.snapshots()
    assert steps.tolist() == [0, 5, 10] and w.shape == (3, WEIGHT_COUNTS["mlp"])


def test_every_gallery_run_has_usable_snapshots():
    found, problems = runs.scan(runs.gallery_root(), readonly=True)
    assert found and not problems
    for run in found:
        assert runs.snapshot_problem(run) is None, run.id


def test_snapshot_problems_are_named(run_dir):
    run = runs.load_run(run_dir)
    snaps = sorted((run_dir / runs.SNAPSHOTS).glob("*.safetensors"))
    save_file({"w": torch.zeros(10), "step": torch.tensor(20)}, str(run_dir / runs.SNAPSHOTS / "0000020.safetensors"))
    assert "of different sizes [10, 25450]" in runs.snapshot_problem(run)
    with pytest.raises(ValueError, match="different sizes"):  # the torch reader refuses them too
        run.snapshots()
    (run_dir / runs.SNAPSHOTS / "0000020.safetensors").unlink()

    other = runs.Run(run.dir, {**run.meta, "model": "lenet60"}, run.metrics)  # a lenet60 has more weights
    assert runs.snapshot_problem(other) == "snapshots unusable: snapshots hold 25,450 weights, a lenet60 has 85,670"

    snaps[1].write_bytes(snaps[1].read_bytes()[:-8])  # truncated
    assert "0000005" not in runs.snapshot_problem(run) and "does not fit the file" in runs.snapshot_problem(run)
    with pytest.raises(ValueError):
        run.snapshots()


def test_an_older_folders_single_snapshot_file(run_dir):
    """snapshots.safetensors of older versions: w (S, n) and step (S,)."""
    run = runs.load_run(run_dir)
    for p in (run_dir / runs.SNAPSHOTS).glob("*"):
        p.unlink()
    save_file({"w": torch.zeros(3, WEIGHT_COUNTS["mlp"]), "step": torch.tensor([0, 5, 10])},
              str(run_dir / "snapshots.safetensors"))
    assert runs.snapshot_problem(run) is None and run.snapshots()[0].tolist() == [0, 5, 10]
    save_file({"w": torch.zeros(3, 7), "step": torch.tensor([0, 5])}, str(run_dir / "snapshots.safetensors"))
    assert "expected w (snapshots, weights) and step (snapshots,)" in runs.snapshot_problem(run)


def test_reading_a_run_folder_imports_neither_torch_nor_pandas(run_dir):
    code = ("import sys; from pathlib import Path; from geodesic.store import runs; d = Path(sys.argv[1]); "
            "runs.read_meta(d); runs.snapshot_problem(runs.Run(d, runs.read_meta(d), None)); "
            "print(sorted({'torch', 'pandas'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
