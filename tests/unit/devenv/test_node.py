"""The real node's pure parts: containerd, CNI, kubelet, kube-proxy and CoreDNS configuration, the
API server's flags for it, and the namespace and cgroup plumbing of its command lines."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest
from hypersend_devenv import cluster, node

pytestmark = pytest.mark.unit

LAYOUT = node.NodeLayout(Path("/state"))
PORTS = cluster.Ports(1, 2, 6443, 4, 5)


def test_the_node_network_is_routed_nowhere_and_holds_every_node_address() -> None:
    # RFC 2544's benchmarking range: neither private (so never a real LAN) nor global.
    benchmarking = ipaddress.IPv4Network("198.18.0.0/15")
    assert node.NODE_SUBNET.subnet_of(benchmarking)
    addresses = [node.NODE_IP, *node.POD_RANGE]
    assert all(ipaddress.ip_address(a) in node.NODE_SUBNET for a in addresses)
    plugin = node.cni_config(LAYOUT)["plugins"][0]
    assert plugin["ipMasq"] is False  # no NAT: nothing leaves the namespace
    (pod_range,) = plugin["ipam"]["ranges"][0]
    assert pod_range["subnet"] == str(node.NODE_SUBNET)
    assert pod_range["gateway"] == node.NODE_IP


def test_containerd_never_pulls_and_runs_with_what_this_machine_allows() -> None:
    config = tomllib.loads(node.containerd_config(LAYOUT, "localhost/hypersend/pause:1"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/hypersend/pause:1"
    assert cri["restrict_oom_score_adj"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    # Everything on disk stays in the node's state dir; the rest is in its private /run.
    assert config["root"].startswith("/state/node/")
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)
    assert cri["cni"]["conf_dir"].startswith("/state/node/")
    assert config["state"].startswith("/run/")
    assert runc["options"]["Root"].startswith("/run/")


def test_the_kubelet_writes_nothing_host_wide_and_keeps_its_images() -> None:
    serving = (Path("/state/pki/kubelet.crt"), Path("/state/pki/kubelet.key"))
    config = node.kubelet_config(LAYOUT, Path("/state/pki/ca.crt"), serving)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == f"/{LAYOUT.cgroup_name}"
    assert config["oomScoreAdj"] == 0
    assert config["protectKernelDefaults"] is False
    assert config["address"] == node.NODE_IP
    assert config["readOnlyPort"] == 0
    assert config["clusterDNS"] == [node.NODE_IP]
    assert config["imageGCHighThresholdPercent"] == 100  # imported images can't be pulled back
    paths = [config[k] for k in ("resolvConf", "volumePluginDir", "tlsCertFile")]
    assert all(p.startswith("/state/") for p in paths)
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_the_sysctls_the_kubelet_wants_are_the_three_it_would_write() -> None:
    assert node.KUBELET_SYSCTLS == {
        "vm/overcommit_memory": "1",
        "kernel/panic": "10",
        "kernel/panic_on_oops": "1",
    }
    assert set(node.PRIVATE_TMPFS) == {"/run", "/var/lib", "/var/log"}


def test_kube_proxy_leaves_host_wide_conntrack_settings_alone() -> None:
    config = node.kube_proxy_config(LAYOUT)
    assert config["mode"] == "iptables"
    assert config["oomScoreAdj"] == 0
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["conntrack"]["min"] == 0
    assert config["clusterCIDR"] == str(node.NODE_SUBNET)


def test_coredns_serves_only_cluster_names_on_the_node_address() -> None:
    text = node.corefile(LAYOUT)
    assert f"bind {node.NODE_IP}" in text
    assert "forward" not in text  # nothing to forward to: no name outside the cluster resolves


def test_the_api_server_reaches_the_node_only_through_the_relay() -> None:
    layout = cluster.Layout(Path("/state"))
    kwok = cluster.apiserver_args(Path("/bin/x"), layout, PORTS)
    real = cluster.apiserver_args(Path("/bin/x"), layout, PORTS, real_node=True)
    assert not any("egress" in a for a in kwok)
    flags = dict(a[2:].split("=", 1) for a in real[1:])
    assert flags["egress-selector-config-file"] == str(layout.egress_config)
    assert flags["advertise-address"] == node.NODE_IP
    assert flags["endpoint-reconciler-type"] == "lease"
    assert flags["authorization-mode"] == "Node,RBAC"
    assert flags["bind-address"] == "127.0.0.1"
    egress = node.egress_selector_config(LAYOUT)["egressSelections"]
    assert egress == [
        {
            "name": "cluster",
            "connection": {
                "proxyProtocol": "HTTPConnect",
                "transport": {"uds": {"udsName": str(LAYOUT.egress_socket)}},
            },
        }
    ]


def test_the_relay_serves_the_api_port_inside_the_node_and_proxies_only_into_it() -> None:
    argv = node.Node(Path("/state")).relay_argv(42, 6443, "10.96.0.0/16")
    assert "--netns=/proc/42/ns/net" in argv
    assert "--forward=node:0.0.0.0:6443=host:127.0.0.1:6443" in argv
    allowed = {a.split("=", 1)[1] for a in argv if a.startswith("--allow=")}
    assert allowed == {str(node.NODE_SUBNET), "10.96.0.0/16"}


def test_daemons_run_in_the_node_namespaces_and_cgroup() -> None:
    argv = node.in_cgroup(Path("/cg/cgroup.procs"), node.in_node(7, ["/bin/kubelet", "--v=1"]))
    assert argv[:4] == ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', "/cg/cgroup.procs"]
    assert argv[4:] == ["nsenter", "--target=7", "--mount", "--net", "--", "/bin/kubelet", "--v=1"]
    assert node.final_binary(argv) == "/bin/kubelet"
    assert node.final_binary(["sleep", "infinity"]) == "sleep"


MOUNTINFO = """\
24 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""


def test_cgroup_hierarchies_are_read_from_mountinfo() -> None:
    assert node.cgroup_mounts(MOUNTINFO) == [
        Path("/sys/fs/cgroup/cpu"),
        Path("/sys/fs/cgroup/pids"),
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified"),
    ]
    assert node.pids_hierarchy(MOUNTINFO) == Path("/sys/fs/cgroup/pids")
    with pytest.raises(node.NodeError):
        node.pids_hierarchy(MOUNTINFO.replace("pids", "memory"))


def test_two_checkouts_get_different_node_ids() -> None:
    assert node.node_id(Path("/a/state")) != node.node_id(Path("/b/state"))
    assert node.node_id(Path("/a/state")) == node.node_id(Path("/a/state"))
