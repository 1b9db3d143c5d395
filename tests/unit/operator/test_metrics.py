"""The operator's per-cluster Ready gauge, read back from the real prometheus_client registry."""

from __future__ import annotations

import pytest
from hypersend_operator import metrics
from prometheus_client import REGISTRY

pytestmark = pytest.mark.unit


def gauge(namespace: str, name: str) -> float | None:
    labels = {"hypersendcluster_namespace": namespace, "hypersendcluster": name}
    return REGISTRY.get_sample_value("hypersend_operator_cluster_ready", labels)


def conditions(ready: str) -> dict[str, object]:
    return {
        "phase": "Ready" if ready == "True" else "Degraded",
        "conditions": [
            {"type": "Ready", "status": ready},
            {"type": "Degraded", "status": "False" if ready == "True" else "True"},
        ],
    }


@pytest.mark.parametrize(
    ("status", "ready"),
    [
        (conditions("True"), True),
        (conditions("False"), False),
        (conditions("Unknown"), False),
        ({"phase": "Pending"}, False),
        ({"conditions": [{"type": "ChatReady", "status": "True"}]}, False),
    ],
)
def test_is_ready_reads_only_the_ready_condition(status: dict[str, object], ready: bool) -> None:
    assert metrics.is_ready(status) is ready


def test_gauge_follows_status_and_is_forgotten() -> None:
    assert gauge("team-a", "gauge-test") is None
    metrics.observe_cluster("team-a", "gauge-test", conditions("False"))
    assert gauge("team-a", "gauge-test") == 0
    metrics.observe_cluster("team-a", "gauge-test", conditions("True"))
    assert gauge("team-a", "gauge-test") == 1
    assert gauge("team-b", "gauge-test") is None  # one series per cluster
    metrics.forget_cluster("team-a", "gauge-test")
    assert gauge("team-a", "gauge-test") is None
    metrics.forget_cluster("team-a", "gauge-test")  # twice (the delete handler and a pass): fine
