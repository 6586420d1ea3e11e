import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)

from geodesic import data, models  # noqa: E402

CKPT = ROOT / "assets" / "checkpoints"


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
