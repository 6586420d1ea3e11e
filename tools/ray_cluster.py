"""Run a small multi-node Ray cluster on ONE Linux machine, loopback only.

Every listening socket of the cluster (GCS, raylets, object managers,
agents, task workers, the driver) is bound to 127.0.0.1; nothing listens on
an external interface.

Recipe (Ray 2.60, measured on Linux; the same as the commands this module runs). Token authentication is
on, as a cluster's owner runs it: one token in a file only the owner reads, given to every node.

  token (once):  a random hex string in a file of mode 0600, e.g. /tmp/ray_lb6390/auth_token
                 (`ray get-auth-token --generate` writes one to ~/.ray/auth_token instead)

  head (node IP 127.0.0.1 -> every C++/Python server binds loopback):
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/ray_lb6390/auth_token \
      ray start --head --port=6390 --node-ip-address=127.0.0.1 --num-cpus=1 \
        --num-gpus=0 --include-dashboard=false --disable-usage-stats \
        --temp-dir=/tmp/ray_lb6390

  each extra node:
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 GRPC_DNS_RESOLVER=native \
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/ray_lb6390/auth_token \
      ray start --address=127.1:6390 --num-cpus=1 --num-gpus=0 --disable-usage-stats

  driver:
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_TOKEN_PATH=/tmp/ray_lb6390/auth_token (before `import ray`);
    `geodesic sweep … --address 127.0.0.1:6390` sends the token it finds there (geodesic.infra.backend.connect);
    a plain `ray.init(address="127.0.0.1:6390")` also needs RAY_AUTH_MODE=token.

Why the odd worker address:
  * RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is what makes Ray use 127.0.0.1 as the
    node IP (services.get_node_ip_address), and a node whose IP is 127.0.0.1
    binds its servers to loopback.  But with it =0, `ray start --address=...`
    (a non-head node) aborts: "Multi-node Ray clusters are not supported on
    Windows and OSX" (scripts.py).
  * With it =1 (the Linux default), `ray start` rewrites any "localhost" /
    "127.0.0.1" / "::1" in --address and --node-ip-address to the machine's
    external IP (services.resolve_ip_for_localhost), so the worker dials
    <external-ip>:6390 where nothing listens and hangs forever, or the node
    registers with the external IP and binds *:port.
  * "127.1" is the same loopback address (inet_aton) but is not on Ray's
    localhost list, so it is not rewritten; the node IP is then derived "from
    the perspective of" 127.1:6390, i.e. 127.0.0.1, so the extra node also
    binds loopback only.  gRPC's default c-ares resolver does not accept
    "127.1", hence GRPC_DNS_RESOLVER=native (getaddrinfo) for those nodes.
  * The nodes get RAY_AUTH_MODE=token and the token file explicitly.  Left
    unset, `ray start --head` turns token auth on by itself when a token
    exists (~/.ray/auth_token is written by any earlier local Ray); then
    nodes or drivers without the token get InvalidAuthToken.
    auth="disabled" (RAY_AUTH_MODE=disabled on every process) is kept for
    comparisons.

Stopping never uses `ray stop` (that kills every Ray process on the machine).
Each `ray start` runs in its own new session, so all the daemons it leaves
behind keep its process-group id; stop_cluster() signals exactly those
process groups plus all their descendants (task workers call setsid and get
their own group): extra nodes first, then the head without gcs_server, then
gcs_server (about 1 s; all at once it takes 10+ s), SIGTERM first and
SIGKILL after a grace period.

Usage:  .venv/bin/python tools/ray_cluster.py [--nodes 2] [--port 6390]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ENABLE_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE_VAR = "RAY_AUTH_MODE"
AUTH_TOKEN_VAR = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_VAR = "RAY_AUTH_TOKEN_PATH"
WORKER_HOST = "127.1"  # loopback, spelled so Ray does not rewrite it

# auth settings of the last start_cluster() in this process: the nodes' (driver_env gives a driver the token only)
_AUTH_ENV: dict[str, str] = {AUTH_MODE_VAR: "disabled"}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _ray_exe() -> str:
    cand = Path(sys.executable).with_name("ray")
    if cand.exists():
        return str(cand)
    found = shutil.which("ray")
    if not found:
        raise FileNotFoundError("`ray` CLI not found next to python or on PATH")
    return found


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _proc_table() -> dict[int, tuple[int, int, str, int]]:
    """pid -> (ppid, pgid, state, starttime) for every process in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = data[data.rfind(")") + 2 :].split()
        try:
            table[int(entry)] = (int(rest[1]), int(rest[2]), rest[0], int(rest[19]))
        except (IndexError, ValueError):
            continue
    return table


