"""Where many runs go: in this process one after another (`Loop`), or as Ray tasks (`RayPool`) on a local Ray
started for the work, or on an existing cluster (`address="HOST:PORT"`).

    with open_backend(address=None, workers=2) as pool:
        for i, result in pool.map(fn, [args0, args1, ...]):   # as they finish; a failure comes back as its exception
            ...

A local Ray listens on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray use the loopback address
for its node, set before Ray is imported) and sends no usage statistics. Leaving the `with` block cancels what
has not finished (each task gets a KeyboardInterrupt, so its run folder is closed as interrupted) and stops
the local Ray by shutting down exactly the processes `ray.init` started. Tasks write their run folders
themselves: on a multi-node cluster, give an output folder every node sees (shared storage), as for Ray Tune.

Joining a cluster (`connect`): nothing listening at the address fails at once (a plain TCP connection, at most
CONNECT_S), before Ray would retry for minutes. A cluster started with token authentication (Ray 2.60 turns
it on by itself when a token exists on the head: `~/.ray/auth_token`, written by any earlier local Ray) only
accepts a driver that runs with RAY_AUTH_MODE=token and its token; Ray sets that mode for a local Ray but not
for an explicit address. So when RAY_AUTH_MODE is not set and a token is configured here, as Ray looks for one
(RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token), the driver sends it; a cluster without
authentication ignores it. A refusal ends in one ClusterError line saying what to set.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
OBJECT_STORE_BYTES = 256 * 2**20  # runs exchange file paths and small rows, never weights
CONNECT_S = 5.0  # how long a cluster's address gets to accept a TCP connection
GCS_ATTEMPTS = "2"  # Ray's attempts at its GCS once the address answers (each up to ~35 s; 20 by default)
AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
CANCEL_GRACE_S = 20.0  # how long cancelled tasks get to close their run folders
POLL_S = 0.5  # how often map() looks at its `stop`
_LOCAL_LOCK = threading.Lock()
_LOCAL = {"users": 0, "owned": False}  # the local Ray of this process: pools using it, whether a pool started it

Result = tuple[int, Any]  # (index of the arguments, return value or the exception raised)


class Loop:
    """Every call in this process, in order."""

    workers = 1
    nodes = ["local"]

    def __enter__(self) -> "Loop":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, fn: Callable, args: Iterable[tuple], stop=None) -> Iterator[Result]:
        for i, a in enumerate(args):
            if stop is not None and stop.is_set():
                return
            try:
                yield i, fn(*a)
            except Exception as e:  # noqa: BLE001 — one failing call must not stop the others
                yield i, e


def node() -> str:
    """The id of the Ray node this runs on, or "local" outside Ray (without importing Ray for that)."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else "local"


def where() -> tuple[int, str]:
    """(process id, node) of the caller: where a task ran."""
    return os.getpid(), node()


def _is_loopback(address: str | None) -> bool:
    host = (address or "").rsplit(":", 1)[0].strip("[]")
    return address is None or host in ("127.0.0.1", "localhost", "::1")


def import_ray(address: str | None = None):
    """Import Ray, bound to loopback when it runs here; ImportError with the fix when it is not installed.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported (its Python side) and when it starts its
    servers (their own processes): both are set, the first also when Ray was imported before."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if _is_loopback(address):
        os.environ[LOOPBACK_ENV] = "0"
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise ImportError("Ray is not installed: pip install 'ray>=2.40'") from None
    if _is_loopback(address):
        ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


class ClusterError(RuntimeError):
    """A Ray cluster that cannot be joined: nothing listens at its address, or it refuses this driver."""


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" ("[::1]:6379" for IPv6); ClusterError when it is not one."""
    host, sep, port = str(address).strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--address {address!r}: give HOST:PORT of the cluster's head, e.g. 10.0.0.5:6379")
    return host, int(port)


def check_reachable(address: str, timeout: float = CONNECT_S) -> None:
    """ClusterError unless something accepts a TCP connection at `address` within `timeout` seconds."""
    host, port = split_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ClusterError(f"no Ray cluster answers at {address} ({why}); start its head with "
                           f"`ray start --head --port {port}` or give the address it printed") from None


