"""A HypersendCluster on real pods (marker real_node): the images built here run under the
restricted Pod Security Standard, the kubelet really calls the probes, and clients that reach the
chat Service as in-cluster clients do lose no acknowledged message when a chat pod is deleted,
a chat container is killed, the chat image is rolled, or the Redis pod restarts.

The tests share one cluster (real pods take seconds to start) and run in file order; each
leaves it Ready. Clients are `bench/zero_loss.py`'s: members in rooms sending continuously,
retrying until acked, reconnecting and resuming; each test prints its report.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypersend_devenv import images

from bench.zero_loss import Report, ZeroLossChecker
from tests.fixtures.kube import KubeCluster
from tests.fixtures.node import relay_to_node, service_address
from tests.fixtures.operator import ClusterHelper

pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.timeout(420)]

CHAT_PORT = 8080
CONNECTIONS = "hypersend_websocket_connections"


def chat_manifest(hsc: ClusterHelper) -> dict[str, Any]:
    """examples/dev.yaml with two fixed chat pods (deleting one leaves one) and a rate limit
    the checker's members stay under."""
    doc = hsc.manifest()
    spec = doc["spec"]
    spec["autoscaling"] = {"enabled": False}
    spec["chat"]["replicas"] = 2
    spec["chat"]["rateLimit"] = {"requestsPerMinute": 6000}
    return doc


@pytest.fixture(scope="module")
def chat(node_hsc: ClusterHelper) -> ClusterHelper:
    node_hsc.apply(chat_manifest(node_hsc))
    node_hsc.wait_phase("Ready", timeout=300)
    return node_hsc


@pytest.fixture(scope="module")
def chat_url(chat: ClusterHelper, node_cluster: KubeCluster) -> Iterator[str]:
    with service_address(node_cluster, chat.namespace, f"{chat.name}-chat", CHAT_PORT) as address:
        yield f"http://{address}"


async def serving(url: str, in_a_row: int = 6, within: float = 120.0) -> None:
    """Wait until the Service answers /readyz `in_a_row` times running: kube-proxy spreads the
    connections, so every pod behind it is in its rules and ready (after a test moved pods)."""
    ok = 0
    async with asyncio.timeout(within), httpx.AsyncClient(trust_env=False, timeout=5) as http:
        while ok < in_a_row:
            try:
                ok = ok + 1 if (await http.get(f"{url}/readyz")).status_code == 200 else 0
            except httpx.TransportError:
                ok = 0
            if ok == 0:
                await asyncio.sleep(0.5)


@pytest.fixture
async def checker(chat_url: str) -> AsyncIterator[ZeroLossChecker]:
    await serving(chat_url)
    zero_loss = ZeroLossChecker([chat_url], rooms=2, members=3, interval=0.2)
    await zero_loss.setup()
    await zero_loss.start(within=90)
    yield zero_loss
    await zero_loss.close()