def _cluster_procs(pgids: list[int], known: dict[int, int]) -> dict[int, int]:
    """Live processes of the cluster: members of `pgids`, their descendants,
    and already known (pid, starttime) pairs.  Returns pid -> starttime."""
    table = _proc_table()
    alive = {p: v for p, v in table.items() if v[2] not in ("Z", "X")}
    found = {p: v[3] for p, v in alive.items() if v[1] in set(pgids)}
    for p, st in known.items():  # reparented survivors (same pid AND start time)
        if p in alive and alive[p][3] == st:
            found[p] = st
    changed = True
    while changed:  # add descendants
        changed = False
        for p, v in alive.items():
            if p not in found and v[0] in found:
                found[p] = v[3]
                changed = True
    found.pop(os.getpid(), None)
    return found


def _signal(pids: dict[int, int], sig: int) -> None:
    table = _proc_table()
    for p, st in pids.items():
        v = table.get(p)
        if v is None or v[3] != st:  # gone or pid reused: not ours
            continue
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _wait_alive_nodes(address: str, n: int, env: dict, timeout: float) -> int:
    """Poll the GCS (from a child process, so this process need not import
    ray) until `n` nodes are alive; returns the count seen last."""
    code = (
        "import sys\n"
        "from ray._raylet import GcsClient\n"
        f"c = GcsClient(address={address!r})\n"
        "info = c.get_all_node_info(timeout=5)\n"
        "print(sum(1 for v in info.values() if v.state == 0))\n"
    )
    deadline = time.monotonic() + timeout
    seen = 0
    while True:
        try:
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True,
                text=True, timeout=max(5.0, min(30.0, deadline - time.monotonic())),
            )
            if out.returncode == 0 and out.stdout.strip():
                seen = int(out.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError):
            pass
        if seen >= n or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def _base_env(auth: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", AUTH_MODE_VAR, AUTH_TOKEN_VAR, AUTH_TOKEN_PATH_VAR, "GRPC_DNS_RESOLVER"):
        env.pop(k, None)
    env.update(_AUTH_ENV)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------
def start_cluster(
    nodes: int = 2,
    cpus_per_node: int = 1,
    port: int = 6390,
    *,
    auth: str = "token",
    object_store_mb: int | None = None,
    timeout: float = 120.0,
    check_loopback: bool = True,
) -> tuple[str, list[int]]:
    """Start a head and nodes-1 extra nodes with `ray start`, loopback only.

    Returns (address, pgids): address is "127.0.0.1:<port>" for
    ray.init(address=...); pgids are the process-group ids (= pids of the
    `ray start` commands) that stop_cluster() needs.  Also sets this
    process's env for a driver (see driver_env()).  auth: "token" (a fresh
    random token in <temp dir>/auth_token, mode 0600, named to every node by
    RAY_AUTH_TOKEN_PATH) or "disabled".
    """
    if nodes < 1:
        raise ValueError("nodes must be >= 1")
    if auth not in ("disabled", "token"):
        raise ValueError("auth must be 'disabled' or 'token'")
    if _port_in_use(port):
        raise RuntimeError(f"127.0.0.1:{port} is already in use")

    ray = _ray_exe()
    address = f"127.0.0.1:{port}"
    temp_dir = f"/tmp/ray_lb{port}"  # short: unix socket paths are limited
    log_dir = Path(temp_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    _AUTH_ENV.clear()
    _AUTH_ENV[AUTH_MODE_VAR] = auth
    if auth == "token":
        _AUTH_ENV[AUTH_TOKEN_PATH_VAR] = write_token(log_dir / "auth_token")
    common = [f"--num-cpus={cpus_per_node}", "--num-gpus=0", "--disable-usage-stats"]
    if object_store_mb:
        common.append(f"--object-store-memory={object_store_mb * 1024 * 1024}")

    head_env = _base_env(auth)
    head_env[ENABLE_VAR] = "0"
    head_cmd = [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                "--include-dashboard=false", f"--temp-dir={temp_dir}", *common]
    worker_env = _base_env(auth)
    worker_env[ENABLE_VAR] = "1"
    worker_env["GRPC_DNS_RESOLVER"] = "native"
    worker_cmd = [ray, "start", f"--address={WORKER_HOST}:{port}", *common]

    pgids: list[int] = []
    try:
        for i in range(nodes):
            cmd, env = (head_cmd, head_env) if i == 0 else (worker_cmd, worker_env)
            log = log_dir / f"ray_start_{i}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            pgids.append(proc.pid)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"`{' '.join(cmd)}` failed (rc={rc}); log {log}:\n{tail}")
        drv_env = _base_env(auth)
        drv_env[ENABLE_VAR] = "0"
        seen = _wait_alive_nodes(address, nodes, drv_env, timeout=60)
        if seen < nodes:
            raise RuntimeError(f"only {seen}/{nodes} nodes alive after start")
        if check_loopback:
            bad = listeners_outside_loopback(pids=_cluster_procs(pgids, {}))
            if bad:
                raise RuntimeError(f"Ray listens outside loopback: {bad}")
    except BaseException:
        stop_cluster(pgids)
        raise
    driver_env(check=False)
    return address, pgids


def write_token(path: Path) -> str:
    """A fresh random token in `path`, readable by its owner only; the path."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return str(path)


def _terminate(select, grace: float, deadline: float) -> None:
    """SIGTERM the processes select() returns, SIGKILL survivors after
    `grace` s, until select() is empty."""
    t0 = time.monotonic()
    term_sent = kill_sent = False
    while True:
        procs = select()
        if not procs:
            return
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"could not stop ray processes {sorted(procs)}")
        if not term_sent:
            _signal(procs, signal.SIGTERM)
            term_sent = True
        elif now - t0 > grace and (not kill_sent or now - t0 > grace + 2):
            _signal(procs, signal.SIGKILL)
            kill_sent = True
        time.sleep(0.05)


def stop_cluster(pgids: list[int], grace: float = 10.0, timeout: float = 60.0) -> None:
    """Stop exactly the processes started by start_cluster(): every process in
    the process groups `pgids` ([head, workers...], as returned) and all
    their descendants; never other Ray instances.

    Order matters for speed (all at once: ~10 s, raylets and gcs_server then
    sit on SIGTERM): first the extra nodes, then the head's processes except
    gcs_server, then gcs_server; ~1 s in all.  SIGKILL after `grace` s."""
    pgids = [p for p in pgids if p and p > 1]
    if not pgids:
        return
    deadline = time.monotonic() + timeout
    known: dict[int, int] = {}

    def select(groups, keep=lambda pid: True):
        procs = _cluster_procs(groups, known)
        known.update(procs)
        return {p: s for p, s in procs.items() if keep(p)}

    if len(pgids) > 1:
        _terminate(lambda: select(pgids[1:]), grace, deadline)
    _terminate(lambda: select(pgids[:1], lambda p: _comm(p) != "gcs_server"), grace, deadline)
    _terminate(lambda: select(pgids), grace, deadline)


def driver_env(check: bool = True) -> None:
    """Set this process's env as a driver's on this machine: loopback node IP and, for a cluster with token
    auth, the token file (RAY_AUTH_TOKEN_PATH) but not the mode, as a user of the cluster has it: geodesic's
    --address sends the token it finds; a plain ray.init needs RAY_AUTH_MODE=token as well (main() sets it).
    For a cluster without auth, RAY_AUTH_MODE=disabled.  Must run before `import ray` (check=True raises if
    ray was already imported with the Linux default)."""
    os.environ[ENABLE_VAR] = "0"
    for k in (AUTH_MODE_VAR, AUTH_TOKEN_VAR, AUTH_TOKEN_PATH_VAR, "RAY_ADDRESS"):
        os.environ.pop(k, None)
    if _AUTH_ENV.get(AUTH_MODE_VAR) == "token":
        os.environ[AUTH_TOKEN_PATH_VAR] = _AUTH_ENV[AUTH_TOKEN_PATH_VAR]
    else:
        os.environ.update(_AUTH_ENV)
    if check and "ray" in sys.modules:
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise RuntimeError(
                f"ray was imported before {ENABLE_VAR}=0 was set; "
                "ray.init(address='127.0.0.1:...') would dial the external IP"
            )


def _listen_sockets() -> list[tuple[str, int, int]]:
    """(ip, port, inode) of every TCP LISTEN socket, from /proc/net/tcp{,6}."""
    out = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":
                continue
            hexip, hexport = f[1].split(":")
            raw = bytes.fromhex(hexip)
            if v6:  # four 32-bit words, each in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                ip = ipaddress.IPv6Address(raw)
                ip = ip.ipv4_mapped or ip
            else:
                ip = ipaddress.IPv4Address(raw[::-1])
            out.append((str(ip), int(hexport, 16), int(f[9])))
    return out


def _socket_owners() -> dict[int, list[int]]:
    owners: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owners.setdefault(int(link[8:-1]), []).append(int(entry))
    return owners


def _is_ray_process(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm.startswith("ray::") or comm in ("gcs_server", "raylet"):
            return True
        if "/ray/core/src/ray/" in os.readlink(f"/proc/{pid}/exe"):
            return True
        with open(f"/proc/{pid}/maps") as f:  # python process running Ray
            return any("_raylet.so" in line for line in f)
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def ray_listeners(pids=None) -> list[tuple[str, int, int, str]]:
    """(ip, port, pid, comm) of LISTEN sockets owned by Ray processes
    (optionally only those in `pids`)."""
    owners = _socket_owners()
    res = []
    for ip, port, inode in _listen_sockets():
        for pid in owners.get(inode, []):
            if pids is not None and pid not in pids:
                continue
            if _is_ray_process(pid):
                res.append((ip, port, pid, _comm(pid)))
                break
    return sorted(set(res))


def listeners_outside_loopback(pids=None) -> list[str]:
    """LISTEN sockets of Ray processes not bound to loopback (127.0.0.0/8,
    ::1, ::ffff:127.x), as "ip:port pid=N (comm)"."""
    return [
        f"{'[' + ip + ']' if ':' in ip else ip}:{port} pid={pid} ({comm})"
        for ip, port, pid, comm in ray_listeners(pids)
        if not ipaddress.ip_address(ip).is_loopback
    ]


# --------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--port", type=int, default=6390)
    ap.add_argument("--auth", choices=("token", "disabled"), default="token")
    ap.add_argument("--tasks", type=int, default=8)
    args = ap.parse_args()

    t0 = time.monotonic()
    address, pgids = start_cluster(args.nodes, args.cpus_per_node, args.port, auth=args.auth)
    print(f"cluster up at {address} in {time.monotonic() - t0:.1f}s (process groups {pgids})",
          flush=True)
    bad: list[str] = []
    node_ids: set[str] = set()
    try:
        driver_env()
        if args.auth == "token":
            os.environ[AUTH_MODE_VAR] = "token"  # a plain Ray driver sends its token only in token mode
        import ray

        ray.init(address=address, log_to_driver=False)

        @ray.remote(num_cpus=1)
        def where(i: int) -> str:
            time.sleep(1.0)
            return ray.get_runtime_context().get_node_id()

        alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        print(f"alive nodes: {len(alive)}", flush=True)
        t1 = time.monotonic()
        refs = [where.remote(i) for i in range(args.tasks)]
        time.sleep(0.8)  # task workers (and the driver) are listening now
        running = _cluster_procs(pgids, {})
        running[os.getpid()] = 0
        for ip, port, pid, comm in ray_listeners(set(running)):
            print(f"  listen {ip}:{port} pid={pid} {comm}")
        bad = listeners_outside_loopback(set(running))
        ids = ray.get(refs)
        node_ids = set(ids)
        print(f"{len(ids)} tasks in {time.monotonic() - t1:.1f}s on {len(node_ids)} nodes:")
        for nid in sorted(node_ids):
            print(f"  {nid}  x{ids.count(nid)}")
        bad += listeners_outside_loopback(set(_cluster_procs(pgids, {})) | {os.getpid()})
        ray.shutdown()
    finally:
        t2 = time.monotonic()
        stop_cluster(pgids)
        print(f"cluster stopped in {time.monotonic() - t2:.1f}s")
    bad = sorted(set(bad))
    print("listeners outside loopback:", bad if bad else "none")
    left = _cluster_procs(pgids, {})
    if left:
        print("LEFTOVER processes:", sorted(left))
    ok = not bad and not left and len(node_ids) == min(args.nodes, args.tasks)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
