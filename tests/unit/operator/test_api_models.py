"""The HypersendCluster models: study defaults, and clear errors for specs that cannot work."""

from __future__ import annotations

from typing import Any

import pytest
from hypersend_operator.api import (
    OPERATOR_ENV_NAMES,
    Condition,
    HypersendClusterSpec,
    HypersendClusterStatus,
)
from hypersend_operator.api.status import ChatStatus
from pydantic import ValidationError

from tests.unit.operator.support import IMAGE, spec

pytestmark = pytest.mark.unit


def validate(**blocks: Any) -> HypersendClusterSpec:
    chat = {"image": IMAGE, **blocks.pop("chat", {})}
    return HypersendClusterSpec.model_validate({"chat": chat, **blocks})


def error_of(**blocks: Any) -> str:
    with pytest.raises(ValidationError) as info:
        validate(**blocks)
    return str(info.value)


def test_defaults_are_the_study_shape() -> None:
    s = validate()
    assert s.chat.replicas == 2
    a = s.autoscaling
    assert (a.enabled, a.min_replicas, a.max_replicas) == (True, 2, 10)
    assert a.target_connections_per_pod == 1000
    assert a.target_cpu_utilization_percentage == 70
    assert a.target_memory_utilization_percentage == 80
    up, down = a.behavior.scale_up, a.behavior.scale_down
    assert up.select_policy == "Max"
    assert {(p.type, p.value, p.period_seconds) for p in up.policies} == {
        ("Percent", 100, 30),
        ("Pods", 2, 30),
    }
    assert down.stabilization_window_seconds == 300
    ws = s.chat.websocket
    assert (ws.ping_interval_seconds, ws.idle_timeout_seconds) == (30, 300)
    assert s.chat.rate_limit.requests_per_minute == 100
    assert (s.mongo.pool.min_size, s.mongo.pool.max_size) == (10, 50)
    assert s.redis.mode == "InCluster"
    assert s.mongo.mode == "InCluster"
    assert s.mongo.delete_policy == "Retain"
    assert s.mongo.in_cluster_settings().storage.size == "10Gi"
    assert s.chat.pod_disruption_budget.max_unavailable == 1
    assert s.chat.resources.requests == {"cpu": "500m", "memory": "512Mi"}
    assert not s.ingress.enabled
    assert not s.monitoring.service_monitor


def test_camel_case_on_the_wire_and_round_trip() -> None:
    body = {
        "chat": {"image": IMAGE, "podDisruptionBudget": {"maxUnavailable": "25%"}},
        "autoscaling": {"targetCPUUtilizationPercentage": 60, "minReplicas": 3},
        "mongo": {"mode": "Atlas", "atlas": {"connectionSecretRef": {"name": "a", "key": "uri"}}},
    }
    s = HypersendClusterSpec.model_validate(body)
    assert s.autoscaling.target_cpu_utilization_percentage == 60
    assert s.chat.pod_disruption_budget.max_unavailable == "25%"
    dumped = s.model_dump(by_alias=True, exclude_none=True)
    assert dumped["autoscaling"]["targetCPUUtilizationPercentage"] == 60
    assert dumped["mongo"]["atlas"] == {"connectionSecretRef": {"name": "a", "key": "uri"}}
    assert HypersendClusterSpec.model_validate(dumped) == s


def test_integer_quantities_become_strings() -> None:
    s = validate(chat={"resources": {"requests": {"cpu": 1}, "limits": {"memory": "1Gi"}}})
    assert s.chat.resources.requests == {"cpu": "1"}


def test_image_is_required() -> None:
    with pytest.raises(ValidationError, match="image"):
        HypersendClusterSpec.model_validate({"chat": {}})


