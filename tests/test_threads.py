"""The engine's thread policy (geodesic.threads): default, $GEODESIC_THREADS, explicit counts, bad values."""

import pytest
import torch

from geodesic import threads


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
    with pytest.raises(ValueError):
        threads.configure(0)
    assert torch.get_num_threads() == 1
