"""The command line: help for every command, clear errors for bad values, a short sparsify run."""

import subprocess
import sys

import pytest
from conftest import CKPT, ROOT

from geodesic import cli
from geodesic.store import runs


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "geodesic", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["fetch-data", "train", "sparsify", "damage", "recover", "merge", "export", "sweep",
                                     "sequence"])
def test_help_explains_every_option(command, capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"{command} --{action.dest} has no help text"
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0 and "usage: geodesic" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--filters", "0"], "filters must be >= 1"),
    (["--filters", "40"], "between 1 and 32"),
    (["--eps", "-1"], "eps must be in (0,"),
    (["--eps", "1e300"], "eps must be in (0,"),
    (["--beta", "nan"], "beta must be in (0,"),
    (["--beta", "1e300"], "beta must be in (0,"),
    (["--probe", "100000"], "probe batch must be in [1,"),
    (["--relax-eps", "0.001"], "relax_eps_final must be in (0, relax_eps"),
    (["--phi", "tanh"], "invalid choice"),
    (["--paths", "0"], "--paths must be >= 1"),
    (["--eval-size", "-3"], "--eval-size must be >= 0"),
])
def test_bad_values_get_a_clear_message_before_anything_is_written(args, message, tmp_path, capsys):
    argv = ["sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--out", str(tmp_path / "r"), *args]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def mlp_args(out, *more):
    return ["sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--filters", "4", "--preset", "literal",
            "--data", "bundled", "--eval-size", "200", "--out", str(out), *more]


def test_out_that_is_a_file_or_cannot_be_written_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert cli.main(mlp_args(blocker)) == 2 and "is a file" in capsys.readouterr().err
    assert cli.main(mlp_args(blocker / "run")) == 2 and "cannot write a run folder" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"


def test_missing_checkpoint_says_no_such_file(tmp_path, capsys):
    assert cli.main(["sparsify", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "r")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_recover_from_a_missing_or_non_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "nowhere", tmp_path / "empty"):
        code = cli.main(["recover", "--from-run", str(source), "--out", str(tmp_path / "r")])
        assert code == 2 and "is not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_refuses_to_replace_a_checkpoint_or_write_nowhere_before_training(tmp_path, capsys):
    existing = tmp_path / "net.safetensors"
    existing.write_bytes(b"old")
    code = cli.main(["train", "--model", "mlp", "--dataset", "mnist", "--out", str(existing)])
    assert code == 2 and "--force" in capsys.readouterr().err and existing.read_bytes() == b"old"
    (tmp_path / "file").write_text("")
    code = cli.main(["train", "--model", "mlp", "--dataset", "mnist", "--out", str(tmp_path / "file" / "n.safetensors")])
    assert code == 2 and "error:" in capsys.readouterr().err


