"""Joining a Ray cluster started by the book (`ray start --head`): with token authentication on, a sweep with
--address sends the configured token; without it, with a wrong one, or with nothing listening, one line and a
bounded wait; a cluster without authentication ignores a token left by an earlier local Ray.
The cluster's processes are stopped by process group (tools/ray_cluster.py: stop_cluster), never by `ray stop`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import CKPT, ROOT

from geodesic.infra import backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def geodesic(args: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geodesic", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def driver_env(home, **extra) -> dict:
    """A driver's environment: its own HOME (no ~/.ray of the user's), no auth settings but `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **extra}


def sweep_args(out, address: str, seeds: str = "0,1") -> list[str]:
    return ["sweep", "--checkpoint", str(CKPT / "mlp-mnist.safetensors"), "--dataset", "mnist", "--data-source",
            "bundled", "--eval-size", "200", "--filters", "5", "--methods", "magnitude", "--seeds", seeds,
            "--seconds", "0.5", "--out", str(out), "--address", address]


def stock_cluster(tmp_path_factory, auth: str):
    """A stock one-node cluster on 127.0.0.1 (`ray start --head`, auth "token" or "disabled"); yields (address,
    token file or None) and stops exactly its processes."""
    from tools import ray_cluster
    from tools.ray_cluster import start_cluster, stop_cluster

    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = str(ROOT)  # the cluster's workers import geodesic from this tree
    os.environ["HOME"] = str(tmp_path_factory.mktemp("head-home"))  # the user's ~/.ray stays untouched
    try:
        address, pgids = start_cluster(nodes=1, cpus_per_node=2, port=free_port(), auth=auth)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield address, ray_cluster._AUTH_ENV.get(ray_cluster.AUTH_TOKEN_PATH_VAR)
    finally:
        stop_cluster(pgids)
        assert not ray_cluster._cluster_procs(pgids, {})
        shutil.rmtree(f"/tmp/ray_lb{address.rsplit(':', 1)[1]}", ignore_errors=True)  # its logs and token


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """Token auth on (RAY_AUTH_MODE=token on the head, a token file), as a cluster's owner runs it."""
    yield from stock_cluster(tmp_path_factory, "token")


@pytest.mark.slow
def test_a_sweep_joins_a_token_cluster_with_the_configured_token(token_cluster, tmp_path):
    address, token = token_cluster
    out = tmp_path / "sweep"
    r = geodesic(sweep_args(out, address), driver_env(tmp_path, RAY_AUTH_TOKEN_PATH=token))
    assert r.returncode == 0, r.stderr[-3000:]
    table = pd.read_csv(out / "results.csv")
    assert sorted(table["cell"]) == ["magnitude-f5-dall-s0", "magnitude-f5-dall-s1"]
    assert set(table["status"]) == {"done"} and table["accuracy"].between(0, 1).all()
    assert (table["node"] != "local").all()  # ran as tasks of the cluster, not in the driver


@pytest.mark.slow
@pytest.mark.parametrize("token,says", [({}, "requires its token: copy the head's ~/.ray/auth_token"),
                                        ({"RAY_AUTH_TOKEN": "0" * 64}, "refused the token from RAY_AUTH_TOKEN")])
def test_a_token_cluster_that_refuses_us_says_what_to_set(token_cluster, tmp_path, token, says):
    address, _ = token_cluster
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    r = geodesic(sweep_args(out, address), driver_env(tmp_path, **token))
    assert time.monotonic() - t0 < 60
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr  # one line, Ray's own log held back
    assert r.stderr.startswith(f"error: the Ray cluster at {address} ") and says in r.stderr
    assert "RAY_AUTH_TOKEN_PATH=FILE" in r.stderr and not out.exists()


@pytest.mark.slow
def test_a_cluster_without_auth_ignores_the_token_a_local_ray_left(tmp_path_factory, tmp_path):
    """The second day: an earlier local Ray wrote ~/.ray/auth_token here, the cluster runs without auth."""
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("1" * 64)
    for address, _ in stock_cluster(tmp_path_factory, "disabled"):
        out = tmp_path / "sweep"
        r = geodesic(sweep_args(out, address, seeds="0"), driver_env(tmp_path))
        assert r.returncode == 0, r.stderr[-3000:]
        assert list(pd.read_csv(out / "results.csv")["status"]) == ["done"]


def test_nothing_listening_fails_at_once_with_one_line(tmp_path):
    t0 = time.monotonic()
    r = geodesic(sweep_args(tmp_path / "sweep", f"127.0.0.1:{free_port()}"), driver_env(tmp_path), timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no Ray cluster answers" in r.stderr, r.stderr


def test_the_token_is_sent_when_configured_and_the_mode_is_unset(tmp_path, monkeypatch):
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert backend.configured_token() is None and backend.send_token_if_configured() is None
    assert "RAY_AUTH_MODE" not in os.environ
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 32)  # what any local Ray leaves behind
    assert backend.send_token_if_configured() == str(tmp_path / ".ray" / "auth_token")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice is kept
    assert backend.send_token_if_configured() is None and os.environ["RAY_AUTH_MODE"] == "disabled"
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert backend.configured_token() is None


def test_a_bad_address_is_one_line():
    with pytest.raises(backend.ClusterError, match="HOST:PORT"):
        backend.split_address("nowhere")
