"""A local Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake nodes whose pods reach Running and Ready), from the binaries that
`hypersend_devenv.build` puts in the cache.

    python -m hypersend_devenv.cluster up|down|status     (from tools/, or with PYTHONPATH=tools)

`LocalCluster(state_dir).up()` is the same from Python. The state dir (default
`<repo>/.hypersend/cluster`, or `$HYPERSEND_STATE_DIR`) holds the PKI, kubeconfigs, etcd data, logs
and `state.json` (ports and pids). `up` reuses a healthy running cluster; `down` stops every process
group it started.

Safety: nothing here dials a pod, node or service-cluster IP. There is no kubelet and no kube-proxy;
kwok runs without its server (no logs/exec/port-forward), and the API server's `kubernetes` Service
endpoints are not reconciled (they would point at 127.0.0.1, which Endpoints forbid anyway).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hypersend_devenv import build, metrics_adapter, procs
from hypersend_devenv.pki import Pki, ensure_pki, issue_serving_cert

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"  # kwok hands out (fake) pod IPs from here
CLUSTER_NAME = "hypersend-local"
NODE_NAMES = ("kwok-node-1", "kwok-node-2")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Order matters: start order, and `down` stops in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ADAPTER = "metrics-adapter"  # started on demand by LocalCluster.start_custom_metrics


class ClusterError(RuntimeError):
    """The cluster could not be brought up (the message carries the failing component's log)."""


def default_state_dir() -> Path:
    override = os.environ.get("HYPERSEND_STATE_DIR")
    if override:
        return Path(override)
    return REPO_ROOT / ".hypersend" / "cluster"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*free_ports(5))


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# Pure builders: command lines, kubeconfigs, manifests.


@dataclass(frozen=True)
class Layout:
    """Where things live inside one state dir."""

    root: Path

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def component_kubeconfig(self, stem: str) -> Path:
        return self.root / "kubeconfigs" / f"{stem}.kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    def cert_dir(self, component: str) -> Path:
        return self.root / "serving" / component

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def etcd_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(binary),
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        # Throwaway test data: skipping fsync makes writes (and so every test) much faster.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    pki = layout.pki
    return [
        str(binary),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        f"--client-ca-file={pki.ca_cert}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_private_key}",
        # The aggregator authenticates to APIService backends with this front-proxy client and
        # passes the user in these headers; backends learn the CA from a kube-system ConfigMap.
        f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
        f"--proxy-client-key-file={pki.front_proxy_client_key}",
        f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        # No kubernetes-Service endpoints: they would name 127.0.0.1, which Endpoints reject.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def controller_manager_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    kubeconfig = layout.component_kubeconfig("controller-manager")
    pki = layout.pki
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={layout.cert_dir('kube-controller-manager')}",
        "--leader-elect=false",
        # Each controller acts as its own service account, bound by the built-in RBAC roles.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_private_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Tests watch the HPA react; the default 15s sync makes them slow.
        "--horizontal-pod-autoscaler-sync-period=5s",
        # PVCs (StatefulSet volumeClaimTemplates) get bound: the in-tree test provisioner makes
        # PVs for the `standard` StorageClass (empty dirs under /tmp/hostpath_pv on this host;
        # kwok pods never mount them).
        "--enable-hostpath-provisioner=true",
        "--profiling=false",
    ]


def scheduler_args(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    kubeconfig = layout.component_kubeconfig("scheduler")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={layout.cert_dir('kube-scheduler')}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_args(binary: Path, layout: Layout) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={layout.component_kubeconfig('kwok')}",
        f"--config={layout.kwok_config}",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        # No kwok server: nothing may reach (fake) pods through logs/exec/port-forward.
        "--server-address=",
        "--node-port=0",
    ]


