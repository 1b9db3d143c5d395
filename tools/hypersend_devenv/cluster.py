"""A local Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and either kwok (fake nodes whose pods reach Running and Ready: the fast tier) or
one real node (`hypersend_devenv.node`: kubelet, containerd, kube-proxy, CoreDNS running real
containers), from the binaries that `hypersend_devenv.build` puts in the cache.

    python -m hypersend_devenv.cluster up|down|status     (from tools/, or with PYTHONPATH=tools)

`LocalCluster(state_dir).up()` is the same from Python. The state dir (default
`<repo>/.hypersend/cluster`, or `$HYPERSEND_STATE_DIR`) holds the PKI, kubeconfigs, etcd data, logs
and `state.json` (ports and pids). `up` reuses a healthy running cluster; `down` stops every process
group it started.

Safety: nothing on the host dials a pod, node or service-cluster IP. In the kwok tier there is no
kubelet and no kube-proxy; kwok runs without its server (no logs/exec/port-forward), and the API
server's `kubernetes` Service endpoints are not reconciled (they would point at 127.0.0.1, which
Endpoints forbid anyway). With the real node, the node and its pods live in a network namespace of
their own, and the API server reaches them only through the relay's egress proxy, which dials
nothing outside that namespace.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
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

from hypersend_devenv import build, images, metrics_adapter, node, procs
from hypersend_devenv.pki import Pki, ensure_pki, issue_serving_cert

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"  # kwok hands out (fake) pod IPs from here
CLUSTER_NAME = "hypersend-local"
NODE_NAMES = ("kwok-node-1", "kwok-node-2")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Order matters: start order, and `down` stops in reverse.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
COMPONENTS = (*CONTROL_PLANE, "kwok")
REAL_NODE_COMPONENTS = (
    "node-holder",
    "node-relay",
    "containerd",
    *CONTROL_PLANE,
    "kubelet",
    "kube-proxy",
    "coredns",
)
ADAPTER = "metrics-adapter"  # started on demand by LocalCluster.start_custom_metrics
# The controller-manager's in-tree hostpath provisioner (--enable-hostpath-provisioner) makes each
# PV a directory under this fixed host path and deletes it with the PV, leaving the parent.
HOSTPATH_PV_DIR = Path("/tmp/hostpath_pv")


class ClusterError(RuntimeError):
    """The cluster could not be brought up (the message carries the failing component's log)."""


def provisioned_pv_dirs(pv_list: Mapping[str, Any], base: Path = HOSTPATH_PV_DIR) -> list[Path]:
    """The directories of the hostPath PVs in ``pv_list`` (a PersistentVolumeList) that the
    provisioner made directly under ``base``: what a cluster's `down` removes from the host."""
    found: list[Path] = []
    for pv in pv_list.get("items") or []:
        path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path")
        if not isinstance(path, str):
            continue
        candidate = Path(path)
        if candidate.parent == base and candidate.name not in ("", ".", ".."):
            found.append(candidate)
    return found


def remove_made_dir(path: Path, made_here: bool) -> None:
    """Remove ``path`` if this cluster's start found it absent and it is empty now: the host is
    left as found. Another cluster's PVs may still be in it; then it stays for that one."""
    if made_here:
        with contextlib.suppress(OSError):  # gone already, or not empty
            path.rmdir()


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
    def egress_config(self) -> Path:
        return self.root / "egress-selector.yaml"

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


def apiserver_args(
    binary: Path, layout: Layout, ports: Ports, real_node: bool = False
) -> list[str]:
    pki = layout.pki
    args = [
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
        # On in OpenShift: setting blockOwnerDeletion in an owner reference needs update on the
        # owner's finalizers; the operator's RBAC tests prove it has that (rbac_needs.py).
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
        "--profiling=false",
    ]
    if not real_node:
        return args
    # The `kubernetes` Service's endpoint is the node's address, where the relay forwards to
    # this API server; everything the API server dials in the cluster (kubelets for logs, exec
    # and port-forward, pods, aggregated APIs) goes through the relay's egress proxy.
    replaced = {
        "--advertise-address": node.NODE_IP,
        "--endpoint-reconciler-type": "lease",
        "--authorization-mode": "Node,RBAC",
    }
    args = [a for a in args if a.split("=", 1)[0] not in replaced]
    args += [f"{flag}={value}" for flag, value in replaced.items()]
    return [
        *args,
        f"--egress-selector-config-file={layout.egress_config}",
        f"--kubelet-client-certificate={pki.client_cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
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
        # Tests watch the HPA react; the default 15s sync makes them slow. A new HPA is first
        # evaluated one period after it appears (the controller's queue delays every key by the
        # period), and a HypersendCluster is Ready only once its HPA was: 1s, not 5s, takes ~4s
        # off every Ready of an autoscaled cluster.
        "--horizontal-pod-autoscaler-sync-period=1s",
        # PVCs (StatefulSet volumeClaimTemplates) get bound: the in-tree test provisioner makes
        # PVs for the `standard` StorageClass (empty dirs under /tmp/hostpath_pv on this host;
        # kwok pods never mount them).
        "--enable-hostpath-provisioner=true",
        # Its default (/usr/libexec/kubernetes/...) would be created on the host.
        f"--flex-volume-plugin-dir={layout.root / 'flexvolume'}",
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


def crd_established(crd: Mapping[str, Any] | None) -> bool:
    """Whether a CustomResourceDefinition is served. (`kubectl wait --for=condition=Established`
    fails at once, "accessor error: <nil>", while a new CRD has no conditions yet: poll this.)"""
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


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
class NodeImages:
    """What the real node runs: containerd's sandbox image and the archives to import."""

    sandbox_image: str
    archives: tuple[images.ImageArchive, ...]


@dataclass(frozen=True)
class UpResult:
    kubeconfig: Path
    reused: bool
    seconds: float
    phases: dict[str, float]


class LocalCluster:
    """The local control plane in one state dir. Safe to construct; nothing runs until `up()`."""

    def __init__(self, state_dir: Path | None = None, real_node: bool = False) -> None:
        self.layout = Layout((state_dir or default_state_dir()).resolve())
        self.real_node = real_node
        self.node = node.Node(self.layout.root)

    @classmethod
    def existing(cls, state_dir: Path) -> LocalCluster | None:
        """The cluster recorded in `state_dir` (with or without a real node), if there is one."""
        probe = cls(state_dir)
        state = probe.load_state()
        if state is None:
            return None
        return cls(state_dir, real_node="node" in state.extra)

    def node_netns(self) -> Path:
        """The real node's network namespace (as a /proc path: it has no name)."""
        state = self.load_state()
        holders = [p for p in (state.processes if state else []) if p.name == "node-holder"]
        if not holders or not procs.is_running(holders[0]):
            raise ClusterError(f"no real node runs in {self.state_dir}")
        return Path(f"/proc/{holders[0].pid}/ns/net")

    @property
    def components(self) -> tuple[str, ...]:
        return REAL_NODE_COMPONENTS if self.real_node else COMPONENTS

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

    def wait_crd_established(self, name: str, timeout: float = 60.0) -> None:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        deadline = time.monotonic() + timeout
        while not crd_established(self.api_get(path)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.2)

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
        if not set(self.components) <= names or not all(
            procs.is_running(p) for p in state.processes
        ):
            return False
        try:
            return _get_text(self, "/readyz", state) == "ok"
        except (OSError, ValueError, ssl.SSLError):
            return False

    # -- up / down ----------------------------------------------------------------------------

    def up(
        self,
        timeout: float = 180.0,
        log: Callable[[str], None] | None = None,
        node_images: NodeImages | None = None,
    ) -> UpResult:
        """Start the cluster, or reuse it when a healthy one already runs in this state dir.

        With a real node, `node_images` names what containerd must hold (nothing is pulled).
        """
        say = log or (lambda _msg: None)
        if self.real_node and node_images is None:
            raise ClusterError("a real node needs its images (NodeImages)")
        started = time.monotonic()
        with self._locked():
            if self.is_healthy():
                return UpResult(self.kubeconfig, True, time.monotonic() - started, {})
            self._stop_recorded()
            try:
                phases = self._start(timeout, say, node_images)
            except ClusterError as exc:
                # Free ports are picked before the servers bind them; on a busy machine another
                # process can take one in between. One fresh try with new ports covers that.
                if "address already in use" not in str(exc):
                    raise
                say(f"a port was taken meanwhile, retrying with new ports ({exc})")
                phases = self._start(timeout, say, node_images)
        return UpResult(self.kubeconfig, False, time.monotonic() - started, phases)

    def down(self) -> list[int]:
        """Stop every process this state dir recorded; returns the pids that survived (none)."""
        with self._locked():
            return self._stop_recorded()

    def _stop_recorded(self) -> list[int]:
        state = self.load_state()
        if state is None:
            return []
        pv_dirs: list[Path] = []
        with contextlib.suppress(OSError, ValueError, ssl.SSLError):  # not answering: none known
            pv_dirs = provisioned_pv_dirs(self.api_get("/api/v1/persistentvolumes", state))
        if "node" in state.extra:
            # The pods' watches hold the API server's graceful shutdown open until it is killed
            # (15 s): what started after the API server (the node's agents) stops first, then
            # the pods go, then the rest.
            names = [record.name for record in state.processes]
            after_api = names.index("kube-apiserver") + 1 if "kube-apiserver" in names else 0
            left = procs.stop(state.processes[after_api:])
            self.node.kill_workloads()
            left += procs.stop(state.processes[:after_api])
        else:
            left = procs.stop(state.processes)
        state.processes = []
        # The PVs' directories outlive the cluster that made them unless removed here.
        for pv_dir in pv_dirs:
            shutil.rmtree(pv_dir, ignore_errors=True)
        remove_made_dir(HOSTPATH_PV_DIR, bool(state.extra.pop("hostpath_pv_made", False)))
        self.save_state(state)
        if state.extra.pop("node", None) is not None:
            problems = self.node.teardown()
            if problems:
                raise ClusterError("the node was not removed cleanly: " + "; ".join(problems))
            self.save_state(state)
        return left

    def _start(
        self, timeout: float, say: Callable[[str], None], node_images: NodeImages | None
    ) -> dict[str, float]:
        parts = [build.KUBERNETES, build.COREDNS] if self.real_node else [build.KUBERNETES]
        for part in (*parts, build.KWOK):
            if part is build.KWOK and self.real_node:
                continue
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
        state.extra["hostpath_pv_made"] = not HOSTPATH_PV_DIR.exists()
        self.save_state(state)
        ensure_pki(layout.pki.dir, SERVICE_IP)
        self._write_kubeconfigs(ports)
        self._write_kwok_config()
        # A fresh etcd each time: a restarted cluster must not resurrect objects of an old run.
        shutil.rmtree(layout.etcd_data, ignore_errors=True)
        layout.logs.mkdir(parents=True, exist_ok=True)
        for component in self.components:
            with contextlib.suppress(FileNotFoundError):
                layout.log(component).unlink()
        phase("prepare")

        # The node's images go into its containerd while the control plane starts (the import
        # is most of a real node's start); the kubelet starts only once they are all in, so no
        # pod ever finds its image missing.
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="node-images")
        importing: concurrent.futures.Future[list[str]] | None = None
        try:
            if node_images is not None and self.real_node:
                self._start_node_runtime(state, ports, node_images, deadline, say)
                importing = pool.submit(
                    images.import_into_containerd,
                    str(self.node.layout.containerd_socket),
                    list(node_images.archives),
                    log=say,
                )
                phase("node-runtime")
            k8s = build.KUBERNETES
            self._launch(state, "etcd", etcd_args(k8s.path("etcd"), layout, ports))
            self._wait(state, "etcd", deadline, lambda: _etcd_healthy(ports))
            phase("etcd")
            self._launch(
                state,
                "kube-apiserver",
                apiserver_args(k8s.path("kube-apiserver"), layout, ports, self.real_node),
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
            if self.real_node:
                objects = [*node.coredns_rbac(), default_storage_class()]
            else:
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
            if importing is not None:
                importing.result()
                phase("images")
            if self.real_node:
                self._start_node_agents(state, deadline)
            else:
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
            # An import still running ends with its containerd (stopped above).
            concurrent.futures.wait([importing] if importing is not None else [])
            state.processes = []
            remove_made_dir(HOSTPATH_PV_DIR, bool(state.extra.pop("hostpath_pv_made", False)))
            self.save_state(state)
            if left:
                say(f"warning: pids {left} survived the cleanup")
            if state.extra.pop("node", None) is not None:
                for problem in self.node.teardown():
                    say(f"warning: {problem}")
                self.save_state(state)
            raise
        finally:
            pool.shutdown(wait=True)
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

    def _start_node_runtime(
        self,
        state: State,
        ports: Ports,
        wanted: NodeImages,
        deadline: float,
        say: Callable[[str], None],
    ) -> None:
        """The node's namespaces, cgroups, relay and containerd (its images are imported by
        the caller)."""
        missing = node.missing_tools()
        if missing:
            raise ClusterError(f"the real node needs {missing}; run `./dev setup`")
        the_node = self.node
        leftovers = the_node.teardown()  # of a run that was killed before its `down`
        if leftovers:
            raise ClusterError("leftovers of an earlier node remain: " + "; ".join(leftovers))
        state.extra["node"] = {"cgroup": the_node.layout.cgroup_name}
        self.save_state(state)
        daemons = the_node.create_cgroups()
        server = f"https://127.0.0.1:{ports.apiserver}"
        pki = self.layout.pki
        kubeconfigs = {
            stem: yaml.safe_dump(
                render_kubeconfig(
                    server,
                    pki.ca_cert.read_bytes(),
                    pki.client_cert(stem).read_bytes(),
                    pki.client_key(stem).read_bytes(),
                    user=stem,
                )
            )
            for stem in ("kubelet", "kube-proxy", "coredns")
        }
        the_node.write_files(wanted.sandbox_image, kubeconfigs, pki.dir)
        self.layout.egress_config.write_text(
            yaml.safe_dump(node.egress_selector_config(the_node.layout))
        )
        holder = self._launch(
            state, "node-holder", node.in_cgroup(daemons, the_node.holder_argv()), binary="sleep"
        )
        self._wait(state, "node-holder", deadline, lambda: the_node.holder_ready(holder.pid))
        the_node.create_network(holder.pid, SERVICE_CIDR)
        the_node.private_mounts(holder.pid)
        relay = the_node.relay_argv(holder.pid, ports.apiserver, SERVICE_CIDR)
        self._launch(state, "node-relay", relay)
        self._wait(state, "node-relay", deadline, the_node.layout.egress_socket.exists)
        argv = the_node.containerd_argv(holder.pid)
        self._launch(
            state, "containerd", node.in_cgroup(daemons, argv), binary=node.final_binary(argv)
        )
        self._wait(state, "containerd", deadline, the_node.containerd_ready)

    def _start_node_agents(self, state: State, deadline: float) -> None:
        """kubelet, kube-proxy and CoreDNS in the node's namespaces; waits for the Node Ready."""
        the_node = self.node
        holder = next(p for p in state.processes if p.name == "node-holder").pid
        daemons = node.daemons_procs_file(the_node.layout)
        for name, argv in (
            ("kubelet", the_node.kubelet_argv(holder)),
            ("kube-proxy", the_node.kube_proxy_argv(holder)),
            ("coredns", the_node.coredns_argv(holder)),
        ):
            self._launch(state, name, node.in_cgroup(daemons, argv), binary=node.final_binary(argv))
        self._wait(state, "kubelet", deadline, self._real_node_ready)

    def _real_node_ready(self) -> bool:
        try:
            found = self.api_get(f"/api/v1/nodes/{node.NODE_NAME}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        return node_is_ready(found)

    def _launch(
        self, state: State, name: str, argv: Sequence[str], binary: str | None = None
    ) -> procs.ProcessRecord:
        record = procs.start(name, argv, self.layout.log(name), binary=binary)
        state.processes.append(record)
        self.save_state(state)
        return record

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
