"""HorizontalPodAutoscaler (autoscaling/v2) of the chat Deployment: open WebSocket connections per
pod first, CPU and memory as backstops; the largest recommendation wins."""

from __future__ import annotations

from typing import Any

from hypersend_operator.api import ScalingRules
from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata

CONNECTIONS_METRIC = "hypersend_websocket_connections"


def _rules(rules: ScalingRules) -> dict[str, Any]:
    return {
        "stabilizationWindowSeconds": rules.stabilization_window_seconds,
        "selectPolicy": rules.select_policy,
        "policies": [
            {"type": p.type, "value": p.value, "periodSeconds": p.period_seconds}
            for p in rules.policies
        ],
    }


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {
            "name": resource,
            "target": {"type": "Utilization", "averageUtilization": percent},
        },
    }


def chat_hpa(ctx: BuildContext) -> dict[str, Any]:
    auto = ctx.spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(ctx, child_name(ctx, CHAT), CHAT),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": child_name(ctx, CHAT),
            },
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": CONNECTIONS_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(auto.target_connections_per_pod),
                        },
                    },
                },
                _utilization("cpu", auto.target_cpu_utilization_percentage),
                _utilization("memory", auto.target_memory_utilization_percentage),
            ],
            "behavior": {
                "scaleUp": _rules(auto.behavior.scale_up),
                "scaleDown": _rules(auto.behavior.scale_down),
            },
        },
    }


def build_autoscaling(ctx: BuildContext) -> list[dict[str, Any]]:
    return [chat_hpa(ctx)] if ctx.spec.autoscaling.enabled else []
