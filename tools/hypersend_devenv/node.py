"""The real node: kubelet + containerd + runc + CNI + kube-proxy + CoreDNS, registered with the
local control plane, running real containers from images built here.

Everything of the node lives in namespaces this module creates and removes:

- a network namespace holding a bridge with the node's address (NODE_IP) and the pods' subnet; it
  has no route out and nothing routes into it. The API server and the node reach each other only
  through `hypersend_devenv.nsrelay` (loopback on the host, addresses inside the namespace on the
  node side);
- a mount namespace, private from the host's, shared by containerd, the kubelet and the pods, with
  fresh tmpfs on /run, /var/lib and /var/log (the fixed paths kubelet and containerd write to) and
  the three sysctls the kubelet would otherwise write host-wide (vm.overcommit_memory,
  kernel.panic, kernel.panic_on_oops) bind-mounted with the values it wants, so it reads them as
  set and changes nothing. Its mounts vanish with its last process;
- cgroups under `hypersend-<id>` in every v1 hierarchy (the kubelet's cgroupRoot); the node's
  daemons join `hypersend-<id>/daemons` of the pids hierarchy, so teardown finds every process the
  node started (shims and containers included) and removes the cgroups after them.

Both namespaces belong to a holder process (`unshare --net --mount`), not to a name under
/run/netns, so they vanish with the node's last process. `teardown()` kills those processes,
removes the cgroups and deletes the node's state directory: the host is left as it was found
(tests/e2e/test_node_host.py compares `host_snapshot()` before and after).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hypersend_devenv import build, nsrelay
from hypersend_devenv.pki import REAL_NODE_NAME, Pki, issue_serving_cert

NODE_NAME = REAL_NODE_NAME
BRIDGE = "hs0"
# RFC 2544's benchmarking range: routed nowhere, used only inside the node's namespace.
NODE_SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
NODE_IP = "198.18.0.1"
POD_RANGE = ("198.18.0.10", "198.18.0.250")
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
# What the kubelet writes host-wide unless it reads these values already (measured).
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
# Fixed paths the kubelet, containerd and CNI write to: fresh tmpfs in the node's mount namespace.
PRIVATE_TMPFS = ("/run", "/var/lib", "/var/log")
KUBELET_ROOT = "/var/lib/kubelet"  # inside the node's mount namespace only
CGROUP_ROOT_DIR = Path("/sys/fs/cgroup")
DAEMONS = "daemons"
NODE_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables")
CNI_BIN_DIR = Path("/usr/lib/cni")


class NodeError(RuntimeError):
    """The node could not be started or removed (the message says what failed)."""


def node_id(state_dir: Path) -> str:
    """A short id unique to one state dir: two checkouts run nodes side by side."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class NodeLayout:
    """Names and paths of one node (derived from the cluster's state dir)."""

    state_dir: Path

    @property
    def id(self) -> str:
        return node_id(self.state_dir)

    @property
    def cgroup_name(self) -> str:
        return f"hypersend-{self.id}"

    @property
    def root(self) -> Path:
        return self.state_dir / "node"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def containerd_socket(self) -> Path:
        return self.path("containerd.sock")

    @property
    def egress_socket(self) -> Path:
        return self.path("egress.sock")

    @property
    def volumes(self) -> Path:
        """hostPath PersistentVolumes of the dev environment (removed with the node)."""
        return self.path("volumes")

    def kubeconfig(self, stem: str) -> Path:
        return self.path("kubeconfigs", f"{stem}.kubeconfig")


# ---------------------------------------------------------------------------------------------
# Pure builders: configuration files and command lines.


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6's config (version 2). Facts behind each setting: docs/real-node.md."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{layout.path("containerd", "root")}"',
            # Task state and shim sockets go to the node's private /run.
            'state = "/run/containerd"',
            'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]',
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{layout.path("containerd-ttrpc.sock")}"',
            "[metrics]",
            '  address = ""',
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
            "  restrict_oom_score_adj = true",
            "  disable_apparmor = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            f'  BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"',
            '  Root = "/run/runc"',
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{layout.path("cni", "net.d")}"',
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_config(layout: NodeLayout) -> dict[str, Any]:
    """One bridge with host-local addresses; no masquerade, no route out of the namespace."""
    return {
        "cniVersion": "0.4.0",
        "name": "hypersend",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.path("cni", "ipam")),
                    "ranges": [
                        [
                            {
                                "subnet": str(NODE_SUBNET),
                                "rangeStart": POD_RANGE[0],
                                "rangeEnd": POD_RANGE[1],
                                "gateway": NODE_IP,
                            }
                        ]
                    ],
                },
            }
        ],
    }


