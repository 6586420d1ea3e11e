"""Dead hidden units: the zoo's mlp nets have none; a net with many (tests/assets/mlp-fashion-mnist-dead-units,
the zoo's earlier mlp-fashion-mnist, trained without warmup) is kept here for the engine to meet them."""

from __future__ import annotations

import pytest
import torch
from conftest import CKPT, ROOT
from test_cli import run_cli

from geodesic.store import checkpoints, data, runs

DEAD_NET = ROOT / "tests" / "assets" / "mlp-fashion-mnist-dead-units.safetensors"


def dead_units(path) -> int:
    """Hidden units of an mlp that are 0 after the ReLU on every bundled test image of its dataset."""
    model, card = checkpoints.load(path)
    x = data.load(card["dataset"], "test", "bundled").x
    with torch.no_grad():
        hidden = torch.relu(model.fc1(model.norm(x).flatten(1)))
    return int((hidden.amax(0) == 0).sum())


@pytest.mark.parametrize("stem", ["mlp-mnist", "mlp-fashion-mnist"])
def test_the_zoo_mlps_have_no_dead_units(stem):
    assert dead_units(CKPT / f"{stem}.safetensors") == 0


def test_the_dead_unit_net_has_dead_units():
    assert dead_units(DEAD_NET) >= 12


def test_sparsifying_dead_units_arrives_without_a_hint(tmp_path):
    out = tmp_path / "run"
    r = run_cli("sparsify", "--checkpoint", str(DEAD_NET), "--filters", "8", "--data", "bundled", "--eval-size", "300",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "hint" not in r.stderr and "diverged" not in r.stderr
    assert runs.load_run(out).status.value == "arrived"
