import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)  # the engine's default (geodesic.infra.threads): small products run fastest on one thread

from geodesic.store import checkpoints, data  # noqa: E402

CKPT = ROOT / "assets" / "checkpoints"
APP = str(ROOT / "app" / "main.py")


def open_page(name: str):
    """Page app/views/<name>.py as a browser opens it (a streamlit AppTest): the visit's first run (its controls),
    then the rerun the browser asks for once it has drawn them (page.after_paint), which draws the saved runs'
    tables and charts; no exception on the way."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    if name != "sparsify":
        at.switch_page(f"views/{name}.py")
        at.run()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


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
    return checkpoints.load(CKPT / "mlp-mnist.safetensors")


@pytest.fixture(scope="session")
def lenet_mnist():
    return checkpoints.load(CKPT / "lenet60-mnist.safetensors")


OWN_ARCH = '''"""A user's own network: two convolutions and a linear head for 1x28x28 images."""
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, stride=2), nn.Conv2d(4, 6, 3, stride=2)
        self.head = nn.Linear(6 * 6 * 6, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def make():
    return Small()
'''


@pytest.fixture
def own_arch(tmp_path):
    """A user's own network: the spec of its architecture file ("…/small_net.py:make", 4 + 6 prunable filters) and
    two checkpoints of it (plain state dicts, no card; initialised with seeds 0 and 1)."""
    from safetensors.torch import save_file

    from geodesic.store import arch

    (tmp_path / "small_net.py").write_text(OWN_ARCH)
    spec = f"{tmp_path / 'small_net.py'}:make"
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"small-{seed}.safetensors")
        save_file(arch.build(spec).state_dict(), str(paths[-1]))
    return spec, *paths
