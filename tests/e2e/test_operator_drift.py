"""Drift: fields the operator owns come back after someone edits them; fields others own (the
HPA's replicas, `kubectl rollout restart`'s annotation) are left alone; deleted children return."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.operator import RESYNC_SECONDS, ClusterHelper

pytestmark = pytest.mark.e2e

IMAGE = "ghcr.io/hypersend/chatserver:0.1.0"
RECONCILES = "hypersend_operator_reconciles_total"


@pytest.fixture
def ready(hsc: ClusterHelper) -> ClusterHelper:
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=120)
    return hsc


def chat_container(hsc: ClusterHelper) -> dict[str, Any]:
    containers = hsc.get("deployment", "demo-chat")["spec"]["template"]["spec"]["containers"]
    return dict(next(c for c in containers if c["name"] == "chat"))


def wait_for_resyncs(hsc: ClusterHelper, keep: Callable[[], None] = lambda: None) -> None:
    """Return once this cluster has had two resync passes more: the first may have begun before
    the call, the second began after it, so whatever a pass would have changed by now, it has.
    Every cluster the operator serves is resynced once per period, hence two per cluster."""
    clusters = len(hsc.kube.json("get", "hypersendclusters", "-A")["items"])
    target = hsc.operator.counter(RECONCILES, trigger="resync") + 2 * clusters + 1

    def resynced() -> bool:
        keep()
        return hsc.operator.counter(RECONCILES, trigger="resync") >= target

    hsc.wait_for(resynced, "two resync passes", timeout=4 * RESYNC_SECONDS + 30)


def drift_events(hsc: ClusterHelper) -> list[str]:
    return [
        e["message"]
        for e in hsc.kube.json("get", "events", "-n", hsc.namespace)["items"]
        if e["reason"] == "DriftCorrected"
    ]


def test_edited_image_is_reverted(ready: ClusterHelper) -> None:
    hsc = ready
    assert chat_container(hsc)["image"] == IMAGE
    hsc.kube.kubectl(
        "set", "image", "deployment/demo-chat", "chat=evil:latest", "-n", hsc.namespace
    )
    hsc.wait_for(lambda: chat_container(hsc)["image"] == IMAGE, "image reverted", timeout=30)
    assert any("Deployment demo-chat" in m for m in drift_events(hsc))


def test_edited_label_is_reverted_foreign_label_kept(ready: ClusterHelper) -> None:
    hsc = ready
    ns = hsc.namespace
    hsc.kube.kubectl("label", "deployment/demo-chat", "team=chat", "-n", ns)
    hsc.kube.kubectl(
        "label", "deployment/demo-chat", "app.kubernetes.io/part-of=other", "--overwrite", "-n", ns
    )

    def labels() -> dict[str, str]:
        return dict(hsc.get("deployment", "demo-chat")["metadata"]["labels"])

    hsc.wait_for(
        lambda: labels()["app.kubernetes.io/part-of"] == "hypersend", "label reverted", timeout=30
    )
    assert labels()["team"] == "chat"  # not ours: never touched


def test_edited_service_port_is_reverted(ready: ClusterHelper) -> None:
    hsc = ready
    before = hsc.get("service", "demo-chat")["spec"]["ports"]
    patch = [{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]
    # The patched object as the API server stored it (a later read may already see the revert).
    patched = hsc.kube.kubectl(
        "patch", "service", "demo-chat", "-n", hsc.namespace, "--type=json", "-p",
        json.dumps(patch), "-o", "json",
    ).stdout  # fmt: skip
    assert json.loads(patched)["spec"]["ports"][0]["port"] == 9999

    def ports() -> list[int]:
        return [p["port"] for p in hsc.get("service", "demo-chat")["spec"]["ports"]]

    hsc.wait_for(lambda: ports() == [p["port"] for p in before], "port reverted", timeout=30)


def test_rollout_restart_is_not_reverted(ready: ClusterHelper) -> None:
    hsc = ready
    hsc.kube.kubectl("rollout", "restart", "deployment/demo-chat", "-n", hsc.namespace)
    restarted = hsc.get("deployment", "demo-chat")
    stamp = restarted["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    generation = restarted["metadata"]["generation"]
    hsc.wait_phase("Ready", timeout=60)
    wait_for_resyncs(hsc)  # the passes that would revert it
    hsc.wait_phase("Ready", timeout=30)
    after = hsc.get("deployment", "demo-chat")
    annotations = after["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == stamp
    assert after["metadata"]["generation"] == generation  # no second rollout by the operator
    assert not drift_events(hsc)


def test_hpa_replicas_are_not_fought(ready: ClusterHelper) -> None:
    hsc = ready
    deployment = hsc.kube.json(
        "get", "deployment", "demo-chat", "-n", hsc.namespace, "--show-managed-fields"
    )
    assert deployment["spec"]["replicas"] == 1
    managers = {
        f["manager"]
        for f in deployment["metadata"]["managedFields"]
        if "f:replicas" in json.dumps(f.get("fieldsV1", {}).get("f:spec", {}))
    }
    assert "hypersend-operator" not in managers  # autoscaling on: replicas are the HPA's

    def scaled() -> bool:
        hsc.feed_connections(2500)  # 2.5x the target per pod: the HPA wants 3 (the max)
        return bool(hsc.get("deployment", "demo-chat")["spec"]["replicas"] == 3)

    hsc.wait_for(scaled, "HPA scaled the chat Deployment to 3", timeout=60)
    hsc.wait_phase("Ready", timeout=60)  # feeds the target value: the HPA holds at 3
    wait_for_resyncs(hsc, keep=lambda: hsc.feed_connections(2500))
    assert hsc.get("deployment", "demo-chat")["spec"]["replicas"] == 3
    assert hsc.status()["chat"]["replicas"] == 3


def test_turning_autoscaling_off_removes_the_hpa_and_fixes_replicas(ready: ClusterHelper) -> None:
    hsc = ready
    doc = hsc.manifest()
    doc["spec"]["autoscaling"]["enabled"] = False
    doc["spec"]["chat"]["replicas"] = 2
    hsc.apply(doc)
    hsc.wait_for(
        lambda: not hsc.exists("horizontalpodautoscaler", "demo-chat"), "HPA removed", timeout=30
    )
    hsc.wait_for(lambda: hsc.get("deployment", "demo-chat")["spec"]["replicas"] == 2, "2 replicas")
    status = hsc.wait_phase("Ready", timeout=60)
    autoscaling = next(c for c in status["conditions"] if c["type"] == "AutoscalingReady")
    assert autoscaling["reason"] == "AutoscalingDisabled"


@pytest.mark.parametrize(
    ("kind", "name"),
    [("service", "demo-chat"), ("configmap", "demo-chat"), ("deployment", "demo-redis")],
)
def test_deleted_child_is_recreated(ready: ClusterHelper, kind: str, name: str) -> None:
    hsc = ready
    uid = hsc.get(kind, name)["metadata"]["uid"]
    hsc.kube.kubectl("delete", kind, name, "-n", hsc.namespace)

    def recreated() -> bool:
        proc = hsc.kube.kubectl("get", kind, name, "-n", hsc.namespace, "-o", "json", check=False)
        return proc.returncode == 0 and json.loads(proc.stdout)["metadata"]["uid"] != uid

    hsc.wait_for(recreated, f"{kind}/{name} recreated", timeout=30)
    hsc.wait_phase("Ready", timeout=60)


def test_deleted_generated_secret_keeps_the_cluster_consistent(ready: ClusterHelper) -> None:
    """A deleted JWT Secret is recreated (with a new key: the old one is gone for good)."""
    hsc = ready
    hsc.kube.kubectl("delete", "secret", "demo-jwt", "-n", hsc.namespace)
    hsc.wait_for(lambda: hsc.exists("secret", "demo-jwt"), "JWT Secret recreated", timeout=40)


def test_optional_parts_are_created_and_pruned(ready: ClusterHelper) -> None:
    """Ingress and NetworkPolicies appear when enabled and go when disabled (Secrets stay)."""
    hsc = ready
    doc = hsc.manifest()
    doc["spec"]["ingress"] = {"enabled": True, "host": "chat.example.test"}
    doc["spec"]["networkPolicy"] = {"enabled": True}
    hsc.apply(doc)

    def names(kind: str) -> set[str]:
        items = hsc.kube.json("get", kind, "-n", hsc.namespace)["items"]
        return {i["metadata"]["name"] for i in items}

    hsc.wait_for(lambda: "demo-chat" in names("ingress"), "Ingress created", timeout=30)
    hsc.wait_for(
        lambda: {"demo-chat", "demo-redis", "demo-mongo"} <= names("networkpolicy"),
        "NetworkPolicies created",
        timeout=30,
    )
    hsc.wait_phase("Ready", timeout=60)

    off = hsc.manifest()  # the Ingress off by default; NetworkPolicies on unless opted out
    off["spec"]["networkPolicy"] = {"enabled": False}
    hsc.apply(off)
    hsc.wait_for(lambda: not names("ingress"), "Ingress pruned", timeout=30)
    hsc.wait_for(lambda: not names("networkpolicy"), "NetworkPolicies pruned", timeout=30)
    assert {"demo-jwt", "demo-mongo-credentials"} <= names("secret")
    deleted = [
        e["message"]
        for e in hsc.kube.json("get", "events", "-n", hsc.namespace)["items"]
        if e["reason"] == "Deleted"
    ]
    assert any("Ingress demo-chat" in m for m in deleted)


def test_restart_annotation_on_the_cluster_rolls_chat_pods_once(ready: ClusterHelper) -> None:
    """ArgoCD's restart action can only patch the CR: its stamp rolls the chat pods once."""
    hsc = ready
    generation = hsc.get("deployment", "demo-chat")["metadata"]["generation"]
    stamp = "2026-11-25T10:00:00Z"
    hsc.kube.kubectl(
        "annotate", "hypersendcluster", "demo", f"hypersend.io/restartedAt={stamp}",
        "-n", hsc.namespace,
    )  # fmt: skip

    def template_stamp() -> str | None:
        meta = hsc.get("deployment", "demo-chat")["spec"]["template"]["metadata"]
        return meta.get("annotations", {}).get("hypersend.io/restartedAt")  # type: ignore[no-any-return]

    hsc.wait_for(lambda: template_stamp() == stamp, "restart stamp on the pod template", 30)
    hsc.wait_phase("Ready", timeout=60)
    wait_for_resyncs(hsc)  # the passes that would roll the pods a second time
    assert hsc.get("deployment", "demo-chat")["metadata"]["generation"] == generation + 1
    reasons = {e["reason"] for e in hsc.kube.json("get", "events", "-n", hsc.namespace)["items"]}
    assert "Restarted" in reasons


