"""The generated CRD against a real API server: it installs, its defaults equal the models',
bad specs are refused with the CEL message, storage choices are immutable, and every status
field the operator writes survives (undeclared fields would be pruned)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_devenv.cluster import KubectlError
from hypersend_operator import crd
from hypersend_operator.api import (
    API_VERSION,
    CRD_NAME,
    KIND,
    ChatStatus,
    Condition,
    HypersendClusterSpec,
    HypersendClusterStatus,
)

from tests.fixtures.kube import KubeCluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/hypersend/chatserver:0.1.0"


@pytest.fixture(scope="module")
def crd_installed(kube_cluster: KubeCluster) -> KubeCluster:
    kube_cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / crd.CRD_FILENAME)
    )
    kube_cluster.wait_crd_established(CRD_NAME)
    return kube_cluster  # left installed: other tests of the session use it too


def cluster(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def without_empty(value: Any) -> Any:
    """Drop empty lists and maps: the models default them, the CRD leaves them out."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def dry_run(kube: KubeCluster, obj: dict[str, Any]) -> dict[str, Any]:
    out = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj))
    return dict(json.loads(out.stdout))


def refusal(kube: KubeCluster, obj: dict[str, Any]) -> str:
    proc = kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    assert proc.returncode != 0, f"the API server accepted {obj['spec']}"
    return proc.stderr


def test_crd_is_established_with_the_printer_columns(crd_installed: KubeCluster) -> None:
    live = crd_installed.json("get", "crd", CRD_NAME)
    (version,) = live["spec"]["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Ready",
        "Connections",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}


def test_server_defaults_equal_the_model_defaults(
    crd_installed: KubeCluster, kube_namespace: str
) -> None:
    minimal = {"chat": {"image": IMAGE}}
    served = dry_run(crd_installed, cluster("defaults", kube_namespace, minimal))["spec"]
    model = HypersendClusterSpec.model_validate(minimal)
    assert served == without_empty(model.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert HypersendClusterSpec.model_validate(served) == model


@pytest.mark.parametrize("example", ["dev.yaml", "prod.yaml"])
def test_examples_are_accepted(
    crd_installed: KubeCluster, kube_namespace: str, example: str
) -> None:
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    doc["metadata"]["namespace"] = kube_namespace
    served = dry_run(crd_installed, doc)
    assert HypersendClusterSpec.model_validate(
        served["spec"]
    ) == HypersendClusterSpec.model_validate(doc["spec"])


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    (
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
    ),
    ({"redis": {"mode": "External"}}, "redis.external.urlSecretRef is required"),
    (
        {"redis": {"external": {"urlSecretRef": {"name": "r", "key": "url"}}}},
        "redis.external is only allowed when redis.mode is External",
    ),
    ({"mongo": {"mode": "Atlas"}}, "mongo.atlas.connectionSecretRef is required"),
    (
        {
            "mongo": {
                "mode": "Atlas",
                "inCluster": {},
                "atlas": {"connectionSecretRef": {"name": "a", "key": "uri"}},
            }
        },
        "mongo.inCluster is only allowed when mongo.mode is InCluster",
    ),
    (
        {"mongo": {"pool": {"minSize": 60, "maxSize": 50}}},
        "mongo.pool.minSize must be less than or equal to mongo.pool.maxSize",
    ),
    ({"ingress": {"enabled": True}}, "ingress.host is required when ingress.enabled is true"),
    (
        {"chat": {"env": [{"name": "HYPERSEND_JWT_SECRET", "value": "x"}]}},
        "this HYPERSEND_ variable is set by the operator",
    ),
    ({"chat": {"env": [{"name": "A"}, {"name": "A"}]}}, "variable names must be unique"),
    ({"chat": {"env": [{"name": "1BAD"}]}}, "should match"),
    (
        {"chat": {"websocket": {"pingIntervalSeconds": 60, "idleTimeoutSeconds": 30}}},
        "idleTimeoutSeconds must be greater than pingIntervalSeconds",
    ),
    (
        {"autoscaling": {"targetConnectionsPerPod": 6000}},
        "targetConnectionsPerPod must not exceed chat.websocket.maxConnectionsPerPod",
    ),
    ({"chat": {"resources": {"requests": {"cpu": "lots"}}}}, "should match"),
    ({"chat": {"env": [{"name": f"V{i}"} for i in range(65)]}}, "must have at most 64 items"),
    (
        {"monitoring": {"labels": {"app.kubernetes.io/instance": "x"}}},
        "monitoring.labels: app.kubernetes.io/ keys are the operator's",
    ),
    ({"monitoring": {"labels": {"release": "not ok"}}}, "should match"),
    (
        {"monitoring": {"labels": {f"l{i}": "x" for i in range(17)}}},
        "must have at most 16 items",
    ),
]


