"""Every manifest the builders produce is accepted by a real API server (server-side apply,
dry run), for the default spec, both examples and a spec with every option switched on, and the
monitoring objects against typed subsets of the Prometheus Operator's CRDs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator.api import HypersendClusterSpec
from hypersend_operator.builders import BuildContext, GeneratedSecrets, build_all
from hypersend_operator.builders.context import PROMETHEUS_RULE, SERVICE_MONITOR

from tests.e2e.monitoring_crds import install_monitoring_crds
from tests.fixtures.kube import KubeCluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/hypersend/chatserver:0.1.0"
EVERYTHING_ON: dict[str, Any] = {
    "chat": {
        "image": IMAGE,
        "env": [{"name": "HYPERSEND_MAX_MESSAGE_BYTES", "value": "32768"}],
        "podDisruptionBudget": {"maxUnavailable": "25%"},
    },
    "ingress": {
        "enabled": True,
        "host": "chat.example.com",
        "className": "nginx",
        "tlsSecretName": "chat-tls",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
    },
    "networkPolicy": {"enabled": True},
    "mongo": {"deletePolicy": "Delete", "inCluster": {"storage": {"storageClassName": "fast"}}},
}


def example_spec(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "examples" / name).read_text())["spec"])


SPECS = {
    "default": {"chat": {"image": IMAGE}},
    "everything-on": EVERYTHING_ON,
    "autoscaling-off": {"chat": {"image": IMAGE}, "autoscaling": {"enabled": False}},
    "dev-example": example_spec("dev.yaml"),
    "prod-example": example_spec("prod.yaml"),
}


MONITORING_ON: dict[str, Any] = {
    "chat": {"image": IMAGE},
    "monitoring": {
        "serviceMonitor": True,
        "prometheusRule": True,
        "labels": {"release": "kube-prometheus-stack"},
    },
}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_built_manifests_pass_server_side_dry_run(
    kube_cluster: KubeCluster, kube_namespace: str, spec: dict[str, Any]
) -> None:
    dry_run(kube_cluster, kube_namespace, spec, frozenset())


def test_monitoring_objects_pass_a_strict_dry_run(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    """The ServiceMonitor and PrometheusRule, against typed subsets of their CRDs."""
    install_monitoring_crds(kube_cluster)
    kinds = dry_run(
        kube_cluster, kube_namespace, MONITORING_ON, frozenset({SERVICE_MONITOR, PROMETHEUS_RULE})
    )
    assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds)


def dry_run(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    spec: dict[str, Any],
    capabilities: frozenset[str],
) -> list[str]:
    ctx = BuildContext(
        name="demo",
        namespace=kube_namespace,
        uid="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        generation=1,
        spec=HypersendClusterSpec.model_validate(spec),
        secrets=GeneratedSecrets(
            jwt_keys="k" * 43,
            mongo_root_password="p@ss/w:rd",
            mongo_app_password="@pp/p:ss",
            redis_password="r3d!s/p@ss",
        ),
        capabilities=capabilities,
    )
    manifests = build_all(ctx)
    docs = "\n".join(json.dumps(m) for m in manifests)
    out = kube_cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=hypersend-operator",
        "--validate=strict", "-o", "json", "-f", "-", input=docs,
    )  # fmt: skip
    served = json.loads(out.stdout)
    items = served["items"] if served.get("kind") == "List" else [served]
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [
        (m["kind"], m["metadata"]["name"]) for m in manifests
    ]
    return [i["kind"] for i in items]
