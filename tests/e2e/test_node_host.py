"""The real node leaves the host as it found it: a cluster with a real node runs a pod, goes down,
and the host's mounts, links, routes, iptables rules, sysctls, cgroups and the fixed paths a
kubelet or containerd would write are exactly what they were before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypersend_devenv import images, node
from hypersend_devenv.cluster import LocalCluster, NodeImages

from tests.fixtures.kube import KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.real_node]


def sleeper_pod() -> dict[str, object]:
    """The sandbox image as a container: the smallest thing a restricted pod can run."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "sleeper",
                    "image": images.SANDBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


@pytest.mark.timeout(420)
def test_a_node_that_ran_a_pod_leaves_the_host_as_it_found_it(tmp_path: Path) -> None:
    (pause,) = images.ensure_images(log=print, names=[images.PAUSE_IMAGE.name])
    before = node.host_snapshot()
    local = LocalCluster(tmp_path / "cluster", real_node=True)
    try:
        local.up(
            timeout=300,
            node_images=NodeImages(images.SANDBOX_IMAGE, (pause,)),
        )
        cluster = KubeCluster(kubeconfig=local.kubeconfig, is_local=True, local=local)
        cluster.apply(sleeper_pod())
        cluster.wait_for(
            lambda: cluster.json("get", "pod", "sleeper")["status"].get("phase") == "Running",
            timeout=120,
            what="the sleeper pod Running",
        )
        during = node.host_snapshot()
        # The comparison can fail: while the node runs, its cgroups are on the host.
        assert during["cgroups"] != before["cgroups"]
        assert local.node.node_pids(), "the node's processes are in its cgroups"
        # `down` kills these before the API server stops (their watches held it 15 s).
        workloads = local.node.workload_pids()
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in workloads]
        assert any(b"pause" in command for command in commands), commands
        assert not any(b"containerd" in command or b"kubelet" in command for command in commands)
    finally:
        left = local.down()
    after = node.host_snapshot()
    assert left == []
    assert local.node.node_pids() == []
    assert not local.node.layout.root.exists()
    assert after == before, json.dumps({"before": before, "after": after}, indent=1)