def test_a_card_that_names_the_wrong_dataset_gets_a_warning(tmp_path, capsys):
    import json
    import shutil

    shutil.copy(CKPT / "mlp-mnist.safetensors", tmp_path / "net.safetensors")
    card = json.loads((CKPT / "mlp-mnist.json").read_text())
    (tmp_path / "net.json").write_text(json.dumps({**card, "dataset": "fashion-mnist"}))
    code = cli.main(["sparsify", "--checkpoint", str(tmp_path / "net.safetensors"), "--filters", "2", "--preset",
                     "literal", "--max-steps", "1", "--data", "bundled", "--eval-size", "100", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 0 and "warning:" in err and "is the card's dataset right?" in err


def test_a_diverging_walk_ends_with_a_clear_status_and_a_nonzero_exit(tmp_path, capsys):
    """A walk that ended diverged exits 1 with what to try (a checkpoint whose weights are already out of range
    never starts one: it is refused at load, tests/test_hostile.py)."""
    from geodesic.infra.lifecycle import DIVERGED_HINT, Status

    assert cli.finished(Status.DIVERGED, "walk", tmp_path / "r") == 1
    err = capsys.readouterr().err
    assert "the walk diverged" in err and f"hint: {DIVERGED_HINT}" in err


def test_readme_sparsify_example_is_the_recommended_setting():
    import re
    import shlex

    from geodesic.experiments.sparsify import recommended

    text = (ROOT / "README.md").read_text()
    example = re.search(r"python -m geodesic (sparsify --checkpoint .*?--out \S+)", text, re.S).group(1)
    args = cli.build_parser().parse_args(shlex.split(example.replace("\\\n", " ")))
    assert cli.sparsify_config(args) == recommended(args.filters)
    assert cli.sparsify_config(cli.build_parser().parse_args(["sparsify", "--checkpoint", "x", "--out", "y"])) == recommended()


def test_bad_checkpoint_gets_a_clear_message(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage")
    assert cli.main(["sparsify", "--checkpoint", str(bad), "--out", str(tmp_path / "r"), "--dataset", "mnist", "--model", "mlp"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not a readable" in err


def test_sparsify_writes_a_run_folder(tmp_path):
    out = tmp_path / "run"
    r = run_cli("sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--filters", "4", "--eps", "0.04",
                "--preset", "literal", "--data", "bundled", "--eval-size", "300", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run = runs.load_run(out)
    assert run.meta["status"] == "arrived" and run.meta["summary"]["groups_zero"] >= 4
    assert len(run.metrics) == run.meta["summary"]["steps"] + 2  # step 0, the walk, the snap
    assert "shortest" in r.stdout
    before = (out / "metrics.parquet").read_bytes()
    assert cli.main(["sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--filters", "4", "--out", str(out)]) == 2
    assert (out / "metrics.parquet").read_bytes() == before  # nothing is overwritten


def test_a_budget_too_short_for_the_walk_ends_restored_and_says_so(tmp_path):
    """Steps of at most ε = 1e-6 cannot walk 12 of 32 units to zero in 3 CPU s: the walk is projected, restored by
    descent, and the run says so; not a failure (exit 0), the zero groups exact."""
    out = tmp_path / "run"
    r = run_cli("sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--filters", "12", "--eps", "1e-6",
                "--seconds", "3", "--data", "bundled", "--eval-size", "300", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run = runs.load_run(out)
    assert run.meta["status"] == "missed" and run.meta["summary"]["groups_zero"] >= 12
    assert run.meta["summary"]["restore_steps"] == int((run.metrics["phase"] == "restore").sum()) > 0
    assert "restored by descent" in r.stdout
    need = run.meta["summary"].get("budget_to_arrive")  # the budget its steps would have needed, when measured
    assert f"about --seconds {need} would let it walk" in r.stdout if need else "more --seconds" in r.stdout
    assert "/3 CPU s" in r.stderr  # the progress counts the budget's CPU seconds (a plain line off a terminal)
    fitted = (run.meta["config"]["path"]["probe"], run.meta["config"]["pull_batch"]) != (32, 256)
    assert ("the run used probe" in r.stdout) == fitted  # the CLI says when the budget fitted the batches


TINY_RESNET = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4)
        self.block = Block(4)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        x = self.block(torch.relu(self.bn(self.stem(x))))
        return self.head(x.mean((2, 3)))


def make():
    torch.manual_seed(0)
    net = Tiny()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def broken():
    raise RuntimeError("no such layer size")


def not_a_module():
    return 42
'''


@pytest.fixture()
def tiny_arch(tmp_path):
    """A tiny residual net with BatchNorm in a user's file, and its plain state dict as the checkpoint."""
    from safetensors.torch import save_file

    (tmp_path / "tiny.py").write_text(TINY_RESNET)
    from geodesic.store import arch

    save_file(arch.build(f"{tmp_path / 'tiny.py'}:make").state_dict(), str(tmp_path / "tiny.safetensors"))
    return tmp_path / "tiny.py", tmp_path / "tiny.safetensors"


@pytest.mark.parametrize("factory,message", [("nothing", "has no 'nothing'"), ("broken", "calling broken() failed"),
                                             ("not_a_module", "not a torch nn.Module"), ("", "give FILE.py:FACTORY")])
def test_arch_loader_says_what_is_wrong(tiny_arch, tmp_path, capsys, factory, message):
    code = cli.main(["sparsify", "--arch", f"{tiny_arch[0]}:{factory}", "--checkpoint", str(tiny_arch[1]),
                     "--dataset", "mnist", "--out", str(tmp_path / "r")])
    assert code == 2 and message in capsys.readouterr().err


def test_arch_whose_weights_do_not_match_is_refused(tiny_arch, tmp_path, capsys):
    code = cli.main(["sparsify", "--arch", f"{tiny_arch[0]}:make", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"),
                     "--dataset", "mnist", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "do not match" in err and "missing stem.weight" in err


@pytest.mark.slow
def test_your_own_residual_net_sparsifies_and_exports_through_the_cli(tiny_arch, tmp_path):
    import onnxruntime
    from safetensors.torch import load_file

    from geodesic.store import arch, checkpoints, data

    run = tmp_path / "run"
    r = run_cli("sparsify", "--arch", f"{tiny_arch[0]}:make", "--checkpoint", str(tiny_arch[1]), "--dataset", "mnist",
                "--fraction", "0.5", "--preset", "literal", "--eps", "0.05", "--data", "bundled", "--eval-size", "100",
                "--out", str(run))
    assert r.returncode == 0, r.stderr
    meta = runs.load_run(run).meta
    assert meta["status"] == "arrived" and meta["summary"]["groups_zero"] >= 4 and meta["arch"].endswith(":make")
    net = arch.build(f"{tiny_arch[0]}:make")
    net.load_state_dict(load_file(str(run / "final.safetensors")))  # a plain state dict, BatchNorm buffers included
    r = run_cli("export", "--run", str(run), "--out", str(tmp_path / "compact"))
    assert r.returncode == 0, r.stderr
    x = data.load("mnist", "test", "bundled").x[:16]
    ort = onnxruntime.InferenceSession(str(tmp_path / "compact" / "model.onnx"))
    got = ort.run(None, {ort.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - net(x).detach().numpy()).max() < 1e-4
    compact, card = checkpoints.load(tmp_path / "compact" / "model.safetensors", arch=f"{tiny_arch[0]}:make")
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in net.parameters())


@pytest.mark.slow
def test_train_your_own_architecture_then_load_it_with_the_same_arch(tiny_arch, tmp_path):
    from geodesic.store import cards, checkpoints

    out = tmp_path / "mine.safetensors"
    r = run_cli("train", "--arch", f"{tiny_arch[0]}:make", "--dataset", "mnist", "--epochs", "1", "--batch", "256",
                "--lr", "0.003", "--out", str(out))
    assert r.returncode == 0, r.stderr
    net, card = checkpoints.load(out, arch=f"{tiny_arch[0]}:make")
    assert card["model"] == "make" and card["arch"] == f"{tiny_arch[0].resolve()}:make"
    # one epoch of a 4-channel residual net on the full MNIST: it learned (chance: 10%, loss ln 10 = 2.30)
    assert card["test_accuracy"] > 0.15 and card["test_loss"] < 2.2
    with pytest.raises(cards.CheckpointError, match="--arch"):  # the card's name alone runs no code
        checkpoints.load(out)


def test_train_needs_one_architecture(tiny_arch, tmp_path, capsys):
    for extra in ([], ["--model", "mlp", "--arch", f"{tiny_arch[0]}:make"]):
        code = cli.main(["train", *extra, "--dataset", "mnist", "--out", str(tmp_path / "n.safetensors")])
        assert code == 2 and "--model NAME (the zoo) or --arch" in capsys.readouterr().err
    assert not (tmp_path / "n.safetensors").exists()
