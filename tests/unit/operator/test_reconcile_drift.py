"""Compare-before-apply: what counts as a needed write and what is someone else's field."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypersend_operator import drift
from hypersend_operator.status import status_patch

pytestmark = pytest.mark.unit


def desired_deployment() -> dict[str, Any]:
    return drift.with_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "demo-chat", "namespace": "x", "labels": {"a": "1"}},
            "spec": {
                "template": {
                    "metadata": {"annotations": {"hypersend.io/config-hash": "abc"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "chat",
                                "image": "chat:1",
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "resources": {"limits": {"cpu": "1000m", "memory": "1Gi"}},
                                "env": [],
                            }
                        ]
                    },
                }
            },
        }
    )


def live_from(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns: defaults filled in, quantities canonicalised, extras added."""
    live = copy.deepcopy(desired)
    live["metadata"]["resourceVersion"] = "7"
    live["spec"]["replicas"] = 5  # set by the HPA
    tmpl = live["spec"]["template"]
    tmpl["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "2026-01-01T00:00:00Z"
    container = tmpl["spec"]["containers"][0]
    container["resources"]["limits"]["cpu"] = "1"
    container["ports"][0]["protocol"] = "TCP"
    container["terminationMessagePath"] = "/dev/termination-log"
    del container["env"]  # empty lists are dropped
    live["status"] = {"readyReplicas": 5}
    return live


def test_unchanged_object_needs_no_write() -> None:
    desired = desired_deployment()
    assert drift.drift(desired, live_from(desired)) is None


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda c: c.__setitem__("image", "evil:1"), ".spec.template.spec.containers[0].image"),
        (
            lambda c: c["ports"][0].__setitem__("containerPort", 9090),
            ".spec.template.spec.containers[0].ports[0].containerPort",
        ),
    ],
)
def test_edited_owned_field_is_drift(edit: Any, path: str) -> None:
    desired = desired_deployment()
    live = live_from(desired)
    edit(live["spec"]["template"]["spec"]["containers"][0])
    assert drift.drift(desired, live) == path


def test_edited_label_is_drift_extra_label_is_not() -> None:
    desired = desired_deployment()
    live = live_from(desired)
    live["metadata"]["labels"]["other"] = "team"
    assert drift.drift(desired, live) is None
    live["metadata"]["labels"]["a"] = "2"
    assert drift.drift(desired, live) == ".metadata.labels.a"


def test_spec_change_is_seen_through_the_hash() -> None:
    old = desired_deployment()
    live = live_from(old)
    new = copy.deepcopy(old)
    new["metadata"]["labels"].pop("a")  # a removal: containment alone would not see it
    new = drift.with_hash(new)
    assert drift.drift(new, live) == f"metadata.annotations.{drift.HASH_ANNOTATION}"


def test_hash_ignores_its_own_annotation_and_key_order() -> None:
    a = {"kind": "X", "metadata": {"name": "n"}, "spec": {"a": 1, "b": 2}}
    b = {"spec": {"b": 2, "a": 1}, "metadata": {"name": "n"}, "kind": "X"}
    assert drift.desired_hash(a) == drift.desired_hash(b)
    assert drift.desired_hash(drift.with_hash(a)) == drift.desired_hash(a)


def test_list_length_change_is_drift() -> None:
    desired = desired_deployment()
    live = live_from(desired)
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert drift.drift(desired, live) == ".spec.template.spec.containers"


def test_secret_string_data_is_normalised_to_data() -> None:
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    out = drift.normalize(secret)
    assert "stringData" not in out
    assert out["data"] == {"k": base64.b64encode(b"v").decode()}
    assert "stringData" in secret  # input untouched


def test_status_patch_nulls_removed_fields() -> None:
    old = {"phase": "Ready", "chat": {"replicas": 2, "connections": 10}, "x": 1}
    new = {"phase": "Ready", "chat": {"replicas": 3}}
    assert status_patch(old, new) == {"x": None, "chat": {"replicas": 3, "connections": None}}
    assert status_patch(new, new) == {}


def _deployment(replicas: int | None, managers: dict[str, bool]) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    managed = [
        {
            "manager": manager,
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}} if owns else {"f:template": {}}},
        }
        for manager, owns in managers.items()
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo-chat", "namespace": "x", "managedFields": managed},
        "spec": spec,
    }


def test_replicas_handoff_keeps_the_live_count_when_we_stop_declaring_replicas() -> None:
    desired = _deployment(None, {})  # autoscaling just switched on
    live = _deployment(4, {drift.FIELD_MANAGER: True})
    assert drift.replicas_handoff(desired, live) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo-chat", "namespace": "x"},
        "spec": {"replicas": 4},
    }


@pytest.mark.parametrize(
    ("desired_replicas", "live_managers"),
    [
        (3, {drift.FIELD_MANAGER: True}),  # still declared (autoscaling off): nothing to hand over
        (None, {drift.FIELD_MANAGER: False, "kube-controller-manager": True}),  # the HPA's already
    ],
)
def test_no_replicas_handoff_unless_we_drop_replicas_we_own(
    desired_replicas: int | None, live_managers: dict[str, bool]
) -> None:
    desired, live = _deployment(desired_replicas, {}), _deployment(4, live_managers)
    assert drift.replicas_handoff(desired, live) is None


def test_replicas_handoff_ignores_new_objects_and_other_kinds() -> None:
    assert drift.replicas_handoff(_deployment(None, {}), None) is None
    sts = {**_deployment(None, {}), "kind": "StatefulSet"}
    assert drift.replicas_handoff(sts, _deployment(2, {drift.FIELD_MANAGER: True})) is None
