"""The engine's thread policy (geodesic.infra.threads): default, $GEODESIC_THREADS, explicit counts, bad values."""

import pytest
import torch

from geodesic.infra import threads


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_without_environment():
    assert threads.default() == threads.DEFAULT >= 1
    assert threads.resolve() == threads.DEFAULT
    assert threads.configure() == threads.DEFAULT == torch.get_num_threads()


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_environment_means_default(monkeypatch, value):
    monkeypatch.setenv(threads.ENV, value)
    assert threads.configure() == threads.DEFAULT


def test_environment_overrides_default(monkeypatch):
    monkeypatch.setenv(threads.ENV, " 3 ")
    assert threads.default() == 3
    assert threads.configure() == 3 == torch.get_num_threads()


def test_explicit_count_wins_over_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.configure(2) == 2 == torch.get_num_threads()
    assert threads.resolve(1) == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, 2.0, True, "2", 1e9])
def test_invalid_argument(value):
    with pytest.raises(ValueError, match="threads must be a whole number of threads >= 1"):
        threads.configure(value)


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "two", "+2", "2 threads"])
def test_invalid_environment(monkeypatch, value):
    monkeypatch.setenv(threads.ENV, value)
    with pytest.raises(ValueError, match=r"\$GEODESIC_THREADS must be a whole number"):
        threads.configure()
    assert threads.configure(1) == 1  # an explicit count does not read the variable


def test_invalid_value_leaves_torch_alone():
    torch.set_num_threads(1)
    with pytest.raises(ValueError, match="threads must be a whole number of threads >= 1, got 0"):
        threads.configure(0)
    assert torch.get_num_threads() == 1


FAULTS = r"""
import resource, sys, torch
from geodesic.infra import threads
threads.configure(1) if sys.argv[1] == "policy" else torch.set_num_threads(1)
conv, x = torch.nn.Conv2d(1, 64, 3, padding=1), torch.randn(256, 1, 28, 28)
def step():  # 51 MB of activations, allocated and freed, as a path step's pull batch does
    with torch.no_grad():
        return float(torch.relu(conv(x)).sum())
step(), step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step(), step(), step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="the allocator policy is glibc's")
def test_the_allocator_policy_keeps_freed_activations_for_the_next_step():
    """Three forward passes of a 256-image batch page-fault their activations again every time with glibc's
    defaults (about 110,000 faults here), and hardly at all once threads.configure() has applied
    geodesic.infra.allocator's policy."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    kept, default = faults("policy"), faults("default")
    assert kept < 1000 and default > 30_000, (kept, default)
