"""The test cluster behaves like Kubernetes: scheduling, pod readiness, garbage collection, CRDs,
and the HPA acting on a custom metric served through an APIService.

These run against the local control plane, or against any cluster named by HYPERSEND_KUBECONFIG.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from hypersend_devenv.cluster import KWOK_NODE_ANNOTATION

from tests.fixtures.kube import CustomMetrics, KubeCluster

pytestmark = pytest.mark.e2e

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled locally (kwok); tiny on real clusters


def deployment(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": PAUSE_IMAGE}]},
            },
        },
    }


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod.get("status", {}).get("phase") == "Running" and ready


def ready_pods(kube: KubeCluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods = kube.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return [p for p in pods if is_ready(p) and "deletionTimestamp" not in p["metadata"]]


def test_deployment_gets_two_running_ready_pods_on_kwok_nodes(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.apply(deployment("web", kube_namespace, replicas=2))

    def two_ready() -> list[dict[str, Any]]:
        pods = ready_pods(kube_cluster, kube_namespace, "app=web")
        return pods if len(pods) == 2 else []

    pods = kube_cluster.wait_for(
        two_ready, timeout=90, what="2 Running and Ready pods of Deployment web"
    )

    assert len(pods) == 2
    deploy = kube_cluster.json("get", "deployment", "web", "-n", kube_namespace)
    assert deploy["status"].get("readyReplicas") == 2
    if kube_cluster.is_local:
        nodes = {p["spec"]["nodeName"] for p in pods}
        for node in nodes:
            annotations = kube_cluster.json("get", "node", node)["metadata"]["annotations"]
            assert annotations.get(KWOK_NODE_ANNOTATION) == "fake"


def test_deleting_an_owner_garbage_collects_what_it_owns(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_cluster.kubectl("create", "configmap", "owner", "-n", ns, "--from-literal=a=1")
    owner = kube_cluster.json("get", "configmap", "owner", "-n", ns)["metadata"]
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["uid"]}
    owned = [
        {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {
                "name": f"owned-{kind.lower()}",
                "namespace": ns,
                "ownerReferences": [reference],
            },
            "data": {},
        }
        for kind in ("ConfigMap", "Secret")
    ]
    bystander = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bystander", "namespace": ns},
    }
    kube_cluster.apply(*owned, bystander)

    kube_cluster.kubectl("delete", "configmap", "owner", "-n", ns)

    def gone(kind: str, name: str) -> bool:
        got = kube_cluster.kubectl("get", kind, name, "-n", ns, check=False)
        return got.returncode != 0 and "NotFound" in got.stderr

    kube_cluster.wait_for(
        lambda: gone("configmap", "owned-configmap") and gone("secret", "owned-secret"),
        timeout=60,
        what="the garbage collector to delete the owned ConfigMap and Secret",
    )
    assert not gone("configmap", "bystander")


def test_a_statefulset_claim_is_provisioned_and_its_pod_runs(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    sts = deployment("db", ns, replicas=1)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    sts["spec"]["volumeClaimTemplates"] = [
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    ]
    kube_cluster.apply(sts)

    kube_cluster.wait_for(
        lambda: ready_pods(kube_cluster, ns, "app=db"), timeout=90, what="pod db-0 Ready"
    )
    claim = kube_cluster.json("get", "pvc", "data-db-0", "-n", ns)
    assert claim["status"]["phase"] == "Bound"


def test_deleting_a_deployment_removes_its_replicasets_and_pods(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_cluster.apply(deployment("gone", ns, replicas=2))
    kube_cluster.wait_for(
        lambda: len(ready_pods(kube_cluster, ns, "app=gone")) == 2, timeout=90, what="2 pods"
    )

    kube_cluster.kubectl("delete", "deployment", "gone", "-n", ns, "--wait=false")

    def nothing_left() -> bool:
        rs = kube_cluster.json("get", "replicasets", "-n", ns, "-l", "app=gone")["items"]
        pods = kube_cluster.json("get", "pods", "-n", ns, "-l", "app=gone")["items"]
        return not rs and not pods

    kube_cluster.wait_for(nothing_left, timeout=90, what="ReplicaSet and pods of `gone` deleted")


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.e2e.hypersend.io"},
    "spec": {
        "group": "e2e.hypersend.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, namespace: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": "e2e.hypersend.io/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"size": size},
    }


def test_a_crd_installs_and_its_custom_resources_are_validated(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    kube_cluster.apply(WIDGET_CRD)
    kube_cluster.wait_crd_established("widgets.e2e.hypersend.io")

    kube_cluster.wait_for(
        lambda: kube_cluster.apply(widget("w1", kube_namespace, 3), check=False).returncode == 0,
        timeout=30,
        what="the Widget kind to be served",
    )
    stored = kube_cluster.json("get", "widget", "w1", "-n", kube_namespace)
    assert stored["spec"] == {"size": 3}

    with pytest.raises(subprocess.CalledProcessError) as refused:
        kube_cluster.apply(widget("w2", kube_namespace, 99))
    assert "spec.size" in str(refused.value)


def test_hpa_scales_a_deployment_on_a_custom_pod_metric(
    kube_cluster: KubeCluster, kube_namespace: str, custom_metrics: CustomMetrics
) -> None:
    ns = kube_namespace
    kube_cluster.apply(deployment("chat", ns, replicas=1))
    (pod,) = kube_cluster.wait_for(
        lambda: ready_pods(kube_cluster, ns, "app=chat"), timeout=60, what="the first chat pod"
    )
    # 1 pod at 25 connections against a target of 10 per pod: the HPA wants 3 pods.
    custom_metrics.set_pod_metric(ns, pod["metadata"]["name"], "websocket_connections", 25)
    kube_cluster.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "chat", "namespace": ns},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"},
                "minReplicas": 1,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "websocket_connections"},
                            "target": {"type": "AverageValue", "averageValue": "10"},
                        },
                    }
                ],
            },
        }
    )

    def scaled_to_three() -> bool:
        spec = kube_cluster.json("get", "deployment", "chat", "-n", ns)["spec"]
        return bool(spec["replicas"] == 3)

    # The value the HPA reads comes through the aggregator and the APIService.
    served = kube_cluster.kubectl(
        "get",
        "--raw",
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/websocket_connections"
        "?labelSelector=app%3Dchat",
    )
    (item,) = json.loads(served.stdout)["items"]
    assert (item["describedObject"]["name"], item["value"]) == (pod["metadata"]["name"], "25")

    kube_cluster.wait_for(scaled_to_three, timeout=90, what="the HPA to scale chat to 3")


async def test_kubectl_does_not_block_async_tests(kube_cluster: KubeCluster) -> None:
    nodes = await kube_cluster.akubectl("get", "nodes", "-o", "name")
    assert nodes.stdout.strip()
    missing = await kube_cluster.akubectl("get", "namespace", "no-such-namespace", check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr
