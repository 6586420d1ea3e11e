import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)  # the engine's default (geodesic.threads): small products run fastest on one thread

from geodesic import data, models  # noqa: E402

CKPT = ROOT / "assets" / "checkpoints"


@pytest.fixture(scope="session", autouse=True)
def app_engine_settles():
    """At the end of the session, let the app's background engine import (started by any page a test opens)
    finish: an interpreter that exits while torch works in that thread aborts."""
    yield
    import threading

    for t in threading.enumerate():
        if t.name == "geodesic-warm-engine":
            t.join(180)


@pytest.fixture(scope="session")
def mnist_test():
    return data.load("mnist", "test", "bundled")


@pytest.fixture(scope="session")
def mnist_train():
    return data.load("mnist", "train", "bundled")


@pytest.fixture(scope="session")
def mlp_mnist():
    return models.load(CKPT / "mlp-mnist.safetensors")


@pytest.fixture(scope="session")
def lenet_mnist():
    return models.load(CKPT / "lenet60-mnist.safetensors")
