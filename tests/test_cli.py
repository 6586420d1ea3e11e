"""The command line: help for every command, clear errors for bad values, a short sparsify run."""

import subprocess
import sys

import pytest

from geodesic import cli, runs
from conftest import CKPT, ROOT


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "geodesic", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", ["fetch-data", "train", "sparsify", "damage", "recover", "merge"])
def test_help_explains_every_option(command, capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"{command} --{action.dest} has no help text"
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0 and "usage: python -m geodesic" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--filters", "0"], "positive integer"),
    (["--filters", "40"], "between 1 and 32"),
    (["--eps", "-1"], "positive finite"),
    (["--beta", "nan"], "positive finite"),
    (["--phi", "tanh"], "invalid choice"),
])
def test_bad_values_get_a_clear_message(args, message, tmp_path, capsys):
    argv = ["sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--out", str(tmp_path / "r"), *args]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_readme_sparsify_example_is_the_recommended_setting():
    import re
    import shlex

    from geodesic.experiments import recommended

    text = (ROOT / "README.md").read_text()
    example = re.search(r"python -m geodesic (sparsify --checkpoint .*?--out \S+)", text, re.S).group(1)
    args = cli.build_parser().parse_args(shlex.split(example.replace("\\\n", " ")))
    assert cli.sparsify_config(args) == recommended(args.filters)


def test_bad_checkpoint_gets_a_clear_message(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"garbage")
    assert cli.main(["sparsify", "--checkpoint", str(bad), "--out", str(tmp_path / "r"), "--dataset", "mnist", "--model", "mlp"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "not a readable" in err


def test_sparsify_writes_a_run_folder(tmp_path):
    out = tmp_path / "run"
    r = run_cli("sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--filters", "4", "--eps", "0.04",
                "--data", "bundled", "--eval-size", "300", "--out", str(out))
    assert r.returncode == 0, r.stderr
    run = runs.load_run(out)
    assert run.meta["status"] == "arrived" and run.meta["summary"]["groups_zero"] >= 4
    assert len(run.metrics) == run.meta["summary"]["steps"] + 2  # step 0, the walk, the snap
    assert "shortest" in r.stdout
    before = (out / "metrics.parquet").read_bytes()
    assert cli.main(["sparsify", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--filters", "4", "--out", str(out)]) == 2
    assert (out / "metrics.parquet").read_bytes() == before  # nothing is overwritten