def configured_token() -> str | None:
    """Where this process has a Ray token, in Ray's order: the variable RAY_AUTH_TOKEN, the file named by
    RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token; None when there is none."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV
    path = os.environ.get(TOKEN_PATH_ENV)
    if path:
        return f"{TOKEN_PATH_ENV} ({path})" if Path(path).expanduser().is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def send_token_if_configured() -> str | None:
    """Set RAY_AUTH_MODE=token for this process when it is unset and a token is configured; returns where the
    token is (None: none, or the mode was set by the user). Ray reads the mode from its config, which is
    refreshed here when Ray is already loaded."""
    where = configured_token()
    if os.environ.get(AUTH_MODE) is not None or where is None:
        return None
    os.environ[AUTH_MODE] = "token"
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None and hasattr(raylet, "Config"):
        raylet.Config.initialize("")
    return where


@contextmanager
def _env(name: str, value: str):
    """`name` set to `value` inside the block unless the user set it; restored after."""
    had = name in os.environ
    if not had:
        os.environ[name] = value
    try:
        yield
    finally:
        if not had:
            os.environ.pop(name, None)


NATIVE_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] ")  # a line of Ray's C++ log


@contextmanager
def _native_log_held():
    """Hold what is written to file descriptor 2 (stderr) inside the block, where Ray's C++ core logs a failed
    connection attempt by attempt; write it out after, except, when the block set held["failed"], Ray's own log
    lines (the error that follows says what happened, in one line)."""
    held: dict = {"failed": False}
    try:
        sys.stderr.flush()
        saved, spool = os.dup(2), tempfile.TemporaryFile()
    except (OSError, ValueError):  # no real stderr (a test runner's capture): nothing to hold
        yield held
        return
    os.dup2(spool.fileno(), 2)
    try:
        yield held
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        spool.seek(0)
        lines = spool.read().decode(errors="replace").splitlines(keepends=True)
        spool.close()
        keep = [x for x in lines if not (held["failed"] and NATIVE_LOG.match(x))]
        if keep:
            sys.stderr.write("".join(keep))
            sys.stderr.flush()


def refusal(address: str, error: BaseException) -> str:
    """One line for a failed ray.init(address=…): a refused token says which to set, anything else its cause."""
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain)
    if any(type(x).__name__ == "AuthenticationError" for x in chain) or "InvalidAuthToken" in text:
        where = configured_token()
        if os.environ.get(AUTH_MODE, "").lower() != "token" or where is None:
            return (f"the Ray cluster at {address} requires its token: copy the head's ~/.ray/auth_token to this "
                    f"machine's ~/.ray/auth_token, or set {TOKEN_PATH_ENV}=FILE or {TOKEN_ENV}=TOKEN"
                    + (f" (and unset {AUTH_MODE}={os.environ[AUTH_MODE]})" if os.environ.get(AUTH_MODE) else ""))
        return (f"the Ray cluster at {address} refused the token from {where}: give the head's token (its "
                f"~/.ray/auth_token) in {TOKEN_PATH_ENV}=FILE or {TOKEN_ENV}=TOKEN")
    first = (str(chain[-1]).strip().splitlines() or [type(chain[-1]).__name__])[0]
    return f"cannot join the Ray cluster at {address}: {first[:300]}"


def connect(ray, address: str) -> None:
    """ray.init(address=…) that ends in bounded time: ClusterError when nothing answers there or the cluster
    refuses this driver (its token sent when one is configured)."""
    check_reachable(address)
    send_token_if_configured()
    try:
        with _env("RAY_gcs_server_port_wait_time_s", GCS_ATTEMPTS), _native_log_held() as held:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except BaseException:
                held["failed"] = True
                raise
    except Exception as e:  # noqa: BLE001 — Ray raises ConnectionError, AuthenticationError, RuntimeError, …
        raise ClusterError(refusal(address, e)) from None


class RayPool:
    """Ray tasks with one CPU each: on a local Ray of `workers` CPUs (default: this machine's cores) started on
    127.0.0.1 for this pool (address "local": never a cluster that `ray start` left running, which a bare
    ray.init() would join), or on the cluster at `address`. Pools open at once in one process share the local
    Ray the first one started (the first one's `workers` holds), and the last one out stops it."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        check_backend("ray", address, workers)
        self.address, self.workers_asked = address, workers
        self.ray = import_ray(address)
        self.started = False
        self.pending: list = []

    def __enter__(self) -> "RayPool":
        ray = self.ray
        if self.address is None:
            with _LOCAL_LOCK:  # pools open at once in one process (two app jobs) share one local Ray
                if _LOCAL["users"] == 0:
                    _LOCAL["owned"] = not ray.is_initialized()  # else: the caller's own ray.init, left running
                    if _LOCAL["owned"]:
                        ray.init(address="local", num_cpus=self.workers_asked or os.cpu_count() or 1,
                                 include_dashboard=False, _node_ip_address="127.0.0.1",
                                 object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, configure_logging=False)
                _LOCAL["users"] += 1
            self.started = True
        elif not ray.is_initialized():
            connect(ray, self.address)
        return self

    @property
    def workers(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    @property
    def nodes(self) -> list[str]:
        return [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]

    def map(self, fn: Callable, args: Iterable[tuple], stop=None) -> Iterator[Result]:
        """Submit every call, then yield results as they finish; `stop` (anything with is_set()) ends the
        iteration within POLL_S, and leaving the `with` block cancels the rest."""
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = {remote.remote(*a): i for i, a in enumerate(args)}
        self.pending = list(refs)
        while self.pending:
            if stop is not None and stop.is_set():
                return
            done, self.pending = ray.wait(self.pending, num_returns=1, timeout=POLL_S)
            if not done:
                continue
            ref = done[0]
            try:
                yield refs[ref], ray.get(ref)
            except ray.exceptions.RayError as e:  # the task raised, or its worker died
                yield refs[ref], getattr(e, "cause", None) or e

    def __exit__(self, *exc) -> None:
        ray = self.ray
        try:
            if self.pending:
                for ref in self.pending:
                    ray.cancel(ref)
                ray.wait(self.pending, num_returns=len(self.pending), timeout=CANCEL_GRACE_S)
        finally:
            self.pending = []
            if self.started:
                self.started = False
                with _LOCAL_LOCK:  # the last pool out stops the local Ray it started
                    _LOCAL["users"] -= 1
                    if _LOCAL["users"] == 0 and _LOCAL["owned"]:
                        ray.shutdown()


def check_backend(backend: str = "ray", address: str | None = None, workers: int | None = None) -> None:
    """ValueError for a backend that cannot be opened as asked, ClusterError for an address that is not HOST:PORT
    (both checked before anything is written)."""
    if backend not in ("ray", "loop"):
        raise ValueError(f"unknown backend {backend!r}; choose 'ray' or 'loop'")
    if backend == "loop" and address:
        raise ValueError("--address needs the ray backend (not --backend loop)")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if address:
        split_address(address)


def open_backend(backend: str = "ray", address: str | None = None, workers: int | None = None) -> Loop | RayPool:
    """"ray" (the default: local Ray, or the cluster at `address`) or "loop" (this process, in order)."""
    check_backend(backend, address, workers)
    return Loop() if backend == "loop" else RayPool(address, workers)