def kubelet_config(layout: NodeLayout, ca_cert: Path, serving: tuple[Path, Path]) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine mounts cgroup v1 controllers (plus an empty cgroup2): measured to work.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_name}",
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(layout.path("resolv.conf")),
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "volumePluginDir": str(layout.path("volume-plugins")),
        "staticPodPath": "",
        "registerNode": True,
        "maxPods": 110,
        # Images are imported, never pulled: garbage-collecting one would lose it for good.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
        "nodeStatusUpdateFrequency": "4s",
    }


def kube_proxy_config(layout: NodeLayout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "clusterCIDR": str(NODE_SUBNET),
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zeros leave the (host-wide) conntrack sysctls alone; -999 would need CAP_SYS_RESOURCE.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
        "iptables": {"masqueradeAll": False, "localhostNodePorts": False},
        "nodePortAddresses": [f"{NODE_IP}/32"],
    }


def corefile(layout: NodeLayout) -> str:
    """Cluster names only: there is no upstream to forward other names to."""
    return "\n".join(
        [
            ".:53 {",
            f"    bind {NODE_IP}",
            "    errors",
            "    ready 127.0.0.1:8181",
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
            f"        kubeconfig {layout.kubeconfig('coredns')}",
            "        pods insecure",
            "        fallthrough in-addr.arpa ip6.arpa",
            "    }",
            "    cache 5",
            "}",
            "",
        ]
    )


def coredns_rbac() -> list[dict[str, Any]]:
    """What CoreDNS's kubernetes plugin reads, bound to the user of its client certificate."""
    name = "system:coredns"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}],
        },
    ]


def egress_selector_config(layout: NodeLayout) -> dict[str, Any]:
    """The API server reaches kubelets, pods and services only through the relay's proxy."""
    return {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [
            {
                "name": "cluster",
                "connection": {
                    "proxyProtocol": "HTTPConnect",
                    "transport": {"uds": {"udsName": str(layout.egress_socket)}},
                },
            }
        ],
    }


def in_node(holder_pid: int, argv: Sequence[str]) -> list[str]:
    """argv run inside the node's mount and network namespaces (those of the holder process)."""
    return ["nsenter", f"--target={holder_pid}", "--mount", "--net", "--", *argv]


def in_cgroup(procs_file: Path, argv: Sequence[str]) -> list[str]:
    """argv run as a member of a cgroup (the shell joins it, then becomes argv)."""
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs_file), *argv]


def cgroup_mounts(mountinfo: str) -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (and the cgroup2 one) from /proc/self/mountinfo."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(fields[4]))
    return found


def final_binary(argv: Sequence[str]) -> str:
    """The program a wrapped argv ends up running (what /proc shows for it)."""
    return argv[argv.index("--") + 1] if "--" in argv else argv[0]


def pids_hierarchy(mountinfo: str) -> Path:
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup" and "pids" in fields[sep + 3].split(","):
            return Path(fields[4])
    raise NodeError("no cgroup v1 pids hierarchy is mounted")


# ---------------------------------------------------------------------------------------------
# I/O: namespaces, cgroups, processes.

# Fixed paths a kubelet, containerd or CNI would create on a host (here only inside the node).
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/containerd",
    "/run/containerd",
    "/run/runc",
    "/run/netns",
    "/etc/cni",
    "/var/lib/cni",
    "/opt/cni",
    "/usr/libexec/kubernetes",
)
HOST_SYSCTLS = (
    *KUBELET_SYSCTLS,
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
)


