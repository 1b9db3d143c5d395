"""Operator lifecycle against the real API server: examples/dev.yaml reaches Ready with every child
owned by the CR, a bad spec is refused with the CEL message, a spec change rolls the chat pods once
while the status walks Progressing -> Ready, and deletion keeps or removes the data (and the
MongoDB credentials) by policy."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from typing import Any

import pytest
from hypersend_devenv.cluster import KubectlError

from tests.fixtures.operator import ClusterHelper

pytestmark = pytest.mark.e2e

CHILDREN = [
    ("secret", "demo-jwt"),
    ("secret", "demo-mongo-credentials"),
    ("configmap", "demo-chat"),
    ("service", "demo-redis"),
    ("deployment", "demo-redis"),
    ("poddisruptionbudget", "demo-redis"),
    ("configmap", "demo-mongo-init"),
    ("service", "demo-mongo"),
    ("statefulset", "demo-mongo"),
    ("service", "demo-chat"),
    ("deployment", "demo-chat"),
    ("horizontalpodautoscaler", "demo-chat"),
]


def test_dev_example_reaches_ready_with_owned_children(hsc: ClusterHelper) -> None:
    hsc.apply(hsc.manifest())
    status = hsc.wait_phase("Ready", timeout=120)

    conditions = {c["type"]: c for c in status["conditions"]}
    for type_ in ("Ready", "ChatReady", "RedisReady", "MongoReady", "AutoscalingReady"):
        assert conditions[type_]["status"] == "True", conditions[type_]
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert status["chat"]["readyReplicas"] >= 1
    assert "app.kubernetes.io/instance=demo" in status["chat"]["selector"]

    uid = hsc.get()["metadata"]["uid"]
    for kind, name in CHILDREN:
        owners = hsc.get(kind, name)["metadata"].get("ownerReferences", [])
        assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
            ("HypersendCluster", uid, True)
        ], f"{kind}/{name}"
    # Secrets never show up in status or events.
    ring = json.loads(base64.b64decode(hsc.get("secret", "demo-jwt")["data"]["jwt-keys"]))
    events = hsc.kube.kubectl("get", "events", "-n", hsc.namespace, "-o", "json").stdout
    for key in ring["keys"]:
        assert key["secret"] not in events
        assert key["secret"] not in str(hsc.get())
    reasons = {
        e["reason"]
        for e in hsc.kube.json("get", "events", "-n", hsc.namespace)["items"]
        if e["involvedObject"]["kind"] == "HypersendCluster"
    }
    assert "Created" in reasons


def test_invalid_spec_is_refused_with_the_cel_message(hsc: ClusterHelper) -> None:
    doc = hsc.manifest()
    doc["spec"]["autoscaling"].update(minReplicas=5, maxReplicas=2)
    with pytest.raises(KubectlError) as err:
        hsc.kube.apply(doc)
    assert (
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
        in err.value.stderr
    )


WATCH_FORMAT = "jsonpath={.metadata.generation}/{.status.observedGeneration}/{.status.phase}\n"


class PhaseWatch:
    """Every phase the CR's status goes through, from a `kubectl get -w` stream."""

    def __init__(self, hsc: ClusterHelper) -> None:
        self.phases: list[str] = []
        cmd = hsc.kube._cmd(
            (
                "get", "hypersendcluster", hsc.name, "-n", hsc.namespace, "-w",
                "-o", WATCH_FORMAT,
            )
        )  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.phases.append(line.strip())

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(5)
        return self.phases


def chat_replicasets(hsc: ClusterHelper) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/instance=demo,app.kubernetes.io/component=chat"
    items: list[dict[str, Any]] = hsc.kube.json(
        "get", "replicasets", "-n", hsc.namespace, "-l", selector
    )["items"]
    return items


def test_spec_change_rolls_chat_pods_once_and_walks_progressing_to_ready(
    hsc: ClusterHelper,
) -> None:
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=120)
    deployment = hsc.get("deployment", "demo-chat")
    generation = deployment["metadata"]["generation"]
    assert len(chat_replicasets(hsc)) == 1

    watch = PhaseWatch(hsc)
    try:
        doc = hsc.manifest()
        doc["spec"]["chat"]["logLevel"] = "warning"  # a ConfigMap setting: pods must roll
        hsc.apply(doc)
        hsc.wait_for(lambda: hsc.get()["metadata"]["generation"] == 2, "generation 2", timeout=10)
        hsc.wait_phase("Ready", timeout=120)
    finally:
        phases = watch.stop()

    # One rollout: one new ReplicaSet and one Deployment generation step.
    assert len(chat_replicasets(hsc)) == 2
    assert hsc.get("deployment", "demo-chat")["metadata"]["generation"] == generation + 1
    after_change = [p for p in phases if p.startswith("2/")]
    assert any(p.endswith("/Progressing") for p in after_change), phases
    assert after_change[-1] == "2/2/Ready", phases
    first_progressing = next(i for i, p in enumerate(after_change) if p.endswith("/Progressing"))
    assert "2/2/Ready" in after_change[first_progressing:], phases

    # A pass with nothing new changes nothing: no second rollout after further resyncs.
    hsc.wait_phase("Ready", timeout=30)
    assert len(chat_replicasets(hsc)) == 2


def test_delete_keeps_mongo_pvc_by_default(hsc: ClusterHelper) -> None:
    doc = hsc.manifest()
    doc["spec"]["mongo"]["deletePolicy"] = "Retain"
    hsc.apply(doc)
    hsc.wait_for(lambda: hsc.exists("pvc", "data-demo-mongo-0"), "the Mongo PVC")
    hsc.wait_phase("Ready", timeout=120)

    hsc.kube.kubectl("delete", "hypersendcluster", "demo", "-n", hsc.namespace, "--wait=true")
    # The MongoDB credentials stay with the volume they open (tests/e2e/test_mongo_retain.py).
    kept = ("secret", "demo-mongo-credentials")
    for kind, name in CHILDREN:
        if (kind, name) != kept:
            hsc.wait_for(lambda k=kind, n=name: not hsc.exists(k, n), f"{kind}/{name} deleted")  # type: ignore[misc]
    assert hsc.exists("pvc", "data-demo-mongo-0")
    assert hsc.exists(*kept)


def test_delete_policy_delete_removes_the_pvc(hsc: ClusterHelper) -> None:
    doc = hsc.manifest()
    assert doc["spec"]["mongo"]["deletePolicy"] == "Delete"  # as in examples/dev.yaml
    hsc.apply(doc)
    hsc.wait_for(lambda: hsc.exists("pvc", "data-demo-mongo-0"), "the Mongo PVC")
    hsc.wait_phase("Ready", timeout=120)

    hsc.kube.kubectl("delete", "hypersendcluster", "demo", "-n", hsc.namespace, "--wait=true")
    hsc.wait_for(lambda: not hsc.exists("statefulset", "demo-mongo"), "StatefulSet deleted")
    hsc.wait_for(lambda: not hsc.exists("pvc", "data-demo-mongo-0"), "PVC deleted", timeout=90)