def render_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> dict[str, Any]:
    """A kubeconfig with the certificates embedded, so it works when copied elsewhere."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }


def fake_node(name: str) -> dict[str, Any]:
    """A Node that kwok manages (by the annotation its selector matches).

    No kwok taint: every node in this cluster is fake, and the operator's workloads must schedule
    without tolerations, as they would on a real cluster.
    """
    capacity = {"cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": capacity,
            "capacity": capacity,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
            "phase": "Running",
        },
    }


def default_storage_class() -> dict[str, Any]:
    """`standard`, the default StorageClass, named like kind's so the same manifests work."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "standard",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def node_is_ready(node: Mapping[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


# ---------------------------------------------------------------------------------------------
# kubectl


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; str() carries kubectl's own message."""

    def __str__(self) -> str:
        args = self.cmd[3:] if isinstance(self.cmd, list) else self.cmd
        return f"kubectl {' '.join(map(str, args))} failed ({self.returncode}): {self.stderr}"


def kubectl_binary() -> Path:
    return build.KUBERNETES.path("kubectl")


def run_kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [str(kubectl_binary()), "--kubeconfig", str(kubeconfig), *args]
    proc = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=120)
    if check and proc.returncode != 0:
        raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


# ---------------------------------------------------------------------------------------------
# The running cluster


@dataclass
class State:
    ports: Ports
    processes: list[procs.ProcessRecord] = field(default_factory=list)
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "ports": asdict(self.ports),
            "processes": [p.to_json() for p in self.processes],
            "started_at": self.started_at,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        return cls(
            ports=Ports(**data["ports"]),
            processes=[procs.ProcessRecord.from_json(p) for p in data["processes"]],
            started_at=float(data.get("started_at", 0.0)),
            extra=dict(data.get("extra", {})),
        )


@dataclass(frozen=True)
class UpResult:
    kubeconfig: Path
    reused: bool
    seconds: float
    phases: dict[str, float]


