"""Conditions that need someone to act: pause stops changes and says so; a missing Atlas Secret
degrades the cluster with a reason that says what to create, and it recovers once it exists."""

from __future__ import annotations

import pytest

from tests.fixtures.operator import ClusterHelper, load_example

RECONCILES = "hypersend_operator_reconciles_total"

pytestmark = pytest.mark.e2e


def test_pause_stops_changes_and_sets_the_condition(hsc: ClusterHelper) -> None:
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=120)
    ns = hsc.namespace

    hsc.kube.kubectl("annotate", "hypersendcluster", "demo", "hypersend.io/paused=true", "-n", ns)
    hsc.wait_for(lambda: hsc.status().get("phase") == "Paused", "phase Paused", timeout=30)
    paused = hsc.condition("ReconciliationPaused")
    assert paused is not None
    assert (paused["status"], paused["reason"]) == ("True", "PausedByAnnotation")

    # Neither a spec change nor drift is acted on while paused: the passes they start (an
    # update for the spec, a child event for the Deployment) leave both alone.
    op = hsc.operator
    updates = op.counter(RECONCILES, trigger="update", result="ok")
    config_before = hsc.get("configmap", "demo-chat")["data"]
    doc = hsc.manifest()
    doc["spec"]["chat"]["logLevel"] = "error"
    doc["metadata"]["annotations"] = {"hypersend.io/paused": "true"}
    hsc.kube.apply(doc)
    hsc.wait_for(
        lambda: op.counter(RECONCILES, trigger="update", result="ok") > updates,
        "the pass started by the spec change",
    )
    children = op.counter(RECONCILES, trigger="child", result="ok")
    hsc.kube.kubectl("set", "image", "deployment/demo-chat", "chat=other:1", "-n", ns)
    hsc.wait_for(
        lambda: op.counter(RECONCILES, trigger="child", result="ok") > children,
        "the pass started by the Deployment change",
    )
    assert hsc.get("configmap", "demo-chat")["data"] == config_before
    containers = hsc.get("deployment", "demo-chat")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "other:1"
    assert hsc.status()["phase"] == "Paused"

    # Resuming applies everything and drops the condition.
    hsc.kube.kubectl("annotate", "hypersendcluster", "demo", "hypersend.io/paused-", "-n", ns)
    status = hsc.wait_phase("Ready", timeout=120)
    assert "ReconciliationPaused" not in {c["type"] for c in status["conditions"]}
    containers = hsc.get("deployment", "demo-chat")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "ghcr.io/hypersend/chatserver:0.1.0"
    assert hsc.get("configmap", "demo-chat")["data"] != config_before


def atlas_cluster(hsc: ClusterHelper) -> dict[str, object]:
    doc = hsc.manifest()
    doc["spec"]["mongo"] = {
        "mode": "Atlas",
        "atlas": {"connectionSecretRef": {"name": "hypersend-atlas", "key": "uri"}},
    }
    return doc


def test_missing_atlas_secret_degrades_and_recovers(hsc: ClusterHelper) -> None:
    assert load_example("prod.yaml")["spec"]["mongo"]["mode"] == "Atlas"
    hsc.apply(atlas_cluster(hsc))

    def degraded() -> bool:
        hsc.feed_connections()
        return bool(hsc.status().get("phase") == "Degraded")

    hsc.wait_for(degraded, "phase Degraded", timeout=60)
    # The alert HypersendClusterNotReady reads this gauge.
    hsc.wait_for(lambda: ready_gauge(hsc) == 0, "hypersend_operator_cluster_ready 0", timeout=30)
    for type_ in ("Degraded", "Ready", "MongoReady"):
        cond = hsc.condition(type_)
        assert cond is not None
        assert cond["reason"] == "AtlasSecretMissing", cond
    mongo = hsc.condition("MongoReady")
    assert mongo is not None
    assert mongo["message"] == (
        f"secret hypersend-atlas not found in namespace {hsc.namespace}; create it with key uri"
    )
    assert not hsc.exists("statefulset", "demo-mongo")

    # A Secret without the key is still wrong, and says which key is missing.
    hsc.kube.kubectl(
        "create",
        "secret",
        "generic",
        "hypersend-atlas",
        "--from-literal=url=x",
        "-n",
        hsc.namespace,
    )
    hsc.wait_for(
        lambda: (hsc.condition("MongoReady") or {}).get("reason") == "AtlasSecretKeyMissing",
        "AtlasSecretKeyMissing",
        timeout=40,
    )

    hsc.kube.kubectl("delete", "secret", "hypersend-atlas", "-n", hsc.namespace)
    hsc.kube.kubectl(
        "create", "secret", "generic", "hypersend-atlas",
        "--from-literal=uri=mongodb+srv://user:pw@example.invalid/db", "-n", hsc.namespace,
    )  # fmt: skip
    status = hsc.wait_phase("Ready", timeout=60)
    mongo_ready = next(c for c in status["conditions"] if c["type"] == "MongoReady")
    assert mongo_ready["reason"] == "AtlasConfigured"
    # The user's Secret is referenced, never adopted.
    atlas = hsc.get("secret", "hypersend-atlas")
    assert not atlas["metadata"].get("ownerReferences")
    assert "mongodb+srv" not in str(hsc.status())
    hsc.wait_for(lambda: ready_gauge(hsc) == 1, "hypersend_operator_cluster_ready 1", timeout=30)

    # A deleted cluster's series goes with it (no stale NotReady alert, no ghost on dashboards).
    hsc.kube.kubectl("delete", "hypersendcluster", hsc.name, "-n", hsc.namespace, "--wait=true")
    hsc.wait_for(lambda: ready_gauge(hsc) is None, "ready gauge removed", timeout=30)


def ready_gauge(hsc: ClusterHelper) -> float | None:
    # The exposition writes labels sorted by name.
    key = (
        "hypersend_operator_cluster_ready{"
        f'hypersendcluster="{hsc.name}",hypersendcluster_namespace="{hsc.namespace}"'
        "}"
    )
    return hsc.operator.metrics().get(key)


def test_unbound_mongo_volume_is_named_in_mongo_ready(hsc: ClusterHelper) -> None:
    if not hsc.kube.is_local:
        pytest.skip("needs a cluster without a volume provisioner")
    doc = hsc.manifest()
    # A class nothing provisions and no volume has: the claim stays Pending.
    doc["spec"]["mongo"]["inCluster"]["storage"]["storageClassName"] = "no-such-class"
    hsc.kube.apply(doc)

    def pending() -> bool:
        return (hsc.condition("MongoReady") or {}).get("reason") == "VolumeClaimPending"

    try:
        hsc.wait_for(pending, "MongoReady VolumeClaimPending", timeout=90)
    except AssertionError as e:
        volumes = hsc.kube.kubectl("get", "pv,pvc", "-A", "-o", "wide").stdout
        raise AssertionError(f"{e}\nvolumes:\n{volumes}") from None
    mongo = hsc.condition("MongoReady")
    assert mongo is not None
    assert "PersistentVolumeClaim data-demo-mongo-0 is Pending" in mongo["message"]
    assert hsc.status()["phase"] == "Progressing"
