"""`kubectl hypersend` against a real API server and the real operator, and ArgoCD's health.lua
against the statuses that operator writes.

The operator is the suite's process (fixture `hypersend_operator`, tests/fixtures/operator.py). The
plugin runs the way users run it: `kubectl hypersend ...`, found by kubectl on PATH.

With HYPERSEND_RECORD_STATUSES=1 the observed objects are also written to
tests/unit/delivery/recorded_statuses/, where the unit tests replay them through health.lua.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypersend_devenv import images

from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import OperatorProcess
from tests.unit.delivery import glua

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RECORD_DIR = ROOT / "tests" / "unit" / "delivery" / "recorded_statuses"
BIN = Path(sys.executable).parent
CHAT_IMAGE = os.environ.get("HYPERSEND_SERVER_IMAGE", images.SERVER_IMAGE)
TIMEOUT = 90.0
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RECONCILES = "hypersend_operator_reconciles_total"


@pytest.fixture(scope="module")
def kube(kube_cluster: KubeCluster) -> KubeCluster:
    return kube_cluster


@pytest.fixture(scope="module")
def namespace(kube: KubeCluster) -> Iterator[str]:
    name = f"hs-plugin-{uuid.uuid4().hex[:6]}"
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kube.wait_crd_established(CRD)
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


CRD = "hypersendclusters.hypersend.io"


@pytest.fixture(scope="module")
def operator(hypersend_operator: OperatorProcess) -> OperatorProcess:
    """The suite's operator process (cluster-wide, short resync): one operator for every e2e test,
    never two fighting over the same objects."""
    return hypersend_operator


def plugin(kube: KubeCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`kubectl hypersend ARGS`: kubectl finds kubectl-hypersend on PATH, as for a user."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kube.kubeconfig),
        "KUBECTL": kube.kubectl_path,
    }
    proc = subprocess.run(
        [kube.kubectl_path, "hypersend", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl hypersend {' '.join(args)}: {proc.stderr}")
    return proc


def cluster_manifest(
    name: str, namespace: str, secret: str, in_cluster_mongo: bool = False
) -> dict[str, Any]:
    """Atlas mode on the local cluster (kwok has no volume provisioner, and the fake pods connect
    to nothing); in-cluster MongoDB on a real cluster, where chat pods really need a database."""
    mongo: dict[str, Any] = {
        "mode": "Atlas",
        "atlas": {"connectionSecretRef": {"name": secret, "key": "uri"}},
    }
    if in_cluster_mongo:
        mongo = {"mode": "InCluster", "deletePolicy": "Delete"}
    return {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "chat": {"image": CHAT_IMAGE, "replicas": 2},
            "autoscaling": {"enabled": False},
            "redis": {"mode": "InCluster"},
            "mongo": mongo,
        },
    }


def atlas_secret(kube: KubeCluster, namespace: str, name: str) -> None:
    kube.kubectl(
        "create", "secret", "generic", name, "-n", namespace,
        "--from-literal=uri=mongodb+srv://user:pass@example.invalid/db",
    )  # fmt: skip


def get(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(kube.json("get", CRD, name, "-n", namespace))


def wait_phase(kube: KubeCluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        obj = get(kube, namespace, name)
        status = obj.get("status") or {}
        fresh = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if status.get("phase") == phase and fresh else None

    return wait_obj(kube, current, f"{namespace}/{name} phase {phase}")


def wait_obj(
    kube: KubeCluster, found: Callable[[], dict[str, Any] | None], what: str
) -> dict[str, Any]:
    obj = kube.wait_for(found, timeout=TIMEOUT, what=what)
    assert obj is not None
    return obj


def health(obj: dict[str, Any], record_as: str, expect: str, message: str = "") -> dict[str, str]:
    """health.lua on an object as the API server returned it; optionally recorded for replay."""
    result = glua.health(obj)
    assert result["status"] == expect, (result, obj.get("status"))
    assert message in result["message"], result
    if os.environ.get("HYPERSEND_RECORD_STATUSES") == "1":
        RECORD_DIR.mkdir(exist_ok=True)
        kept = {
            **obj,
            "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"},
        }
        record = {"expect": {"status": expect, "message": message}, "object": kept}
        (RECORD_DIR / f"{record_as}.json").write_text(
            json.dumps(record, indent=2, sort_keys=True) + "\n"
        )
    return result


@pytest.fixture(scope="module")
def ready_cluster(kube: KubeCluster, namespace: str, operator: OperatorProcess) -> str:
    atlas_secret(kube, namespace, "atlas")
    kube.apply(cluster_manifest("chat", namespace, "atlas", in_cluster_mongo=not kube.is_local))

    def with_status() -> dict[str, Any] | None:
        obj = get(kube, namespace, "chat")
        return obj if (obj.get("status") or {}).get("phase") else None

    first = wait_obj(kube, with_status, "a first status")
    if first["status"]["phase"] != "Ready":
        health(first, "first-status", "Progressing")  # when caught before the pods are ready
    obj = wait_phase(kube, namespace, "chat", "Ready")
    health(obj, "ready", "Healthy")
    return "chat"


def test_status_shows_conditions_components_connections_and_events(
    kube: KubeCluster, namespace: str, ready_cluster: str
) -> None:
    out = plugin(kube, "-n", namespace, "status", ready_cluster).stdout
    assert f"HypersendCluster {namespace}/{ready_cluster}" in out
    assert "Phase:       Ready" in out
    assert "Chat pods:   2/2 ready" in out
    for condition in ("Ready", "Progressing", "Degraded", "ChatReady", "RedisReady", "MongoReady"):
        assert f"\n  {condition} " in out, out
    assert "Deployment:  chat-chat" in out
    events = out.split("Events:", 1)[1]
    assert "Created" in events, out


def test_status_of_a_missing_cluster_is_a_clear_error(kube: KubeCluster, namespace: str) -> None:
    proc = plugin(kube, "-n", namespace, "status", "nope", check=False)
    assert proc.returncode == 1
    assert f'HypersendCluster "nope" not found in namespace {namespace}' in proc.stderr


def chat_deployment(kube: KubeCluster, namespace: str) -> dict[str, Any]:
    return dict(kube.json("get", "deployment", "chat-chat", "-n", namespace))


def test_pause_stops_changes_and_resume_applies_them(
    kube: KubeCluster, namespace: str, ready_cluster: str, operator: OperatorProcess
) -> None:
    assert "paused" in plugin(kube, "-n", namespace, "pause", ready_cluster).stdout
    paused = wait_phase(kube, namespace, ready_cluster, "Paused")
    health(paused, "paused", "Suspended", "hypersend.io/paused")
    assert "Paused:      yes" in plugin(kube, "-n", namespace, "status", ready_cluster).stdout

    # A spec change while paused is not applied: the pass the change starts leaves it alone.
    updates = operator.counter(RECONCILES, trigger="update", result="ok")
    kube.kubectl(
        "patch", CRD, ready_cluster, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"chat": {"replicas": 3}}}),
    )  # fmt: skip
    kube.wait_for(
        lambda: operator.counter(RECONCILES, trigger="update", result="ok") > updates,
        timeout=TIMEOUT, what="the pass started by the spec change",
    )  # fmt: skip
    assert chat_deployment(kube, namespace)["spec"]["replicas"] == 2
    health(get(kube, namespace, ready_cluster), "paused-with-new-spec", "Suspended")

    assert "resumed" in plugin(kube, "-n", namespace, "resume", ready_cluster).stdout
    kube.wait_for(
        lambda: chat_deployment(kube, namespace)["spec"]["replicas"] == 3,
        timeout=TIMEOUT, what="the paused change to be applied after resume",
    )  # fmt: skip
    obj = wait_phase(kube, namespace, ready_cluster, "Ready")
    assert "hypersend.io/paused" not in obj["metadata"].get("annotations", {})
    health(obj, "resumed", "Healthy")


def test_restart_rolls_the_chat_pods_and_the_operator_keeps_it(
    kube: KubeCluster, namespace: str, ready_cluster: str
) -> None:
    before = chat_deployment(kube, namespace)
    out = plugin(kube, "-n", namespace, "restart", ready_cluster).stdout
    assert f"deployment {namespace}/chat-chat restarted" in out
    after = chat_deployment(kube, namespace)
    stamp = after["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # The controller rolls a new ReplicaSet for the new template ...
    selector = "app.kubernetes.io/instance=chat,app.kubernetes.io/component=chat"
    kube.wait_for(
        lambda: len(kube.json("get", "replicasets", "-n", namespace, "-l", selector)["items"]) > 1,
        timeout=TIMEOUT,
        what="a new ReplicaSet",
    )
    # ... and the operator's passes leave the restart annotation alone: Ready is written by a
    # pass that ran after the rollout finished, the one that would have reverted it.
    wait_phase(kube, namespace, ready_cluster, "Ready")
    kept = chat_deployment(kube, namespace)["spec"]["template"]["metadata"]["annotations"]
    assert kept[RESTARTED_AT] == stamp


def jwt_ring(kube: KubeCluster, namespace: str, cluster: str) -> dict[str, Any]:
    secret = kube.json("get", "secret", f"{cluster}-jwt", "-n", namespace)
    ring: dict[str, Any] = json.loads(base64.b64decode(secret["data"]["jwt-keys"]))
    return ring


def config_hash(kube: KubeCluster, namespace: str) -> str:
    annotations = chat_deployment(kube, namespace)["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["hypersend.io/config-hash"])


def test_rotate_jwt_adds_a_key_that_signs_later_and_rolls_the_chat_pods(
    kube: KubeCluster, namespace: str, ready_cluster: str
) -> None:
    before, hash_before = jwt_ring(kube, namespace, ready_cluster), config_hash(kube, namespace)
    asked = time.time()
    out = plugin(kube, "-n", namespace, "rotate-jwt", ready_cluster).stdout
    assert "JWT key rotation requested" in out
    assert "signs 600 s later" in out

    after = wait_obj(
        kube,
        lambda: r if len((r := jwt_ring(kube, namespace, ready_cluster))["keys"]) > 1 else None,
        "a second JWT key",
    )
    request = get(kube, namespace, ready_cluster)["metadata"]["annotations"][
        "hypersend.io/jwtRotationRequestedAt"
    ]
    assert after["rotation"] == request
    old, new = after["keys"]
    # The old key is kept as it was and verifies until the new one has signed for one access-
    # token lifetime (900 s, the chat default) plus a minute; the new one signs 600 s on.
    assert (old["kid"], old["secret"]) == (before["keys"][0]["kid"], before["keys"][0]["secret"])
    assert new["kid"] != old["kid"]
    assert new["secret"] != old["secret"]
    assert asked + 600 - 2 <= new["signFrom"] <= time.time() + 600
    assert new["verifyUntil"] is None
    assert old["verifyUntil"] == new["signFrom"] + 900 + 60
    # The chat pods roll to learn the new key.
    kube.wait_for(
        lambda: config_hash(kube, namespace) != hash_before,
        timeout=TIMEOUT, what="the chat pod template to change with the ring",
    )  # fmt: skip

    # One rotation per request: a later pass (proved by the spec change it reports) keeps the ring.
    kube.kubectl(
        "patch", CRD, ready_cluster, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"chat": {"jwtKeyActivationDelaySeconds": 60}}}),
    )  # fmt: skip
    wait_phase(kube, namespace, ready_cluster, "Ready")
    assert jwt_ring(kube, namespace, ready_cluster) == after


def test_missing_atlas_secret_reads_degraded_with_the_reason(
    kube: KubeCluster, namespace: str, operator: OperatorProcess
) -> None:
    kube.apply(cluster_manifest("broken", namespace, "absent"))
    obj = wait_phase(kube, namespace, "broken", "Degraded")
    health(obj, "degraded-atlas-secret-missing", "Degraded", "secret absent not found")
    out = plugin(kube, "-n", namespace, "status", "broken").stdout
    assert "Phase:       Degraded" in out
    assert "secret absent not found" in out

    atlas_secret(kube, namespace, "absent")
    if kube.is_local:
        health(wait_phase(kube, namespace, "broken", "Ready"), "recovered", "Healthy")
    else:  # real chat pods cannot reach the made-up Atlas URI: only the secret check recovers

        def secret_found() -> bool:
            conditions = get(kube, namespace, "broken").get("status", {}).get("conditions", [])
            return any(c["type"] == "MongoReady" and c["status"] == "True" for c in conditions)

        kube.wait_for(secret_found, timeout=TIMEOUT, what="MongoReady after the secret appeared")


def test_pods_that_cannot_start_read_progressing(
    kube: KubeCluster, namespace: str, operator: OperatorProcess
) -> None:
    """Chat pods no node can fit stay Pending: the cluster is starting, not failed (yet)."""
    atlas_secret(kube, namespace, "atlas-big")
    manifest = cluster_manifest("unschedulable", namespace, "atlas-big")
    manifest["spec"]["chat"]["resources"] = {
        "requests": {"cpu": "500", "memory": "1Gi"},
        "limits": {"cpu": "500", "memory": "1Gi"},
    }
    kube.apply(manifest)

    def pending() -> dict[str, Any] | None:
        obj = wait_phase(kube, namespace, "unschedulable", "Progressing")
        return obj if "not ready 0/2" in json.dumps(obj["status"]["conditions"]) else None

    obj = wait_obj(kube, pending, "the chat pods to be reported Pending")
    health(obj, "progressing-pods-pending", "Progressing", "not ready 0/2")
    out = plugin(kube, "-n", namespace, "status", "unschedulable").stdout
    assert "Chat pods:   0/2 ready" in out


def argocd_action(kube: KubeCluster, namespace: str, name: str, action: str) -> dict[str, Any]:
    """Run an ArgoCD action script on the live object and send what changed in its annotations as
    a merge patch, the way ArgoCD applies an action's returned object."""
    live = get(kube, namespace, name)
    changed = glua.run(glua.action(action), live)
    before = live["metadata"].get("annotations", {})
    after = changed["metadata"].get("annotations", {})
    patch = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    kube.kubectl(
        "patch", CRD, name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"metadata": {"annotations": patch}}),
    )  # fmt: skip
    return dict(patch)


