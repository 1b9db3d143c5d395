"""kube.py's pure parts: label selectors for lightkube, built-in kinds from lightkube-models,
CRD kinds, Events, and the fence (checked before anything is sent)."""

from __future__ import annotations

from typing import Any

import pytest
from hypersend_operator.builders import OwnedKind
from hypersend_operator.kube import (
    ApiError,
    Kind,
    Kube,
    NotLeader,
    builtin_kind,
    crd_kinds,
    event_manifest,
    parse_label_selector,
)

pytestmark = pytest.mark.unit


def encoded(selector: str) -> list[str]:
    return [op.encode(key) for key, op in parse_label_selector(selector).items()]


@pytest.mark.parametrize(
    ("selector", "terms"),
    [
        ("app=chat", ["app=chat"]),
        ("app==chat", ["app=chat"]),
        ("a=b, c!=d", ["a=b", "c!=d"]),
        (
            "app.kubernetes.io/managed-by=hypersend-operator",
            ["app.kubernetes.io/managed-by=hypersend-operator"],
        ),
        ("tier in (web, api),env notin (dev)", ["tier in (api,web)", "env notin (dev)"]),
        ("hypersend.io/cluster,!legacy", ["hypersend.io/cluster", "!legacy"]),
        ("empty=", ["empty="]),
    ],
)
def test_label_selectors_are_encoded_back_the_same(selector: str, terms: list[str]) -> None:
    assert encoded(selector) == terms


@pytest.mark.parametrize("selector", ["a=b,a=c", "a in (b", "=b", "a=b=c"])
def test_bad_label_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="label selector"):
        parse_label_selector(selector)


@pytest.mark.parametrize(
    ("api_version", "kind", "plural", "namespaced"),
    [
        ("v1", "ConfigMap", "configmaps", True),
        ("v1", "Namespace", "namespaces", False),
        ("v1", "Event", "events", True),
        ("apps/v1", "Deployment", "deployments", True),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
        ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
        ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
        ("networking.k8s.io/v1", "Ingress", "ingresses", True),
        ("coordination.k8s.io/v1", "Lease", "leases", True),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    ],
)
def test_builtin_kinds_come_from_lightkube_models(
    api_version: str, kind: str, plural: str, namespaced: bool
) -> None:
    assert builtin_kind(api_version, kind) == Kind(api_version, kind, plural, namespaced)


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("monitoring.coreos.com/v1", "ServiceMonitor"),  # a CRD
        ("hypersend.io/v1alpha1", "HypersendCluster"),
        ("apps/v1", "DeploymentStatus"),  # a subresource, not a kind
        ("apps/v1", "Nothing"),
        ("apps/v9", "Deployment"),
    ],
)
def test_other_kinds_are_not_builtin(api_version: str, kind: str) -> None:
    assert builtin_kind(api_version, kind) is None


@pytest.mark.parametrize(
    ("api_version", "group", "version"),
    [
        ("v1", "", "v1"),
        ("apps/v1", "apps", "v1"),
        ("monitoring.coreos.com/v1", "monitoring.coreos.com", "v1"),
    ],
)
def test_kinds_and_owned_kinds_split_an_api_version_alike(
    api_version: str, group: str, version: str
) -> None:
    # One definition (apiversion.py) behind both layers' kinds, which may not import each other.
    kind = Kind(api_version, "Thing", "things", namespaced=True)
    owned = OwnedKind(api_version, "Thing", "things")
    assert (kind.group, kind.version) == (owned.group, owned.version) == (group, version)


def crd(established: str = "True") -> dict[str, Any]:
    return {
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
            "versions": [{"name": "v1", "served": True}, {"name": "v1alpha1", "served": False}],
        },
        "status": {"conditions": [{"type": "Established", "status": established}]},
    }


def test_crd_kinds_are_its_served_versions_once_established() -> None:
    assert crd_kinds(crd()) == [
        Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", True)
    ]
    assert crd_kinds(crd("False")) == []


def test_event_names_its_object_and_caps_the_message() -> None:
    involved = {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {"name": "demo", "namespace": "team-a", "uid": "u1"},
    }
    event = event_manifest(involved, "Normal", "Applied", "x" * 2000, "pod-1")
    assert event["metadata"]["namespace"] == "team-a"
    assert event["metadata"]["name"].startswith("demo.")
    assert event["involvedObject"]["uid"] == "u1"
    assert len(event["message"]) == 1024
    assert event["reportingInstance"] == "pod-1"


async def test_fence_refuses_writes_before_sending() -> None:
    # No client at all: a refused write must not reach it (nor resolve its kind).
    kube = Kube(client=None, fence=lambda: False)  # type: ignore[arg-type]
    kube.add_kinds(Kind("v1", "ConfigMap", "configmaps", True))
    with pytest.raises(NotLeader):
        await kube.delete("v1", "ConfigMap", "ns", "x")
    kube.set_fence(None)
    with pytest.raises(AttributeError):  # now it would send: the missing client shows
        await kube.delete("v1", "ConfigMap", "ns", "x")


def test_api_error_kinds() -> None:
    assert ApiError(0, "ConnectError", "refused").transient
    assert ApiError(503, "ServiceUnavailable", "").transient
    assert not ApiError(410, "Expired", "too old").transient
    assert ApiError(409, "Conflict", "").conflict
    assert ApiError(404, "NotFound", "").not_found