def host_snapshot() -> dict[str, Any]:
    """What a node could change on the host, as seen from the host's own namespaces."""

    def ruleset(command: str) -> list[str]:
        if shutil.which(command) is None:
            return []
        out = subprocess.run([command], capture_output=True, text=True, check=False).stdout
        # Comments carry a timestamp and counters change with traffic: keep the rules.
        return [line.split(" [")[0] for line in out.splitlines() if not line.startswith("#")]

    mounts = []
    for line in _mountinfo().splitlines():
        fields = line.split()
        sep = fields.index("-")
        mounts.append(f"{fields[4]} {fields[sep + 1]} {fields[sep + 2]}")
    sysctls = {}
    for key in HOST_SYSCTLS:
        with contextlib.suppress(OSError):
            sysctls[key] = Path("/proc/sys", key).read_text().strip()
    cgroups = {
        str(m): sorted(p.name for p in m.iterdir() if p.is_dir())
        for m in cgroup_mounts(_mountinfo())
    }
    return {
        "mounts": sorted(mounts),
        "links": sorted(os.listdir("/sys/class/net")),
        "routes": _run("ip", "route").splitlines() + _run("ip", "-6", "route").splitlines(),
        "iptables": ruleset("iptables-save") + ruleset("ip6tables-save"),
        "sysctls": sysctls,
        "cgroups": cgroups,
        "paths": {p: os.path.lexists(p) for p in HOST_PATHS},
    }


def _run(*argv: str, input: str | None = None) -> str:
    proc = subprocess.run(argv, input=input, text=True, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def missing_tools() -> list[str]:
    tools = ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "nsenter"]
    missing = [t for t in tools if shutil.which(t) is None]
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"{CNI_BIN_DIR}/bridge")
    return missing


def _kill_until_gone(listing: Callable[[], list[int]], timeout: float) -> list[int]:
    """SIGKILL what `listing` names until it names nothing or `timeout` passes (a process forks
    while it is being killed); returns what it names at the end."""
    deadline = time.monotonic() + timeout
    while (found := listing()) and time.monotonic() < deadline:
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return listing()


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def daemons_procs_file(layout: NodeLayout) -> Path:
    """cgroup.procs of the cgroup the node's daemons (and so containerd's shims) run in."""
    return pids_hierarchy(_mountinfo()) / layout.cgroup_name / DAEMONS / "cgroup.procs"


def _ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def _require_own_namespace(pid: int, kind: str) -> None:
    """Refuse to configure `pid`'s namespace when it is the host's own (a mount or an address
    meant for the node would land on the host)."""
    if _ns_inode(pid, kind) == _ns_inode("self", kind):
        raise NodeError(f"process {pid} shares the host's {kind} namespace; refusing to change it")