def test_argocd_pause_and_resume_actions_drive_the_operator(
    kube: KubeCluster, namespace: str, ready_cluster: str
) -> None:
    actions = glua.run(glua.DISCOVERY, get(kube, namespace, ready_cluster))
    assert actions["pause"]["disabled"] is False
    assert argocd_action(kube, namespace, ready_cluster, "pause") == {"hypersend.io/paused": "true"}
    health(wait_phase(kube, namespace, ready_cluster, "Paused"), "argocd-paused", "Suspended")
    assert (
        glua.run(glua.DISCOVERY, get(kube, namespace, ready_cluster))["resume"]["disabled"] is False
    )
    assert argocd_action(kube, namespace, ready_cluster, "resume") == {
        "hypersend.io/paused": "false"
    }
    health(wait_phase(kube, namespace, ready_cluster, "Ready"), "argocd-resumed", "Healthy")


def test_argocd_restart_action_rolls_the_chat_pods(
    kube: KubeCluster, namespace: str, ready_cluster: str
) -> None:
    patch = argocd_action(kube, namespace, ready_cluster, "restart")
    stamp = patch["hypersend.io/restartedAt"]

    def rolled() -> bool:
        template = chat_deployment(kube, namespace)["spec"]["template"]["metadata"]
        return bool(template.get("annotations", {}).get("hypersend.io/restartedAt") == stamp)

    kube.wait_for(rolled, timeout=15, what="the chat pod template to carry the restart stamp")