def test_turning_autoscaling_on_keeps_the_running_pods(ready: ClusterHelper) -> None:
    """Switching the HPA on must not drop spec.replicas (SSA would reset it to 1 pod)."""
    hsc = ready
    doc = hsc.manifest()
    doc["spec"]["autoscaling"]["enabled"] = False
    doc["spec"]["chat"]["replicas"] = 3
    hsc.apply(doc)
    hsc.wait_for(lambda: hsc.get("deployment", "demo-chat")["spec"]["replicas"] == 3, "3 replicas")
    hsc.wait_phase("Ready", timeout=60)

    doc["spec"]["autoscaling"]["enabled"] = True  # dev.yaml allows 1-3 pods
    hsc.apply(doc)
    hsc.wait_for(lambda: hsc.exists("horizontalpodautoscaler", "demo-chat"), "HPA created")

    def handed_over() -> dict[str, Any] | None:
        deployment = hsc.kube.json(
            "get", "deployment", "demo-chat", "-n", hsc.namespace, "--show-managed-fields"
        )
        managers = {
            m["manager"]
            for m in deployment["metadata"]["managedFields"]
            if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})
        }
        return deployment if "hypersend-operator" not in managers else None

    deployment = hsc.wait_for(handed_over, "spec.replicas released by the operator", timeout=30)
    assert deployment["spec"]["replicas"] == 3
    hsc.feed_connections()  # the target per pod: the HPA keeps 3
    hsc.wait_phase("Ready", timeout=60)
    assert hsc.get("deployment", "demo-chat")["spec"]["replicas"] == 3
