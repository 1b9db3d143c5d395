"""Every manifest the builders produce is accepted by a real API server (server-side apply,
dry run), for the default spec, both examples and a spec with every option switched on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator.api import HypersendClusterSpec
from hypersend_operator.builders import BuildContext, GeneratedSecrets, build_all

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


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_built_manifests_pass_server_side_dry_run(
    kube_cluster: KubeCluster, kube_namespace: str, spec: dict[str, Any]
) -> None:
    ctx = BuildContext(
        name="demo",
        namespace=kube_namespace,
        uid="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        generation=1,
        spec=HypersendClusterSpec.model_validate(spec),
        secrets=GeneratedSecrets(jwt_key="k" * 43, mongo_root_password="p@ss/w:rd"),
        capabilities=frozenset(),  # no Prometheus Operator CRDs in the test cluster
    )
    manifests = build_all(ctx)
    docs = "\n".join(json.dumps(m) for m in manifests)
    out = kube_cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=hypersend-operator",
        "-o", "json", "-f", "-", input=docs,
    )  # fmt: skip
    served = json.loads(out.stdout)
    items = served["items"] if served.get("kind") == "List" else [served]
    assert [(i["kind"], i["metadata"]["name"]) for i in items] == [
        (m["kind"], m["metadata"]["name"]) for m in manifests
    ]