class Node:
    """One real node for the local cluster in `state_dir` (the cluster's own state dir)."""

    def __init__(self, state_dir: Path) -> None:
        self.layout = NodeLayout(state_dir.resolve())

    # -- preparing --------------------------------------------------------------------------

    def create_network(self, holder_pid: int, service_cidr: str) -> None:
        """In the holder's network namespace: lo and a bridge carrying NODE_IP, and a route for
        the Service range over it (a node's own connections to a cluster IP need a route before
        kube-proxy's DNAT picks the pod; a real node's default route plays that part)."""
        _require_own_namespace(holder_pid, "net")
        ip = ["nsenter", f"--target={holder_pid}", "--net", "--", "ip"]
        _run(*ip, "link", "set", "lo", "up")
        _run(*ip, "link", "add", BRIDGE, "type", "bridge")
        _run(*ip, "addr", "add", f"{NODE_IP}/{NODE_SUBNET.prefixlen}", "dev", BRIDGE)
        _run(*ip, "link", "set", BRIDGE, "up")
        _run(*ip, "route", "add", service_cidr, "dev", BRIDGE, "src", NODE_IP)
        # Pod -> Service -> pod on the same bridge needs bridged traffic to pass iptables
        # (a per-namespace setting on this kernel: the host's value is untouched).
        _run(
            "nsenter",
            f"--target={holder_pid}",
            "--net",
            "--",
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
        )

    def create_cgroups(self) -> Path:
        """`hypersend-<id>` in every hierarchy; returns the daemons' cgroup.procs file."""
        name = self.layout.cgroup_name
        for mount in cgroup_mounts(_mountinfo()):
            group = mount / name
            group.mkdir(exist_ok=True)
            # A v1 cpuset child starts with no CPUs or memory nodes: copy the parent's.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (mount / knob).exists() and not (group / knob).read_text().strip():
                    (group / knob).write_text((mount / knob).read_text())
        daemons = daemons_procs_file(self.layout)
        daemons.parent.mkdir(exist_ok=True)
        return daemons

    def write_files(
        self, sandbox_image: str, kubeconfigs: Mapping[str, str], pki_dir: Path
    ) -> None:
        layout = self.layout
        for sub in ("cni/net.d", "cni/ipam", "kubeconfigs", "sysctl", "volume-plugins"):
            layout.path(sub).mkdir(parents=True, exist_ok=True)
        layout.volumes.mkdir(parents=True, exist_ok=True)
        layout.path("containerd.toml").write_text(containerd_config(layout, sandbox_image))
        layout.path("cni", "net.d", "10-hypersend.conflist").write_text(
            json.dumps(cni_config(layout), indent=1)
        )
        pki = Pki(pki_dir)
        serving = issue_serving_cert(pki, "kubelet", dns=[NODE_NAME], ips=[NODE_IP])
        layout.path("kubelet.yaml").write_text(
            yaml.safe_dump(kubelet_config(layout, pki.ca_cert, serving))
        )
        layout.path("kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(layout)))
        layout.path("Corefile").write_text(corefile(layout))
        layout.path("resolv.conf").write_text(f"nameserver {NODE_IP}\n")
        for stem, text in kubeconfigs.items():
            layout.kubeconfig(stem).write_text(text)
            layout.kubeconfig(stem).chmod(0o600)
        for key, value in KUBELET_SYSCTLS.items():
            layout.path("sysctl", key.replace("/", ".")).write_text(value + "\n")

    def private_mounts(self, holder_pid: int) -> None:
        """Inside the holder's mount namespace (never the host's): tmpfs and sysctl views."""
        _require_own_namespace(holder_pid, "mnt")
        enter = ["nsenter", f"--target={holder_pid}", "--mount", "--"]
        for target in PRIVATE_TMPFS:
            _run(*enter, "mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", target)
        for key in KUBELET_SYSCTLS:
            source = self.layout.path("sysctl", key.replace("/", "."))
            _run(*enter, "mount", "--bind", str(source), f"/proc/sys/{key}")

    def holder_argv(self) -> list[str]:
        """The process that owns the node's network and mount namespaces."""
        return [
            "unshare",
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sleep",
            "infinity",
        ]

    def holder_ready(self, pid: int) -> bool:
        """True once the holder runs `sleep` in namespaces of its own."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            return cmdline[0] == b"sleep" and all(
                _ns_inode(pid, kind) != _ns_inode("self", kind) for kind in ("mnt", "net")
            )
        except OSError:
            return False

    # -- daemons -----------------------------------------------------------------------------

    def containerd_argv(self, holder_pid: int) -> list[str]:
        containerd = shutil.which("containerd") or "containerd"
        return in_node(holder_pid, [containerd, f"--config={self.layout.path('containerd.toml')}"])

    def kubelet_argv(self, holder_pid: int) -> list[str]:
        layout = self.layout
        return in_node(
            holder_pid,
            [
                str(build.KUBERNETES.path("kubelet")),
                f"--config={layout.path('kubelet.yaml')}",
                f"--kubeconfig={layout.kubeconfig('kubelet')}",
                # In the node's private /var/lib (tmpfs): the kubelet binds Unix sockets under
                # its root dir, and a state dir deep in a temp dir or a checkout would exceed
                # the 108-byte limit of a socket path.
                f"--root-dir={KUBELET_ROOT}",
                f"--cert-dir={KUBELET_ROOT}/pki",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--node-labels=hypersend.io/node=real",
                # cAdvisor finds containerd only here (its own flag, deprecated but the only way):
                # without it /metrics/cadvisor has no container, pod or image labels, and the
                # dashboard's and alerts' per-container CPU and memory have no data.
                f"--containerd={self.layout.containerd_socket}",
                "--v=1",
            ],
        )

    def kube_proxy_argv(self, holder_pid: int) -> list[str]:
        return in_node(
            holder_pid,
            [
                str(build.KUBERNETES.path("kube-proxy")),
                f"--config={self.layout.path('kube-proxy.yaml')}",
                "--v=1",
            ],
        )

    def coredns_argv(self, holder_pid: int) -> list[str]:
        return in_node(
            holder_pid,
            [str(build.COREDNS.path("coredns")), "-conf", str(self.layout.path("Corefile"))],
        )

    def relay_argv(self, holder_pid: int, api_port: int, service_cidr: str) -> list[str]:
        return [
            sys.executable,
            # By path: the relay needs only the standard library and h11, not this package's path.
            str(Path(nsrelay.__file__)),
            f"--netns=/proc/{holder_pid}/ns/net",
            # The node (kubelet, kube-proxy, CoreDNS on 127.0.0.1; pods via the kubernetes
            # Service, whose endpoint is NODE_IP) reaches the API server on the same port.
            f"--forward=node:0.0.0.0:{api_port}=host:127.0.0.1:{api_port}",
            f"--connect-proxy={self.layout.egress_socket}",
            f"--allow={NODE_SUBNET}",
            f"--allow={service_cidr}",
        ]

    def ctr(self, *args: str, timeout: float = 300) -> str:
        cmd = ["ctr", f"--address={self.layout.containerd_socket}", "--namespace=k8s.io", *args]
        proc = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise NodeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def containerd_ready(self) -> bool:
        if not self.layout.containerd_socket.exists():
            return False
        try:
            self.ctr("version", timeout=10)
        except (NodeError, subprocess.TimeoutExpired):
            return False
        return True

    # -- teardown ----------------------------------------------------------------------------

    def node_pids(self, only: str | None = None) -> list[int]:
        """Every process in the node's cgroups (daemons, shims, containers), or in one of them."""
        try:
            root = pids_hierarchy(_mountinfo()) / self.layout.cgroup_name
            if only is not None:
                root = root / only
        except NodeError:
            return []
        pids: list[int] = []
        if not root.exists():
            return pids
        for procs_file in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in procs_file.read_text().split()]
        return pids

    def workload_pids(self) -> list[int]:
        """The processes of the node's pods: every cgroup of the node but its daemons'."""
        daemons = set(self.node_pids(only=DAEMONS))
        return [pid for pid in self.node_pids() if pid not in daemons]

    def kill_workloads(self, timeout: float = 20.0) -> list[int]:
        """SIGKILL the pods' processes (not containerd, its shims or the node's agents); returns
        those still alive."""
        return _kill_until_gone(self.workload_pids, timeout)

    def kill_all(self, timeout: float = 20.0) -> list[int]:
        """SIGKILL every process of the node; returns those still alive."""
        return _kill_until_gone(self.node_pids, timeout)

    def remove_cgroups(self) -> list[Path]:
        """rmdir the node's cgroups, deepest first; returns those that could not be removed."""
        left = []
        for mount in cgroup_mounts(_mountinfo()):
            top = mount / self.layout.cgroup_name
            if not top.exists():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                for _ in range(50):  # a cgroup is busy for a moment after its last task exits
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
                else:
                    left.append(d)
        return left

    def teardown(self, wait_gone: Callable[[], None] | None = None) -> list[str]:
        """Remove everything the node made; returns what could not be removed (empty: all gone)."""
        problems: list[str] = []
        survivors = self.kill_all()
        if survivors:
            problems.append(f"processes still alive: {survivors}")
        if wait_gone is not None:
            wait_gone()
        problems += [f"cgroup left: {p}" for p in self.remove_cgroups()]
        if not problems:
            shutil.rmtree(self.layout.root, ignore_errors=True)
        return problems
