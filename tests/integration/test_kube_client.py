"""hypersend_operator.kube against the real API server (tests/fixtures/kube.py's cluster): round
trips keep every field, server-side apply takes fields over, label-selected watches, 410 on
a too-old version, optimistic create/replace, the leader fence, and the request counters."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator.kube import ApiError, Kube, NotLeader
from prometheus_client import REGISTRY

from tests.fixtures.kube import CustomMetrics, KubeCluster
from tests.fixtures.operator import install_crd, load_example

pytestmark = pytest.mark.integration

LABEL = "hypersend.io/kube-test"
EVENT_TIMEOUT = 30.0


def requests(verb: str, kind: str) -> float:
    labels = {"verb": verb, "kind": kind}
    return REGISTRY.get_sample_value("hypersend_operator_api_requests_total", labels) or 0.0


def configmap(namespace: str, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "data": {"k": "v"},
    }


def lease(namespace: str, holder: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader", "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


async def next_event(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> tuple[str, Any]:
    return await asyncio.wait_for(anext(events), EVENT_TIMEOUT)


async def test_round_trip_keeps_every_field(kube_client: Kube, kube_namespace: str) -> None:
    created = await kube_client.create(configmap(kube_namespace, "rt", {"a": "b"}))
    assert type(created) is dict
    got = await kube_client.get("v1", "ConfigMap", kube_namespace, "rt")
    assert got is not None
    assert type(got) is dict
    assert got["data"] == {"k": "v"}
    assert got["metadata"]["labels"] == {"a": "b"}
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    assert got["metadata"]["managedFields"]  # nothing dropped on the way
    assert await kube_client.get("v1", "ConfigMap", kube_namespace, "absent") is None


async def test_apply_forces_fields_from_another_manager(
    kube_client: Kube, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    doc = configmap(kube_namespace, "applied")
    await kube_client.apply(doc, manager="someone-else")
    doc["data"] = {"k": "ours"}
    with pytest.raises(ApiError) as conflict:
        await kube_client.apply(doc, force=False)
    assert conflict.value.conflict
    applied = await kube_client.apply(doc)
    assert applied["data"] == {"k": "ours"}
    managers = {m["manager"] for m in applied["metadata"]["managedFields"]}
    assert "hypersend-operator" in managers
    live = kube_cluster.json("get", "configmap", "applied", "-n", kube_namespace)
    assert live["data"] == {"k": "ours"}


async def test_custom_resource_status_round_trip(
    kube_client: Kube, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    install_crd(kube_cluster)
    cr = load_example("dev.yaml")
    cr["metadata"] = {"name": "demo", "namespace": kube_namespace}
    created = await kube_client.create(cr)
    status = {"phase": "Progressing", "observedGeneration": 1}
    patched = await kube_client.patch_status(
        cr["apiVersion"], "HypersendCluster", kube_namespace, "demo", status
    )
    assert patched is not None
    assert patched["status"]["phase"] == "Progressing"
    assert patched["spec"] == created["spec"]
    got = await kube_client.get(cr["apiVersion"], "HypersendCluster", kube_namespace, "demo")
    assert got is not None
    assert got["status"]["observedGeneration"] == 1
    assert (
        await kube_client.patch_status(
            cr["apiVersion"], "HypersendCluster", kube_namespace, "no", status
        )
        is None
    )


async def test_delete_says_whether_it_deleted(kube_client: Kube, kube_namespace: str) -> None:
    await kube_client.create(configmap(kube_namespace, "gone"))
    assert await kube_client.delete("v1", "ConfigMap", kube_namespace, "gone")
    assert not await kube_client.delete("v1", "ConfigMap", kube_namespace, "gone")


async def test_list_versioned_and_label_selected_watch(
    kube_client: Kube, kube_namespace: str
) -> None:
    selector = f"{LABEL}=yes"
    await kube_client.create(configmap(kube_namespace, "before", {LABEL: "yes"}))
    items, version = await kube_client.list_versioned("v1", "ConfigMap", kube_namespace, selector)
    assert [i["metadata"]["name"] for i in items] == ["before"]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in items)
    assert version.isdigit()

    events = kube_client.watch("v1", "ConfigMap", None, selector, version, timeout_seconds=60)
    try:
        # The unlabelled ones go first: unfiltered, their events would come before ours.
        await kube_client.create(configmap(kube_namespace, "other"))
        await kube_client.create(configmap(kube_namespace, "other-label", {LABEL: "no"}))
        await kube_client.create(configmap(kube_namespace, "mine", {LABEL: "yes"}))
        await kube_client.merge_patch(
            {**configmap(kube_namespace, "mine"), "data": {"k": "changed"}}
        )
        await kube_client.delete("v1", "ConfigMap", kube_namespace, "mine")
        seen = [await next_event(events) for _ in range(3)]
    finally:
        await events.aclose()
    assert [(t, o["metadata"]["name"]) for t, o in seen] == [
        ("ADDED", "mine"),
        ("MODIFIED", "mine"),
        ("DELETED", "mine"),
    ]
    assert seen[1][1]["data"] == {"k": "changed"}


async def test_watch_ends_after_its_timeout(kube_client: Kube, kube_namespace: str) -> None:
    _, version = await kube_client.list_versioned("v1", "ConfigMap", kube_namespace, None)
    before = requests("watch", "ConfigMap")
    events = kube_client.watch("v1", "ConfigMap", kube_namespace, None, version, timeout_seconds=1)
    got = [e async for e in events]
    assert got == []
    assert requests("watch", "ConfigMap") == before + 1


def compact_etcd(cluster: KubeCluster) -> None:
    """Compact the local cluster's etcd to its current revision (what the API server does every
    5 minutes), so older resourceVersions are gone."""
    assert cluster.local is not None
    state = cluster.local.load_state()
    assert state is not None
    base = f"http://127.0.0.1:{state.ports.etcd_client}/v3/kv"

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{base}/{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.load(resp)
            return answer

    revision = post("range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"]
    post("compaction", {"revision": revision, "physical": True})


async def test_watch_from_a_compacted_version_raises_410(
    kube_client: Kube, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    if kube_cluster.local is None:
        pytest.skip("compacts the local cluster's etcd")
    # Events have no watch cache in the API server (its default --watch-cache-sizes), so their
    # watches read etcd, where a compacted version is gone. (ConfigMaps from version "1" are
    # served from the watch cache's initial state on a young cluster: no 410 to provoke there.)
    involved = await kube_client.create(configmap(kube_namespace, "old"))
    await kube_client.post_event(involved, "Normal", "Test", "before compaction")
    await asyncio.to_thread(compact_etcd, kube_cluster)
    events = kube_client.watch("v1", "Event", kube_namespace, None, "1", timeout_seconds=30)
    try:
        with pytest.raises(ApiError) as gone:
            await next_event(events)
    finally:
        await events.aclose()
    assert gone.value.code == 410, gone.value


class CuttableProxy:
    """A TCP relay on 127.0.0.1 in front of the API server (TLS passes through), whose
    connections the test can cut, as a network drop or a restarting API server would."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_watch_raises_0_when_the_connection_drops(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.hostname is not None
    assert server.port is not None
    proxy = CuttableProxy((server.hostname, server.port))
    port = await proxy.start()
    config["clusters"][0]["cluster"]["server"] = f"https://{server.hostname}:{port}"
    proxied = tmp_path / "kubeconfig"
    proxied.write_text(yaml.safe_dump(config))
    kube_client = Kube.from_env(str(proxied))
    try:
        _, version = await kube_client.list_versioned("v1", "ConfigMap", kube_namespace, None)
        events = kube_client.watch("v1", "ConfigMap", kube_namespace, None, version, 60)
        await kube_client.create(configmap(kube_namespace, "seen"))
        kind, obj = await next_event(events)
        assert (kind, obj["metadata"]["name"]) == ("ADDED", "seen")
        proxy.cut()
        with pytest.raises(ApiError) as dropped:
            await next_event(events)
        assert dropped.value.code == 0, dropped.value
        assert dropped.value.transient
    finally:
        await kube_client.close()
        await proxy.close()