@pytest.mark.parametrize(("patch", "message"), BAD_SPECS)
def test_bad_specs_are_refused_with_a_message(
    crd_installed: KubeCluster, kube_namespace: str, patch: dict[str, Any], message: str
) -> None:
    spec: dict[str, Any] = {"chat": {"image": IMAGE}}
    for key, value in patch.items():
        spec[key] = {**spec.get(key, {}), **value}
    assert message in refusal(crd_installed, cluster("bad", kube_namespace, spec))


def test_missing_image_is_refused(crd_installed: KubeCluster, kube_namespace: str) -> None:
    assert "spec.chat.image: Required value" in refusal(
        crd_installed, cluster("bad", kube_namespace, {"chat": {}})
    )


def test_long_names_are_refused(crd_installed: KubeCluster, kube_namespace: str) -> None:
    obj = cluster("x" * 41, kube_namespace, {"chat": {"image": IMAGE}})
    assert "metadata.name must be at most 40 characters" in refusal(crd_installed, obj)


def test_storage_choices_are_immutable(crd_installed: KubeCluster, kube_namespace: str) -> None:
    kube = crd_installed
    spec = {"chat": {"image": IMAGE}, "mongo": {"inCluster": {"storage": {"size": "1Gi"}}}}
    kube.apply(cluster("imm", kube_namespace, spec))
    ns = ("-n", kube_namespace)

    def patch(body: dict[str, Any]) -> str:
        proc = kube.kubectl(
            "patch", KIND.lower(), "imm", *ns, "--type=merge", "-p", json.dumps(body), check=False
        )
        return proc.stderr if proc.returncode else ""

    assert "mongo.inCluster.storage is immutable" in patch(
        {"spec": {"mongo": {"inCluster": {"storage": {"size": "2Gi"}}}}}
    )
    assert "mongo.inCluster.storage is immutable" in patch(
        {"spec": {"mongo": {"inCluster": {"storage": {"storageClassName": "fast"}}}}}
    )
    assert "mongo.mode is immutable" in patch(
        {
            "spec": {
                "mongo": {
                    "mode": "Atlas",
                    "inCluster": None,
                    "atlas": {"connectionSecretRef": {"name": "a", "key": "uri"}},
                }
            }
        }
    )
    # Everything else stays editable.
    assert patch({"spec": {"chat": {"image": "ghcr.io/hypersend/chatserver:0.2.0"}}}) == ""
    assert patch({"spec": {"autoscaling": {"maxReplicas": 4}}}) == ""


def test_storage_stays_fixed_when_the_in_cluster_block_comes_or_goes(
    crd_installed: KubeCluster, kube_namespace: str
) -> None:
    kube = crd_installed

    def patch(name: str, body: dict[str, Any]) -> str:
        proc = kube.kubectl(
            "patch", KIND.lower(), name, "-n", kube_namespace, "--type=merge",
            "-p", json.dumps(body), check=False,
        )  # fmt: skip
        return proc.stderr if proc.returncode else ""

    # Created with the implicit default storage (10Gi, default class).
    kube.apply(cluster("implicit", kube_namespace, {"chat": {"image": IMAGE}}))
    storage_20 = {"inCluster": {"storage": {"size": "20Gi"}}}
    assert "mongo.inCluster.storage is immutable" in patch(
        "implicit", {"spec": {"mongo": storage_20}}
    )
    with_class = {"inCluster": {"storage": {"storageClassName": "fast"}}}
    assert "mongo.inCluster.storage is immutable" in patch(
        "implicit", {"spec": {"mongo": with_class}}
    )
    image_only = {"inCluster": {"image": "docker.io/library/mongo:7.0.17"}}
    assert patch("implicit", {"spec": {"mongo": image_only}}) == ""  # storage stays the default
    assert patch("implicit", {"spec": {"mongo": {"inCluster": None}}}) == ""

    # Created with explicit storage: dropping the block would fall back to the default.
    explicit = {"chat": {"image": IMAGE}, "mongo": {"inCluster": {"storage": {"size": "1Gi"}}}}
    kube.apply(cluster("explicit", kube_namespace, explicit))
    assert "instead of removing the block" in patch(
        "explicit", {"spec": {"mongo": {"inCluster": None}}}
    )