def test_unknown_fields_are_refused() -> None:
    assert "replica" in error_of(chat={"replica": 3})


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        ),
        (
            {"redis": {"mode": "External"}},
            "redis.external.urlSecretRef is required when redis.mode is External",
        ),
        (
            {"redis": {"external": {"urlSecretRef": {"name": "r", "key": "url"}}}},
            "redis.external is only allowed when redis.mode is External",
        ),
        (
            {
                "redis": {
                    "mode": "External",
                    "inCluster": {},
                    "external": {"urlSecretRef": {"name": "r", "key": "url"}},
                }
            },
            "redis.inCluster is only allowed when redis.mode is InCluster",
        ),
        ({"mongo": {"mode": "Atlas"}}, "mongo.atlas.connectionSecretRef is required"),
        (
            {"mongo": {"atlas": {"connectionSecretRef": {"name": "a", "key": "uri"}}}},
            "mongo.atlas is only allowed when mongo.mode is Atlas",
        ),
        (
            {"mongo": {"pool": {"minSize": 60, "maxSize": 50}}},
            "mongo.pool.minSize must be less than or equal to mongo.pool.maxSize",
        ),
        ({"ingress": {"enabled": True}}, "ingress.host is required when ingress.enabled is true"),
        (
            {"chat": {"websocket": {"pingIntervalSeconds": 60, "idleTimeoutSeconds": 30}}},
            "idleTimeoutSeconds must be greater than pingIntervalSeconds",
        ),
        (
            {"autoscaling": {"targetConnectionsPerPod": 6000}},
            "targetConnectionsPerPod must not exceed chat.websocket.maxConnectionsPerPod",
        ),
        (
            {"chat": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
            "variable names must be unique",
        ),
        ({"chat": {"env": [{"name": "1BAD"}]}}, "should match pattern"),
        ({"chat": {"resources": {"requests": {"cpu": "lots"}}}}, "should match pattern"),
        ({"chat": {"podDisruptionBudget": {"maxUnavailable": "50"}}}, "should match pattern"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": 0}}, "greater than or equal to 1"),
        ({"mongo": {"mode": "Postgres"}}, "'InCluster' or 'Atlas'"),
        (
            {"monitoring": {"labels": {"app.kubernetes.io/instance": "x"}}},
            "monitoring.labels: app.kubernetes.io/ keys are the operator's",
        ),
        (
            {"monitoring": {"labels": {"-release": "x"}}},
            "monitoring.labels: '-release' is not a valid label key",
        ),
        ({"monitoring": {"labels": {"release": "not ok"}}}, "should match pattern"),
    ],
)
def test_bad_specs_get_a_message_that_says_what_to_fix(
    blocks: dict[str, Any], message: str
) -> None:
    assert message in error_of(**blocks)


@pytest.mark.parametrize("name", OPERATOR_ENV_NAMES)
def test_operator_env_names_cannot_be_overridden(name: str) -> None:
    assert f"chat.env: {name} is set by the operator" in error_of(
        chat={"env": [{"name": name, "value": "x"}]}
    )


def test_other_env_names_are_allowed() -> None:
    s = validate(chat={"env": [{"name": "HYPERSEND_MAX_MESSAGE_BYTES", "value": "32768"}]})
    assert s.chat.env[0].name == "HYPERSEND_MAX_MESSAGE_BYTES"


def test_autoscaling_off_allows_any_connection_target() -> None:
    s = validate(autoscaling={"enabled": False, "targetConnectionsPerPod": 99999})
    assert not s.autoscaling.enabled


def test_status_dumps_camel_case_without_nones() -> None:
    status = HypersendClusterStatus(
        observed_generation=4,
        phase="Progressing",
        conditions=[
            Condition(
                type="Ready",
                status="False",
                reason="ChatNotReady",
                message="chat Deployment has 1/3 ready pods",
                last_transition_time="2026-11-25T09:00:00Z",
                observed_generation=4,
            )
        ],
        chat=ChatStatus(replicas=3, ready_replicas=1, ready="1/3", selector="a=b"),
    )
    assert status.model_dump(by_alias=True, exclude_none=True) == {
        "observedGeneration": 4,
        "phase": "Progressing",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ChatNotReady",
                "message": "chat Deployment has 1/3 ready pods",
                "lastTransitionTime": "2026-11-25T09:00:00Z",
                "observedGeneration": 4,
            }
        ],
        "chat": {"replicas": 3, "readyReplicas": 1, "ready": "1/3", "selector": "a=b"},
    }


def test_status_refuses_unknown_phase() -> None:
    with pytest.raises(ValidationError, match="Pending"):
        HypersendClusterStatus.model_validate({"phase": "Running"})


def test_monitoring_labels_take_prefixed_keys_and_empty_values() -> None:
    labels = {"release": "kube-prometheus-stack", "team.example.com/owner": "", "prometheus": "k8s"}
    parsed = spec(monitoring={"labels": labels})
    assert parsed.monitoring.labels == labels