def pods(cluster: KubeCluster, namespace: str, component: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/component={component}"
    items: list[dict[str, Any]] = cluster.json("get", "pods", "-n", namespace, "-l", selector)[
        "items"
    ]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def all_ready(cluster: KubeCluster, namespace: str, component: str, count: int) -> bool:
    found = pods(cluster, namespace, component)
    return len(found) == count and all(is_ready(p) for p in found)


def pod_connections(cluster: KubeCluster, pod: dict[str, Any]) -> float:
    """The pod's own `hypersend_websocket_connections`, read from its /metrics."""
    assert cluster.local is not None
    with relay_to_node(cluster.local, f"{pod['status']['podIP']}:{CHAT_PORT}") as address:
        text = httpx.get(f"http://{address}/metrics", timeout=10).text
    found = re.search(rf"^{CONNECTIONS}(?:{{[^}}]*}})? (\S+)$", text, flags=re.MULTILINE)
    assert found is not None, f"no {CONNECTIONS} in /metrics of {pod['metadata']['name']}"
    return float(found.group(1))


async def finish(checker: ZeroLossChecker, what: str) -> Report:
    report = await checker.finish(settle=60)
    print(f"\n[{what}] {report.format()}")
    assert report.ok, report.problems()
    return report


def container_pids(cluster: KubeCluster, pod: dict[str, Any]) -> list[int]:
    """Host pids of the pod's containers' main processes (containerd's task list)."""
    assert cluster.local is not None
    tasks = cluster.local.node.ctr("tasks", "list")
    pids = {line.split()[0]: int(line.split()[1]) for line in tasks.splitlines()[1:] if line}
    ids = [c["containerID"].split("://", 1)[1] for c in pod["status"]["containerStatuses"]]
    return [pids[i] for i in ids]


def test_every_workload_runs_under_the_restricted_profile_as_non_root(
    chat: ClusterHelper, node_cluster: KubeCluster
) -> None:
    namespace = node_cluster.json("get", "namespace", chat.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    running = node_cluster.json("get", "pods", "-n", chat.namespace)["items"]
    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in running)
    assert components == ["chat", "chat", "mongo", "redis"]
    for pod in running:
        name = pod["metadata"]["name"]
        assert is_ready(pod), name
        if node_cluster.local is None:
            continue  # the kernel's view below needs the node's host
        # What the kernel enforces (the images have no shell to ask from inside).
        for pid in container_pids(node_cluster, pod):
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
            uids = fields["Uid"].split()
            assert "0" not in uids, f"{name} runs as root: {uids}"
            assert fields["NoNewPrivs"].strip() == "1", f"{name} may gain privileges"
            assert int(fields["CapEff"], 16) == 0, f"{name} keeps capabilities"
    # The namespace really enforces: a pod asking for root is refused at admission.
    refused = node_cluster.kubectl(
        "run", "root-shell", "-n", chat.namespace, f"--image={images.SERVER_IMAGE}",
        "--overrides", json.dumps({"spec": {"securityContext": {"runAsUser": 0}}}),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr


def test_the_kubelet_calls_the_probes_a_chat_pod_without_its_database_turns_not_ready(
    chat: ClusterHelper, node_cluster: KubeCluster
) -> None:
    """MongoDB is what a chat pod cannot serve without (Redis only degrades fan-out): with the
    MongoDB-wire pod gone, /readyz fails, the kubelet marks the chat pods NotReady, and back."""
    ns, mongo = chat.namespace, f"{chat.name}-mongo"
    node_cluster.kubectl("annotate", "hypersendcluster", chat.name, "-n", ns,
                         "hypersend.io/paused=true", "--overwrite")  # fmt: skip
    chat.wait_for(
        lambda: (chat.condition("ReconciliationPaused") or {}).get("status") == "True",
        "the operator to pause (it would scale MongoDB back)",
        timeout=60,
    )
    try:
        node_cluster.kubectl("scale", "statefulset", mongo, "-n", ns, "--replicas=0")
        chat.wait_for(
            lambda: all(not is_ready(p) for p in pods(node_cluster, ns, "chat")),
            "every chat pod NotReady without MongoDB",
            timeout=120,
        )
        reasons = node_cluster.kubectl("get", "events", "-n", ns,
                                       "--field-selector=reason=Unhealthy").stdout  # fmt: skip
        assert "Readiness probe failed" in reasons
    finally:
        node_cluster.kubectl("scale", "statefulset", mongo, "-n", ns, "--replicas=1")
        node_cluster.kubectl("annotate", "hypersendcluster", chat.name, "-n", ns,
                             "hypersend.io/paused-")  # fmt: skip
    chat.wait_for(lambda: all_ready(node_cluster, ns, "chat", 2), "chat pods Ready again", 180)
    chat.wait_phase("Ready", timeout=180)


async def test_deleting_a_chat_pod_moves_its_clients_without_losing_a_message(
    chat: ClusterHelper, node_cluster: KubeCluster, checker: ZeroLossChecker
) -> None:
    ns = chat.namespace
    await checker.wait_acked(20)
    by_pod = {
        p["metadata"]["name"]: pod_connections(node_cluster, p)
        for p in pods(node_cluster, ns, "chat")
    }
    victim = max(by_pod, key=lambda name: by_pod[name])
    assert by_pod[victim] > 0, by_pod
    node_cluster.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
    chat.wait_for(
        lambda: (
            victim not in {p["metadata"]["name"] for p in pods(node_cluster, ns, "chat")}
            and all_ready(node_cluster, ns, "chat", 2)
        ),
        "the deleted pod replaced and both chat pods Ready",
        timeout=180,
    )
    await checker.wait_acked(checker.acked_count() + 20)
    report = await finish(checker, f"chat pod {victim} deleted, {by_pod[victim]:.0f} sockets on it")
    assert report.closes.get("1012", 0) >= 1, "the deleted pod's sockets were drained with 1012"


async def test_a_killed_chat_container_is_restarted_and_the_cluster_reports_it(
    chat: ClusterHelper, node_cluster: KubeCluster, checker: ZeroLossChecker
) -> None:
    if node_cluster.local is None:
        pytest.skip("kills the container's process from the node's host")
    ns = chat.namespace
    await checker.wait_acked(10)
    pod = pods(node_cluster, ns, "chat")[0]
    name = pod["metadata"]["name"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    (pid,) = container_pids(node_cluster, pod)
    os.kill(pid, signal.SIGKILL)
    chat.wait_for(
        lambda: chat.status().get("phase") != "Ready",
        "the cluster to report a chat pod down",
        timeout=60,
    )

    def restarted() -> bool:
        current = node_cluster.json("get", "pod", name, "-n", ns)
        return bool(
            current["status"]["containerStatuses"][0]["restartCount"] > restarts
            and is_ready(current)
        )

    chat.wait_for(restarted, f"the kubelet to restart {name}", timeout=120)
    chat.wait_phase("Ready", timeout=120)
    await checker.wait_acked(checker.acked_count() + 20)
    await finish(checker, f"chat container in {name} killed")


async def test_a_rolling_update_to_a_new_image_tag_loses_no_acknowledged_message(
    chat: ClusterHelper, node_cluster: KubeCluster, checker: ZeroLossChecker
) -> None:
    if node_cluster.local is None:
        pytest.skip("tags an image in the node's containerd")
    ns = chat.namespace
    new_tag = f"{images.SERVER_REPOSITORY}:{images.VERSION}-rollout"
    node_cluster.local.node.ctr("images", "tag", "--force", images.SERVER_IMAGE, new_tag)
    await checker.wait_acked(10)
    old = {p["metadata"]["name"] for p in pods(node_cluster, ns, "chat")}
    node_cluster.kubectl("patch", "hypersendcluster", chat.name, "-n", ns, "--type=merge",
                         "-p", json.dumps({"spec": {"chat": {"image": new_tag}}}))  # fmt: skip

    def rolled() -> bool:
        current = pods(node_cluster, ns, "chat")
        return (
            len(current) == 2
            and not old & {p["metadata"]["name"] for p in current}
            and all(p["spec"]["containers"][0]["image"] == new_tag and is_ready(p) for p in current)
        )

    chat.wait_for(rolled, "both chat pods replaced by the new image", timeout=240)
    await checker.wait_acked(checker.acked_count() + 20)
    report = await finish(checker, "rolling update to a new image tag")
    assert report.closes.get("1012", 0) >= 1, "the old pods drained their sockets"
    chat.wait_phase("Ready", timeout=120)


async def test_a_restarted_redis_pod_costs_no_acknowledged_message(
    chat: ClusterHelper, node_cluster: KubeCluster, checker: ZeroLossChecker
) -> None:
    ns = chat.namespace
    await checker.wait_acked(10)
    (redis,) = pods(node_cluster, ns, "redis")
    node_cluster.kubectl("delete", "pod", redis["metadata"]["name"], "-n", ns, "--wait=false")
    chat.wait_for(
        lambda: (
            [p["metadata"]["name"] for p in pods(node_cluster, ns, "redis") if is_ready(p)]
            not in ([], [redis["metadata"]["name"]])
        ),
        "a new Redis pod Ready",
        timeout=120,
    )
    await checker.wait_acked(checker.acked_count() + 20)
    await finish(checker, "Redis pod restarted")
    chat.wait_phase("Ready", timeout=120)
