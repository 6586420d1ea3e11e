"""`geodesic sequence` end to end on the bundled MNIST subsets: run folders anyone can recompute R from, the
results table, resume and growth, and nonsense refused before anything is written."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from geodesic import cli
from geodesic.core.scenario import head
from geodesic.experiments.sequence import ACCURACY_FILE, row
from geodesic.store import checkpoints, data, runs
from geodesic.store import tasks as T

ARGS = ["sequence", "--tasks", "split-mnist", "--scenario", "domain", "--steps", "20", "--memory", "10",
        "--data-source", "bundled", "--backend", "loop"]


def test_a_sequence_run_can_be_recomputed_and_resumed(tmp_path, capsys):
    out = tmp_path / "seq"
    assert cli.main([*ARGS, "--methods", "finetune,geodesic", "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert list(table["method"]) == ["finetune", "geodesic"] and set(table["status"]) == {"done"}
    assert table[["ACC", "BWT", "FWT", "forgetting"]].notna().all().all() and list(table["steps"]) == [100, 100]
    cell = out / "cells" / "geodesic-s0"
    run = runs.load_run(cell)
    assert run.meta["kind"] == "sequence" and run.meta["model"] == "mlp100" and run.meta["scenario"] == "domain"
    tasks = T.read(cell / T.FILE)
    assert [t.classes for t in tasks] == [t.classes for t in T.split_mnist()]
    R = load_file(str(cell / ACCURACY_FILE))["R"]
    model, card = checkpoints.load(cell / "final.safetensors")
    test = data.load("mnist", "test", "bundled")
    with torch.no_grad():
        last = row(model, tasks, [t.apply(test) for t in tasks], 5, "domain")
    assert last == pytest.approx(R[-1].tolist(), abs=1e-6)  # the final net gives R's last row back
    assert table.loc[1, "ACC"] == pytest.approx(R[-1].mean().item(), abs=1e-6)
    assert head([t.classes for t in tasks], 0, 5, "domain").units == (0, 1)
    stamp = (cell / "meta.json").stat().st_mtime_ns
    assert cli.main([*ARGS, "--methods", "finetune,geodesic", "--seeds", "0,1", "--out", str(out)]) == 0
    assert (cell / "meta.json").stat().st_mtime_ns == stamp  # kept, not run again
    assert sorted(pd.read_csv(out / "results.csv")["cell"]) == ["finetune-s0", "finetune-s1", "geodesic-s0",
                                                               "geodesic-s1"]


@pytest.mark.parametrize("args, says", [
    (["--tasks", "permuted-mnist:3", "--scenario", "task"], "share their classes: with one ten-way output only the domain"),
    (["--memory", "0"], "memory must be >= 1"),
    (["--methods", "finetune,gem"], "method must be one of"),
    (["--tasks", "cifar10"], "sequences are permuted-mnist:T, split-mnist, or datasets"),
    (["--pull", "-1"], "the pull must be finite and >= 0"),
    (["--ewc-lambda", "nan"], "EWC λ, SI c and the pull must be finite"),
])
def test_nonsense_is_refused_before_anything_is_written(args, says, tmp_path, capsys):
    out = tmp_path / "seq"
    assert cli.main([*ARGS, *args, "--out", str(out)]) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_another_sequence_in_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "seq"
    assert cli.main([*ARGS, "--methods", "finetune", "--out", str(out)]) == 0
    before = (out / "results.csv").read_bytes()
    assert cli.main([*ARGS, "--methods", "finetune", "--memory", "11", "--out", str(out)]) == 2
    assert "holds another sequence run" in capsys.readouterr().err and (out / "results.csv").read_bytes() == before


def test_each_benchmark_runs_with_its_measured_strengths_unless_the_user_gives_one(tmp_path):
    from geodesic.experiments.continual import STRENGTHS, LearnConfig

    out = tmp_path / "perm"
    args = [*ARGS[:2], "permuted-mnist:2", *ARGS[3:], "--methods", "finetune", "--si-c", "3", "--out", str(out)]
    assert cli.main(args) == 0
    learn = json.loads((out / "sequence.json").read_text())["learn"]
    measured = STRENGTHS["permuted-mnist"]
    assert learn["ewc_lambda"] == measured["ewc_lambda"] != LearnConfig().ewc_lambda
    assert learn["pull"] == measured["pull"] and learn["si_c"] == 3.0  # the user's value wins
    out = tmp_path / "split"
    assert cli.main([*ARGS, "--methods", "finetune", "--out", str(out)]) == 0
    learn = json.loads((out / "sequence.json").read_text())["learn"]
    assert (learn["ewc_lambda"], learn["si_c"], learn["pull"]) == (LearnConfig().ewc_lambda, LearnConfig().si_c,
                                                                    LearnConfig().pull)


def test_each_benchmark_keeps_its_measured_memory_and_walk_unless_the_user_gives_one(tmp_path):
    """The memory is the benchmark's (choices.MEMORY) unless --memory is given; a sequence of datasets walks as
    `merge` does (its β and final ε in the path)."""
    from geodesic.experiments.choices import MEMORY
    from geodesic.experiments.continual import STRENGTHS, LearnConfig, config_for

    perm = ["sequence", "--tasks", "permuted-mnist:2", "--scenario", "domain", "--steps", "20", "--data-source",
            "bundled", "--backend", "loop", "--methods", "finetune"]
    for extra, memory in (([], MEMORY["permuted-mnist"]), (["--memory", "7"], 7)):
        out = tmp_path / f"perm{memory}"
        assert cli.main([*perm, *extra, "--out", str(out)]) == 0
        assert json.loads((out / "sequence.json").read_text())["learn"]["memory"] == memory
    assert MEMORY["permuted-mnist"] != LearnConfig().memory
    walk = config_for("mnist,fashion-mnist").path
    assert (walk.beta, walk.eps_final) == (STRENGTHS["datasets"]["beta"], STRENGTHS["datasets"]["eps_final"])
    assert config_for("split-mnist").path == LearnConfig().path
    assert config_for("mnist,fashion-mnist", beta=1e-3).path.beta == 1e-3


def test_a_net_for_colour_images_is_refused_once_with_the_fix(tmp_path, capsys):
    """A torchvision net takes 3 channels: the command says so before any cell runs, and how to give it 1."""
    (tmp_path / "tv.py").write_text("import torchvision\n\ndef resnet18():\n"
                                    "    return torchvision.models.resnet18(num_classes=10)\n")
    out = tmp_path / "seq"
    assert cli.main([*ARGS, "--arch", f"{tmp_path / 'tv.py'}:resnet18", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "expected input" in err and "m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)" in err and not out.exists()


def test_a_cell_another_process_is_writing_is_never_cleared(tmp_path, capsys):
    """Resuming clears the cells that did not end, but not one a running command is still writing (grid.py,
    shared with the sweep)."""
    import os
    import platform
    import time

    out = tmp_path / "seq"
    assert cli.main([*ARGS, "--methods", "finetune", "--out", str(out)]) == 0
    meta_file = out / "cells" / "finetune-s0" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta.update(status="running", pid=os.getpid(), host=platform.node(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S"))  # after this process started: its writer
    meta_file.write_text(json.dumps(meta))
    assert cli.main([*ARGS, "--methods", "finetune", "--out", str(out)]) == 2
    assert "being written by a running process; stop that sequence run first" in capsys.readouterr().err
    assert meta_file.is_file()