def test_status_fields_survive_and_feed_the_printer_columns(
    crd_installed: KubeCluster, kube_namespace: str
) -> None:
    kube = crd_installed
    kube.apply(cluster("st", kube_namespace, {"chat": {"image": IMAGE}}))
    status = HypersendClusterStatus(
        observed_generation=1,
        phase="Ready",
        conditions=[
            Condition(
                type=t,
                status="True",
                reason="AllReady",
                message="2/3 chat pods ready",
                last_transition_time="2026-11-25T09:00:00Z",
                observed_generation=1,
            )
            for t in ("Ready", "ChatReady")
        ],
        chat=ChatStatus(
            replicas=3, ready_replicas=2, ready="2/3", selector="a=b", connections=1234
        ),
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    kube.kubectl(
        "patch", KIND.lower(), "st", "-n", kube_namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    live = kube.json("get", KIND.lower(), "st", "-n", kube_namespace)
    assert live["status"] == status  # nothing pruned
    table = kube.kubectl("get", KIND.lower(), "st", "-n", kube_namespace).stdout
    header, row = table.splitlines()
    assert header.split()[:4] == ["NAME", "PHASE", "READY", "CONNECTIONS"]
    assert row.split()[:4] == ["st", "Ready", "2/3", "1234"]


def test_invalid_status_is_refused(crd_installed: KubeCluster, kube_namespace: str) -> None:
    kube = crd_installed
    kube.apply(cluster("bst", kube_namespace, {"chat": {"image": IMAGE}}))
    with pytest.raises(KubectlError, match="Unsupported value"):
        kube.kubectl(
            "patch", KIND.lower(), "bst", "-n", kube_namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"phase": "Running"}}),
        )  # fmt: skip


def test_spec_defaults_fill_a_partial_block(
    crd_installed: KubeCluster, kube_namespace: str
) -> None:
    spec = {"chat": {"image": IMAGE}, "autoscaling": {"maxReplicas": 4}}
    served = dry_run(crd_installed, cluster("partial", kube_namespace, copy.deepcopy(spec)))["spec"]
    assert served["autoscaling"]["minReplicas"] == 2
    assert served["autoscaling"]["maxReplicas"] == 4
    assert served["autoscaling"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("spec.autoscaling.minReplicas", "Fewest chat pods; at most maxReplicas. Default: 2."),
        ("spec.chat.websocket.pingIntervalSeconds", "Seconds between the server's WebSocket"),
        ("spec.mongo.mode", "InCluster: the operator runs one MongoDB pod"),
        ("spec.ingress.host", "Host name clients connect to"),
        ("status.conditions.reason", "Machine-readable CamelCase reason"),
    ],
)
def test_kubectl_explain_shows_the_field_descriptions(
    crd_installed: KubeCluster, field: str, expected: str
) -> None:
    def explained() -> str:
        # The API server publishes a new CRD's OpenAPI a moment after it is Established.
        proc = crd_installed.kubectl("explain", f"hypersendclusters.{field}", check=False)
        return proc.stdout if proc.returncode == 0 else ""

    out = crd_installed.wait_for(explained, 60, f"kubectl explain {field}")
    assert "<no description>" not in out
    assert expected in " ".join(out.split()), out
