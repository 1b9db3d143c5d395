"""The in-cluster MongoDB's credentials follow `spec.mongo.deletePolicy` on the real API server
(issue #11): under Retain the credentials Secret outlives the CR with the volume, and a cluster
re-created under the same name reads the same passwords back and reattaches the same claim; under
Delete the Secret goes with the cluster. Switching the policy on a live CR adds or removes the
Secret's owner reference (server-side apply). On kwok nothing runs in the pods, but the
StatefulSet controller creates the claim and the pod that names it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.operator import ClusterHelper

pytestmark = pytest.mark.e2e

SECRET = "demo-mongo-credentials"
CLAIM = "data-demo-mongo-0"
# Children the garbage collector removes with the CR under every policy: once they are all gone,
# the collector has processed the CR's dependents (the pass that would have taken the Secret).
OWNED = [
    ("deployment", "demo-chat"),
    ("statefulset", "demo-mongo"),
    ("configmap", "demo-mongo-init"),
    ("secret", "demo-jwt"),
    ("secret", "demo-redis-credentials"),
]


def with_policy(hsc: ClusterHelper, policy: str) -> dict[str, Any]:
    doc = hsc.manifest()
    doc["spec"]["mongo"]["deletePolicy"] = policy
    return doc


def cluster_owners(obj: dict[str, Any]) -> list[str]:
    refs = obj["metadata"].get("ownerReferences") or []
    return [r["uid"] for r in refs if r["kind"] == "HypersendCluster"]


def unowned(obj: dict[str, Any]) -> dict[str, Any] | None:
    return None if obj["metadata"].get("ownerReferences") else obj


def secret_owners(hsc: ClusterHelper) -> list[str]:
    return cluster_owners(hsc.get("secret", SECRET))


def delete_cluster(hsc: ClusterHelper) -> None:
    hsc.kube.kubectl("delete", "hypersendcluster", hsc.name, "-n", hsc.namespace, "--wait=true")
    for kind, name in OWNED:
        hsc.wait_for(
            lambda k=kind, n=name: not hsc.exists(k, n),  # type: ignore[misc]
            f"{kind}/{name} garbage-collected",
            timeout=90,
        )


def claim_of_mongo_pod(hsc: ClusterHelper) -> str | None:
    if not hsc.exists("pod", "demo-mongo-0"):
        return None
    pod = hsc.get("pod", "demo-mongo-0")
    if pod["metadata"].get("deletionTimestamp"):
        return None
    for volume in pod["spec"].get("volumes") or []:
        if volume["name"] == "data":
            return str(volume["persistentVolumeClaim"]["claimName"])
    return None


def test_retain_keeps_the_credentials_and_a_recreated_cluster_reuses_them(
    hsc: ClusterHelper,
) -> None:
    # Created under Delete (owned), switched to Retain on the live CR: the owner reference goes.
    hsc.apply(with_policy(hsc, "Delete"))
    hsc.wait_phase("Ready", timeout=120)
    first_uid = hsc.get()["metadata"]["uid"]
    assert secret_owners(hsc) == [first_uid]
    hsc.apply(with_policy(hsc, "Retain"))
    hsc.wait_for(lambda: secret_owners(hsc) == [], "the Secret's owner reference removed")
    hsc.wait_phase("Ready", timeout=60)

    secret = hsc.get("secret", SECRET)
    assert set(secret["data"]) >= {"username", "password", "app-username", "app-password", "url"}
    # The StatefulSet controller drops its own owner reference from the claim (whenDeleted
    # Retain); until it has, the garbage collector would still take the volume.
    pvc = hsc.wait_for(lambda: unowned(hsc.get("pvc", CLAIM)), "the claim owned by nobody")
    old_sts_uid = hsc.get("statefulset", "demo-mongo")["metadata"]["uid"]

    delete_cluster(hsc)
    kept = hsc.get("secret", SECRET)
    assert kept["metadata"]["uid"] == secret["metadata"]["uid"]
    assert kept["data"] == secret["data"]
    assert hsc.get("pvc", CLAIM)["metadata"]["uid"] == pvc["metadata"]["uid"]

    # The same name again: the passwords are read back, the same claim is reattached.
    hsc.apply(with_policy(hsc, "Retain"))
    hsc.wait_phase("Ready", timeout=120)
    assert hsc.get()["metadata"]["uid"] != first_uid
    again = hsc.get("secret", SECRET)
    assert again["metadata"]["uid"] == secret["metadata"]["uid"]
    assert again["data"] == secret["data"]  # root and app passwords, and the chat pods' URL
    assert secret_owners(hsc) == []
    sts = hsc.get("statefulset", "demo-mongo")
    assert sts["metadata"]["uid"] != old_sts_uid
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    hsc.wait_for(lambda: claim_of_mongo_pod(hsc) == CLAIM, "the new MongoDB pod on the claim")
    assert hsc.get("pvc", CLAIM)["metadata"]["uid"] == pvc["metadata"]["uid"]
    # The chat pods read the app user's URL from that same Secret.
    chat = hsc.get("deployment", "demo-chat")["spec"]["template"]["spec"]["containers"][0]
    refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in chat["env"]}
    assert refs["HYPERSEND_MONGO_URL"] == {"name": SECRET, "key": "url"}


def test_delete_removes_the_credentials_with_the_cluster(hsc: ClusterHelper) -> None:
    # Created under Retain (owned by nobody), switched to Delete on the live CR: owned.
    hsc.apply(with_policy(hsc, "Retain"))
    hsc.wait_phase("Ready", timeout=120)
    assert secret_owners(hsc) == []
    hsc.apply(with_policy(hsc, "Delete"))
    uid = hsc.get()["metadata"]["uid"]
    hsc.wait_for(lambda: secret_owners(hsc) == [uid], "the Secret owned by the cluster")
    hsc.wait_phase("Ready", timeout=60)

    delete_cluster(hsc)
    hsc.wait_for(lambda: not hsc.exists("secret", SECRET), "the credentials Secret deleted")
    hsc.wait_for(lambda: not hsc.exists("pvc", CLAIM), "the claim deleted", timeout=90)