class LocalCluster:
    """The local control plane in one state dir. Safe to construct; nothing runs until `up()`."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.layout = Layout((state_dir or default_state_dir()).resolve())

    @property
    def state_dir(self) -> Path:
        return self.layout.root

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(self.kubeconfig, *args, input=input, check=check)

    # -- state --------------------------------------------------------------------------------

    def load_state(self) -> State | None:
        try:
            return State.from_json(json.loads(self.layout.state_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_state(self, state: State) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2))
        tmp.replace(self.layout.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One up/down at a time per state dir (`./dev up` and test sessions may share one)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with (self.layout.root / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- health -------------------------------------------------------------------------------

    def api_url(self, state: State | None = None) -> str:
        state = state or self.load_state()
        if state is None:
            raise ClusterError(f"no cluster state in {self.state_dir}; run `up` first")
        return f"https://127.0.0.1:{state.ports.apiserver}"

    def admin_tls(self) -> ssl.SSLContext:
        """TLS to the API server as the admin, verified against the cluster CA."""
        pki = self.layout.pki
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.client_cert("admin"), pki.client_key("admin"))
        return ctx

    def api_get(self, path: str, state: State | None = None, timeout: float = 5.0) -> Any:
        """GET a JSON document from the API server as the admin."""
        with urllib.request.urlopen(
            self.api_url(state) + path, context=self.admin_tls(), timeout=timeout
        ) as resp:
            return json.loads(resp.read() or b"null")

    def status(self) -> dict[str, Any]:
        """What runs: each recorded process, and whether the API server answers /readyz."""
        state = self.load_state()
        if state is None:
            return {"state_dir": str(self.state_dir), "running": False, "processes": {}}
        running = {p.name: {"pid": p.pid, "running": procs.is_running(p)} for p in state.processes}
        ready = False
        with contextlib.suppress(OSError, ValueError, ssl.SSLError):
            ready = _get_text(self, "/readyz", state) == "ok"
        return {
            "state_dir": str(self.state_dir),
            "running": all(v["running"] for v in running.values()) and bool(running),
            "apiserver_ready": ready,
            "api_url": self.api_url(state),
            "kubeconfig": str(self.kubeconfig),
            "processes": running,
        }

    def is_healthy(self) -> bool:
        state = self.load_state()
        if state is None or not state.processes:
            return False
        names = {p.name for p in state.processes}
        if not set(COMPONENTS) <= names or not all(procs.is_running(p) for p in state.processes):
            return False
        try:
            return _get_text(self, "/readyz", state) == "ok"
        except (OSError, ValueError, ssl.SSLError):
            return False

    # -- up / down ----------------------------------------------------------------------------

    def up(self, timeout: float = 180.0, log: Callable[[str], None] | None = None) -> UpResult:
        """Start the cluster, or reuse it when a healthy one already runs in this state dir."""
        say = log or (lambda _msg: None)
        started = time.monotonic()
        with self._locked():
            if self.is_healthy():
                return UpResult(self.kubeconfig, True, time.monotonic() - started, {})
            self._stop_recorded()
            try:
                phases = self._start(timeout, say)
            except ClusterError as exc:
                # Free ports are picked before the servers bind them; on a busy machine another
                # process can take one in between. One fresh try with new ports covers that.
                if "address already in use" not in str(exc):
                    raise
                say(f"a port was taken meanwhile, retrying with new ports ({exc})")
                phases = self._start(timeout, say)
        return UpResult(self.kubeconfig, False, time.monotonic() - started, phases)

    def down(self) -> list[int]:
        """Stop every process this state dir recorded; returns the pids that survived (none)."""
        with self._locked():
            return self._stop_recorded()

    def _stop_recorded(self) -> list[int]:
        state = self.load_state()
        if state is None:
            return []
        left = procs.stop(state.processes)
        state.processes = []
        self.save_state(state)
        return left

    def _start(self, timeout: float, say: Callable[[str], None]) -> dict[str, float]:
        for part in (build.KUBERNETES, build.KWOK):
            if not part.is_built():
                raise ClusterError(
                    f"{part.name} {part.version} is not built; run "
                    f"`python -m hypersend_devenv.build {part.name}` (from tools/)"
                )
        deadline = time.monotonic() + timeout
        phases: dict[str, float] = {}
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            phases[name] = round(now - mark, 2)
            mark = now
            say(f"{name}: {phases[name]}s")

        layout = self.layout
        ports = Ports.allocate()
        state = State(ports=ports, started_at=time.time())
        self.save_state(state)
        ensure_pki(layout.pki.dir, SERVICE_IP)
        self._write_kubeconfigs(ports)
        self._write_kwok_config()
        # A fresh etcd each time: a restarted cluster must not resurrect objects of an old run.
        shutil.rmtree(layout.etcd_data, ignore_errors=True)
        layout.logs.mkdir(parents=True, exist_ok=True)
        for component in COMPONENTS:
            with contextlib.suppress(FileNotFoundError):
                layout.log(component).unlink()
        phase("prepare")

        try:
            k8s = build.KUBERNETES
            self._launch(state, "etcd", etcd_args(k8s.path("etcd"), layout, ports))
            self._wait(state, "etcd", deadline, lambda: _etcd_healthy(ports))
            phase("etcd")
            self._launch(
                state, "kube-apiserver", apiserver_args(k8s.path("kube-apiserver"), layout, ports)
            )
            self._wait(
                state,
                "kube-apiserver",
                deadline,
                lambda: _get_text(self, "/readyz", state) == "ok",
            )
            phase("kube-apiserver")
            self._launch(
                state,
                "kube-controller-manager",
                controller_manager_args(k8s.path("kube-controller-manager"), layout, ports),
            )
            self._launch(
                state, "kube-scheduler", scheduler_args(k8s.path("kube-scheduler"), layout, ports)
            )
            self._launch(state, "kwok", kwok_args(build.KWOK.path("kwok"), layout))
            objects = [fake_node(n) for n in NODE_NAMES] + [default_storage_class()]
            self.kubectl("apply", "-f", "-", input="\n".join(json.dumps(o) for o in objects))
            self._wait(
                state,
                "kube-controller-manager",
                deadline,
                lambda: _healthz(ports.controller_manager),
            )
            self._wait(state, "kube-scheduler", deadline, lambda: _healthz(ports.scheduler))
            phase("controllers")
            self._wait(state, "kwok", deadline, self._nodes_ready)
            # Pods need the `default` ServiceAccount, which the controller-manager creates.
            self._wait(
                state,
                "kube-controller-manager",
                deadline,
                lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
            )
            phase("nodes-ready")
        except BaseException:
            left = procs.stop(state.processes)
            state.processes = []
            self.save_state(state)
            if left:
                say(f"warning: pids {left} survived the cleanup")
            raise
        return phases

    def start_custom_metrics(self, timeout: float = 90.0) -> metrics_adapter.MetricsWriter:
        """Serve custom.metrics.k8s.io from the test adapter (idempotent); returns its writer.

        The adapter becomes one of the cluster's recorded processes, so `down` stops it too.
        """
        with self._locked():
            state = self.load_state()
            if state is None or not self.is_healthy():
                raise ClusterError(f"no healthy cluster in {self.state_dir}; run `up` first")
            known = state.extra.get("metrics_adapter")
            running = [p for p in state.processes if p.name == ADAPTER]
            if known and running and procs.is_running(running[0]):
                return metrics_adapter.MetricsWriter(int(known["write_port"]))
            if not build.METRICS_ADAPTER.is_built():
                raise ClusterError(
                    "the custom metrics adapter is not built; run "
                    "`python -m hypersend_devenv.build metrics-adapter` (from tools/)"
                )
            secure_port, write_port = free_ports(2)
            tls = issue_serving_cert(
                self.layout.pki,
                ADAPTER,
                dns=[metrics_adapter.SERVICE_DNS, "localhost"],
                ips=["127.0.0.1"],
            )
            with contextlib.suppress(FileNotFoundError):
                self.layout.log(ADAPTER).unlink()
            argv = metrics_adapter.adapter_args(
                str(build.METRICS_ADAPTER.path("metrics-adapter")),
                str(self.kubeconfig),
                (str(tls[0]), str(tls[1])),
                secure_port,
                write_port,
            )
            state.processes = [p for p in state.processes if p.name != ADAPTER]
            state.extra["metrics_adapter"] = {"secure_port": secure_port, "write_port": write_port}
            self._launch(state, ADAPTER, argv)
            manifests = metrics_adapter.apiservice_manifests(
                secure_port, self.layout.pki.ca_cert.read_bytes()
            )
            self.kubectl("apply", "-f", "-", input="\n".join(json.dumps(m) for m in manifests))
            deadline = time.monotonic() + timeout
            self._wait(state, ADAPTER, deadline, self._custom_metrics_available)
            return metrics_adapter.MetricsWriter(write_port)

    def _custom_metrics_available(self) -> bool:
        api = self.api_get(
            f"/apis/apiregistration.k8s.io/v1/apiservices/{metrics_adapter.APISERVICE}"
        )
        conditions = api.get("status", {}).get("conditions", [])
        available = any(c["type"] == "Available" and c["status"] == "True" for c in conditions)
        # Availability is the aggregator's view; discovery through it proves the whole path.
        return available and self._exists(
            f"/apis/{metrics_adapter.GROUP}/{metrics_adapter.VERSION}"
        )

    def _launch(self, state: State, name: str, argv: Sequence[str]) -> None:
        state.processes.append(procs.start(name, argv, self.layout.log(name)))
        self.save_state(state)

    def _wait(self, state: State, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        """Poll `ready` until true; fail fast with the log of any component that died."""
        last_error = ""
        while True:
            for record in state.processes:
                if not procs.is_running(record):
                    raise ClusterError(
                        f"{record.name} stopped ({procs.exit_description(record)}) "
                        f"while waiting for {name}; "
                        f"last lines of {record.log}:\n{procs.log_tail(record.log)}"
                    )
            try:
                if ready():
                    return
            except (OSError, ValueError, ssl.SSLError, subprocess.SubprocessError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                log = self.layout.log(name)
                raise ClusterError(
                    f"{name} not ready in time (last check: {last_error or 'not ready'}); "
                    f"last lines of {log}:\n{procs.log_tail(log)}"
                )
            time.sleep(0.2)

    def _nodes_ready(self) -> bool:
        nodes = self.api_get("/api/v1/nodes")["items"]
        ready = {n["metadata"]["name"] for n in nodes if node_is_ready(n)}
        return set(NODE_NAMES) <= ready

    def _exists(self, path: str) -> bool:
        try:
            self.api_get(path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def _write_kubeconfigs(self, ports: Ports) -> None:
        pki = self.layout.pki
        server = f"https://127.0.0.1:{ports.apiserver}"
        ca = pki.ca_cert.read_bytes()
        targets = {
            "admin": self.layout.admin_kubeconfig,
            "controller-manager": self.layout.component_kubeconfig("controller-manager"),
            "scheduler": self.layout.component_kubeconfig("scheduler"),
            "kwok": self.layout.component_kubeconfig("kwok"),
        }
        for stem, path in targets.items():
            config = render_kubeconfig(
                server,
                ca,
                pki.client_cert(stem).read_bytes(),
                pki.client_key(stem).read_bytes(),
                user=stem,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)

    def _write_kwok_config(self) -> None:
        # kwok's own default stages (node init + lease heartbeat, pod ready/complete/delete).
        stages = subprocess.run(
            [str(build.KWOK.path("kwok-stages"))], text=True, capture_output=True, check=True
        ).stdout
        self.layout.kwok_config.write_text(stages)


def _get_text(cluster: LocalCluster, path: str, state: State) -> str:
    url = cluster.api_url(state) + path
    with urllib.request.urlopen(url, context=cluster.admin_tls(), timeout=5) as resp:
        return str(resp.read().decode())


def _etcd_healthy(ports: Ports) -> bool:
    url = f"http://127.0.0.1:{ports.etcd_client}/health"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bool(json.loads(resp.read()).get("health") == "true")


def _healthz(port: int) -> bool:
    """The controller-manager and scheduler serve /healthz on a self-signed port; trust it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=5) as r:
        return bool(r.read() == b"ok")


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hypersend_devenv.cluster",
        description="Run a local Kubernetes control plane (etcd, apiserver, controllers, kwok).",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default: $HYPERSEND_STATE_DIR, else .hypersend/cluster",
    )
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    if args.command == "up":
        # A newcomer's first `up` builds what is missing (cached afterwards).
        build.ensure([build.KUBERNETES.name, build.KWOK.name])
        try:
            result = cluster.up(log=lambda msg: print(f"[cluster] {msg}", flush=True))
        except ClusterError as exc:
            print(f"[cluster] up failed: {exc}", file=sys.stderr)
            return 1
        how = "reused the running cluster" if result.reused else "started"
        print(f"[cluster] {how} in {result.seconds:.1f}s")
        print(f"[cluster] kubeconfig: {result.kubeconfig}")
        print(f"export KUBECONFIG={result.kubeconfig}")
        return 0
    if args.command == "down":
        left = cluster.down()
        if left:
            print(f"[cluster] processes still alive: {left}", file=sys.stderr)
            return 1
        print("[cluster] stopped")
        return 0
    status = cluster.status()
    print(json.dumps(status, indent=2))
    # Exit status for scripts: 0 when everything recorded runs and the API server is ready.
    return 0 if status["running"] and status.get("apiserver_ready") else 1


if __name__ == "__main__":
    raise SystemExit(main())