async def test_create_and_replace_conflicts(kube_client: Kube, kube_namespace: str) -> None:
    first = await kube_client.create(lease(kube_namespace, "a"))
    with pytest.raises(ApiError) as exists:
        await kube_client.create(lease(kube_namespace, "b"))
    assert exists.value.conflict

    renewed = {**first, "spec": {**first["spec"], "holderIdentity": "a2"}}
    second = await kube_client.replace(renewed)
    assert second["spec"]["holderIdentity"] == "a2"
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]

    stale = {**first, "spec": {**first["spec"], "holderIdentity": "b"}}  # first's version
    with pytest.raises(ApiError) as moved_on:
        await kube_client.replace(stale)
    assert moved_on.value.conflict
    got = await kube_client.get("coordination.k8s.io/v1", "Lease", kube_namespace, "leader")
    assert got is not None
    assert got["spec"]["holderIdentity"] == "a2"


async def test_fence_blocks_writes_but_not_the_lease(
    kube_client: Kube, kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    leader = False
    kube_client.set_fence(lambda: leader)
    sent = requests("apply", "ConfigMap")
    writes = REGISTRY.get_sample_value(
        "hypersend_operator_api_write_requests_total", {"verb": "patch", "kind": "ConfigMap"}
    )
    with pytest.raises(NotLeader):
        await kube_client.apply(configmap(kube_namespace, "fenced"))
    with pytest.raises(NotLeader):
        await kube_client.create(configmap(kube_namespace, "fenced"))
    with pytest.raises(NotLeader):
        await kube_client.delete("v1", "ConfigMap", kube_namespace, "fenced")
    with pytest.raises(NotLeader):
        await kube_client.post_event(configmap(kube_namespace, "fenced"), "Normal", "Test", "no")
    assert requests("apply", "ConfigMap") == sent  # nothing was sent
    assert (
        REGISTRY.get_sample_value(
            "hypersend_operator_api_write_requests_total", {"verb": "patch", "kind": "ConfigMap"}
        )
        == writes
    )
    got = kube_cluster.kubectl("get", "configmap", "fenced", "-n", kube_namespace, check=False)
    assert got.returncode != 0

    # Reads are not fenced; the elector's Lease writes go through.
    assert await kube_client.get("v1", "ConfigMap", kube_namespace, "fenced") is None
    held = await kube_client.create(lease(kube_namespace, "me"))
    await kube_client.replace(held)

    leader = True
    await kube_client.apply(configmap(kube_namespace, "fenced"))
    assert await kube_client.get("v1", "ConfigMap", kube_namespace, "fenced") is not None


async def test_every_request_is_counted(kube_client: Kube, kube_namespace: str) -> None:
    name = f"c-{uuid.uuid4().hex[:6]}"
    before = {
        v: requests(v, "ConfigMap") for v in ("get", "list", "apply", "patch", "create", "delete")
    }
    await kube_client.create(configmap(kube_namespace, name))
    await kube_client.get("v1", "ConfigMap", kube_namespace, name)
    await kube_client.get("v1", "ConfigMap", kube_namespace, "absent")
    await kube_client.list("v1", "ConfigMap", kube_namespace)
    await kube_client.apply(configmap(kube_namespace, name))
    await kube_client.merge_patch(configmap(kube_namespace, name))
    await kube_client.delete("v1", "ConfigMap", kube_namespace, name)
    after = {v: requests(v, "ConfigMap") - n for v, n in before.items()}
    assert after == {"get": 2, "list": 1, "apply": 1, "patch": 1, "create": 1, "delete": 1}


async def test_watch_events_and_bytes_are_counted(kube_client: Kube, kube_namespace: str) -> None:
    _, version = await kube_client.list_versioned("v1", "ConfigMap", kube_namespace, f"{LABEL}=m")
    added = REGISTRY.get_sample_value(
        "hypersend_operator_watch_events_total", {"kind": "ConfigMap", "type": "ADDED"}
    )
    size = REGISTRY.get_sample_value("hypersend_operator_watch_bytes_total", {"kind": "ConfigMap"})
    events = kube_client.watch("v1", "ConfigMap", kube_namespace, f"{LABEL}=m", version, 60)
    try:
        await kube_client.create(configmap(kube_namespace, "counted", {LABEL: "m"}))
        await next_event(events)
    finally:
        await events.aclose()
    after_added = REGISTRY.get_sample_value(
        "hypersend_operator_watch_events_total", {"kind": "ConfigMap", "type": "ADDED"}
    )
    after_size = REGISTRY.get_sample_value(
        "hypersend_operator_watch_bytes_total", {"kind": "ConfigMap"}
    )
    assert after_added == (added or 0) + 1
    assert after_size is not None
    assert after_size > (size or 0) + 50


async def test_unknown_kind_is_not_served(kube_client: Kube) -> None:
    with pytest.raises(ApiError) as missing:
        await kube_client.kind("example.com/v1", "Nothing")
    assert missing.value.code == 404


async def test_pod_metric_reads_the_custom_metrics_api(
    kube_client: Kube, kube_namespace: str, custom_metrics: CustomMetrics
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "chat-0", "namespace": kube_namespace, "labels": {"app": "chat"}},
        "spec": {"containers": [{"name": "chat", "image": "chat:1"}]},
    }
    await kube_client.create(pod)
    await asyncio.to_thread(
        custom_metrics.set_pod_metric, kube_namespace, "chat-0", "hypersend_test_metric", 1.5
    )
    items = await kube_client.pod_metric(kube_namespace, "hypersend_test_metric", "app=chat")
    assert [(i["describedObject"]["name"], i["value"]) for i in items] == [("chat-0", "1500m")]
    assert (
        await kube_client.pod_metric(kube_namespace, "hypersend_test_metric", "app=nothing") == []
    )
