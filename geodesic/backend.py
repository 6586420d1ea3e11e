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
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Iterable, Iterator

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
OBJECT_STORE_BYTES = 256 * 2**20  # runs exchange file paths and small rows, never weights
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


class RayPool:
    """Ray tasks with one CPU each: on a local Ray of `workers` CPUs (default: this machine's cores) started on
    127.0.0.1 for this pool (address "local": never a cluster that `ray start` left running, which a bare
    ray.init() would join), or on the cluster at `address`. Pools open at once in one process share the local
    Ray the first one started (the first one's `workers` holds), and the last one out stops it."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
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
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
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


def open_backend(backend: str = "ray", address: str | None = None, workers: int | None = None) -> Loop | RayPool:
    """"ray" (the default: local Ray, or the cluster at `address`) or "loop" (this process, in order)."""
    if backend == "loop":
        if address:
            raise ValueError("an address needs the ray backend")
        return Loop()
    if backend == "ray":
        return RayPool(address, workers)
    raise ValueError(f"unknown backend {backend!r}; choose 'ray' or 'loop'")
