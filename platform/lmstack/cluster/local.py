"""`lmstack cluster up|down|status`: a head and N worker Ray nodes on this one machine.

Each node is its own `ray start --block` process (own session and process group, own ports, own
logical resources), so the cluster behaves like a multi-node one: nodes can be removed one at a time,
and Ray Train places workers across them. Everything started is recorded in a state file
(`<state dir>/cluster.json`: PIDs, process groups, ports) and `down` stops exactly those processes,
SIGTERM then SIGKILL. Nothing here uses Ray's stop-everything command, which would end every Ray process on the
machine, other people's clusters included.

The cluster has its own token (token authentication, `<state dir>/auth_token`); `env()` gives the
environment a client needs (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from typing import Any

STATE_FILE = "cluster.json"
# A loaded small machine starts a node's Python agents slowly; Ray's defaults then abort the raylet.
_SLOW_MACHINE_ENV = {
    "RAY_agent_register_timeout_ms": "300000",
    "RAY_worker_register_timeout_seconds": "120",
}
DEFAULT_STATE_DIR = os.path.join("runs", ".cluster")


def state_dir_or_default(state_dir: str | None) -> str:
    return state_dir or os.environ.get("LMSTACK_CLUSTER_DIR") or DEFAULT_STATE_DIR


class NodeExited(RuntimeError):
    pass


@dataclass
class Autoscaling:
    """Worker nodes the autoscaler adds on demand and removes when idle (Ray's fake multi-node
    provider: each added node is a Ray node on this machine, started by the head's autoscaler)."""

    worker_cpus: float = 1
    min_workers: int = 0
    max_workers: int = 2
    idle_timeout_s: float = 10
    object_store_mb: int = 150

    def config(self, head_cpus: float, gcs_address: str) -> dict[str, Any]:
        """A `ray up`-style cluster config for the fake provider (the one AutoscalingCluster would
        write; its example.yaml template is not shipped in the wheel)."""
        return {
            "cluster_name": "lmstack-local",
            "max_workers": self.max_workers,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": gcs_address},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
                "ray.worker.cpu": {
                    "resources": {"CPU": self.worker_cpus, "object_store_memory": self.object_store_mb * 2**20},
                    "node_config": {}, "min_workers": self.min_workers, "max_workers": self.max_workers,
                },
            },
            "head_node_type": "ray.head.default",
            "idle_timeout_minutes": self.idle_timeout_s / 60,
            "upscaling_speed": 1.0,
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }


@dataclass
class Node:
    role: str  # head | worker
    pid: int  # the `ray start --block` process; its session/process group id is the same number
    create_time: float  # guards against a recycled PID
    num_cpus: float
    log: str
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalCluster:
    state_dir: str
    temp_dir: str
    gcs_address: str
    dashboard_url: str
    nodes: list[Node]

    # -- queries -------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """For `ray.init(address=...)` (RAY_ADDRESS inside jobs)."""
        return self.gcs_address

    def env(self) -> dict[str, str]:
        """Environment that lets a process talk to this cluster (ray.init, the Job Submission API)."""
        return cluster_env(self.state_dir)

    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if _alive(n)]

    def raylet_count(self) -> int:
        """Ray nodes running now, counted by their raylet processes: the recorded nodes plus any the
        autoscaler added (those descend from the head). Needs no connection to the cluster."""
        count = 0
        for node in self.nodes:
            for p in _node_processes(node):
                try:
                    count += p.name() == "raylet" and p.status() != "zombie"
                except Exception:  # noqa: BLE001 - psutil.Error: it exited while we looked
                    continue
        return count

    def save(self) -> None:
        path = os.path.join(self.state_dir, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, state_dir: str | None = None) -> LocalCluster:
        path = os.path.join(state_dir_or_default(state_dir), STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no local cluster (run `lmstack cluster up` first)")
        with open(path) as f:
            raw = json.load(f)
        raw["nodes"] = [Node(**n) for n in raw["nodes"]]
        return cls(**raw)

    # -- changes ---------------------------------------------------------------------------------------
    def add_worker(self, num_cpus: float = 1, resources: dict[str, float] | None = None,
                   object_store_mb: int = 150, timeout: float = 90) -> Node:
        return self._add_node("worker", num_cpus, resources or {}, object_store_mb,
                              ["--address", self.gcs_address], timeout)

    def _add_node(self, role: str, num_cpus: float, resources: dict[str, float], object_store_mb: int,
                  extra: list[str], timeout: float, env: dict[str, str] | None = None) -> Node:
        # On a loaded machine a raylet can give up waiting for its agents (about 15 s, not
        # configurable) and exit: the node is then started again.
        attempts = 5
        for attempt in range(attempts):
            if attempt:
                time.sleep(5 * attempt)  # let a load spike pass
            index = len(self.nodes) + 100 * attempt
            node = _start_node(self.state_dir, self.temp_dir, role, num_cpus, resources, object_store_mb,
                               extra, index, env)
            self.nodes.append(node)
            self.save()
            try:
                _wait_for_nodes(self, timeout)
                return node
            except NodeExited:
                _stop(node, signal.SIGKILL, 5)
                self.nodes.remove(node)
                self.save()
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def remove_node(self, node: Node, sig: int = signal.SIGKILL, grace: float = 10) -> None:
        """Stop one node's processes (the way a machine dies with SIGKILL, a drain with SIGTERM)."""
        _stop(node, sig, grace)
        self.nodes = [n for n in self.nodes if n.pid != node.pid]
        self.save()

    def down(self, grace: float = 10) -> None:
        for node in [*self.workers(), *[n for n in self.nodes if n.role == "head"]]:
            _stop(node, signal.SIGTERM, grace)
        self.nodes = []
        self.save()


def cluster_env(state_dir: str) -> dict[str, str]:
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": os.path.abspath(os.path.join(state_dir, "auth_token")),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def auth_headers(state_dir: str) -> dict[str, str]:
    with open(os.path.join(state_dir, "auth_token")) as f:
        return {"Authorization": f"Bearer {f.read().strip()}"}


def up(workers: int = 2, state_dir: str | None = None, head_cpus: float = 1, worker_cpus: float = 1,
       object_store_mb: int = 150, timeout: float = 120, autoscaling: Autoscaling | None = None) -> LocalCluster:
    """Start a head and `workers` worker nodes; returns once every node has joined.

    With `autoscaling`, the head also runs Ray's autoscaler, which adds worker nodes while tasks or
    actors wait for resources and removes them after `idle_timeout_s` idle. Their processes descend
    from the head's, so `down` stops them with it.
    """
    state_dir = os.path.abspath(state_dir_or_default(state_dir))
    if os.path.exists(os.path.join(state_dir, STATE_FILE)):
        existing = LocalCluster.load(state_dir)
        if existing.alive():
            raise RuntimeError(f"a local cluster is already up in {state_dir} (`lmstack cluster down` first)")
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, "auth_token"), "w") as f:
        f.write(secrets.token_hex(32))
    os.chmod(os.path.join(state_dir, "auth_token"), 0o600)
    # Unix socket paths must stay short: Ray's session files live under a short /tmp directory.
    temp_dir = tempfile.mkdtemp(prefix="lmsc-", dir="/tmp")
    gcs_port, dash_port, client_port = _free_ports(3)
    cluster = LocalCluster(state_dir, temp_dir, f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}", [])
    head_args, head_env = [], {}
    if autoscaling is not None:
        config_path = os.path.join(state_dir, "autoscaling.json")
        with open(config_path, "w") as f:
            json.dump(autoscaling.config(head_cpus, cluster.gcs_address), f, indent=2)
        head_args = ["--autoscaling-config", config_path]
        head_env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    try:
        cluster._add_node("head", head_cpus, {}, object_store_mb, [
            "--head", "--port", str(gcs_port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
            "--ray-client-server-port", str(client_port), "--include-dashboard", "true", *head_args,
        ], timeout, head_env)
        for _ in range(workers):
            cluster.add_worker(worker_cpus, object_store_mb=object_store_mb, timeout=timeout)
        _wait_for_dashboard(cluster, timeout)
    except BaseException:
        cluster.down()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return cluster


def down(state_dir: str | None = None, grace: float = 5) -> LocalCluster:
    cluster = LocalCluster.load(state_dir)
    cluster.down(grace)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return cluster


def status(state_dir: str | None = None) -> dict[str, Any]:
    cluster = LocalCluster.load(state_dir)
    return {
        "address": cluster.gcs_address,
        "dashboard": cluster.dashboard_url,
        "state_dir": cluster.state_dir,
        "nodes": [{"role": n.role, "pid": n.pid, "num_cpus": n.num_cpus, "alive": _alive(n), "log": n.log}
                  for n in cluster.nodes],
        "ray_nodes_running": cluster.raylet_count(),  # includes nodes the autoscaler added
        "env": cluster.env(),
    }


# -- processes ---------------------------------------------------------------------------------------------
def _ray_bin() -> str:
    candidate = os.path.join(os.path.dirname(sys.executable), "ray")
    return candidate if os.path.exists(candidate) else "ray"


def _start_node(state_dir: str, temp_dir: str, role: str, num_cpus: float, resources: dict[str, float],
                object_store_mb: int, extra: list[str], index: int, extra_env: dict[str, str] | None = None
                ) -> Node:
    ports = _free_ports(6)
    # A temp dir per node: nodes sharing one would share runtime_resources/, and a worker node
    # unpacking a job's working_dir would replace the directory a running driver is in.
    node_tmp = os.path.join(temp_dir, f"n{index}")
    cmd = [
        _ray_bin(), "start", "--block", "--temp-dir", node_tmp, "--num-cpus", str(num_cpus), "--num-gpus", "0",
        "--object-store-memory", str(object_store_mb * 2**20),
        "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
        "--dashboard-agent-listen-port", str(ports[2]), "--dashboard-agent-grpc-port", str(ports[3]),
        "--metrics-export-port", str(ports[4]), "--runtime-env-agent-port", str(ports[5]),
        "--disable-usage-stats", *extra,
    ]
    if resources:
        cmd += ["--resources", json.dumps(resources)]
    env = {**os.environ, **_SLOW_MACHINE_ENV, **cluster_env(state_dir), **(extra_env or {})}
    # Job entrypoints say `python`: on these nodes it is this interpreter (the project's venv).
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    log = os.path.join(state_dir, f"node-{index}-{role}.log")
    with open(log, "ab") as out:
        # A session of its own: the node's processes form one process group that `down` can signal.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    return Node(role, proc.pid, _create_time(proc.pid), num_cpus, log, resources)


def _create_time(pid: int) -> float:
    import psutil

    return psutil.Process(pid).create_time()


def _alive(node: Node) -> bool:
    import psutil

    try:
        p = psutil.Process(node.pid)
        return abs(p.create_time() - node.create_time) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _node_processes(node: Node) -> list[Any]:
    """The node's `ray start` process, its descendants and its process group: only what we started."""
    import psutil

    procs: dict[int, Any] = {}
    if _alive(node):
        root = psutil.Process(node.pid)
        procs[root.pid] = root
        for child in root.children(recursive=True):
            procs[child.pid] = child
    if not procs and psutil.pid_exists(node.pid):
        return []  # the PID now belongs to another process: its group is not ours
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == node.pid and p.pid not in procs:
                procs[p.pid] = p
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return list(procs.values())


def _stop(node: Node, sig: int, grace: float) -> None:
    import psutil

    procs = _node_processes(node)
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(procs, timeout=grace if sig != signal.SIGKILL else 5)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
    # Reap the `ray start` process if this process started it.
    try:
        os.waitpid(node.pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _raylet_died(node: Node) -> bool:
    """`ray start` can wait minutes for a raylet that already crashed: look at the raylet itself."""
    import psutil

    for p in _node_processes(node):
        try:
            if p.name() == "raylet" and p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _wait_for_nodes(cluster: LocalCluster, timeout: float) -> None:
    """Wait until every recorded node is alive in the GCS. The GCS is asked from a subprocess: this
    process may already be connected to another Ray cluster (one per process)."""
    want = len(cluster.nodes)
    code = (
        "import sys, time, ray\n"
        f"ray.init(address={cluster.gcs_address!r}, logging_level='ERROR', log_to_driver=False)\n"
        f"while sum(1 for n in ray.nodes() if n['Alive']) < {want}:\n"
        "    time.sleep(0.5)\n"
    )
    deadline = time.time() + timeout
    env = {**os.environ, **cluster.env()}
    env.pop("RAY_ADDRESS", None)
    probe = None
    try:
        while True:
            dead = [n for n in cluster.nodes if not _alive(n) or _raylet_died(n)]
            if dead:
                raise NodeExited(f"a Ray node exited while starting; see {dead[0].log}")
            if probe is None and _port_open(cluster.gcs_address):
                probe = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if probe is not None and probe.poll() is not None:
                if probe.returncode == 0:
                    return
                probe = None  # the GCS was not ready yet: ask again
            if time.time() > deadline:
                raise TimeoutError(f"not all {want} Ray nodes up after {timeout:.0f}s; logs in {cluster.state_dir}")
            time.sleep(1)
    finally:
        if probe is not None and probe.poll() is None:
            probe.kill()
            probe.wait()


def _wait_for_dashboard(cluster: LocalCluster, timeout: float) -> None:
    import urllib.request

    deadline = time.time() + timeout
    req = urllib.request.Request(cluster.dashboard_url + "/api/version", headers=auth_headers(cluster.state_dir))
    while True:
        try:
            with closing(urllib.request.urlopen(req, timeout=5)) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() > deadline:
            raise TimeoutError(f"the dashboard at {cluster.dashboard_url} did not answer in {timeout:.0f}s")
        time.sleep(1)


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0
