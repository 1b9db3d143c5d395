"""Prometheus Operator objects, built only when asked for AND their CRDs exist in the cluster
(`ctx.capabilities`); otherwise applying them would fail with "no matches for kind"."""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.context import PROMETHEUS_RULE, SERVICE_MONITOR, BuildContext
from hypersend_operator.builders.hpa import CONNECTIONS_METRIC
from hypersend_operator.builders.labels import CHAT, child_name, metadata, selector_labels

NEAR_LIMIT_FRACTION = 0.9


def chat_service_monitor(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(ctx, child_name(ctx, CHAT), CHAT),
        "spec": {
            "selector": {"matchLabels": selector_labels(ctx, CHAT)},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": ctx.spec.monitoring.interval}
            ],
        },
    }


def chat_prometheus_rule(ctx: BuildContext) -> dict[str, Any]:
    chat = child_name(ctx, CHAT)
    ns = ctx.namespace
    limit = ctx.spec.chat.websocket.max_connections_per_pod
    pods = f'namespace="{ns}", pod=~"{chat}-.*"'
    rules: list[dict[str, Any]] = [
        {
            "alert": "HypersendChatNoTargets",
            "expr": f'sum(up{{namespace="{ns}", service="{chat}"}}) == 0',
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"No chat pod of {ns}/{ctx.name} is scraped",
                "description": f"Check the Deployment {chat} and its pods' readiness.",
            },
        },
        {
            "alert": "HypersendChatNearConnectionLimit",
            "expr": (f"max({CONNECTIONS_METRIC}{{{pods}}}) > {NEAR_LIMIT_FRACTION * limit:g}"),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"A chat pod of {ns}/{ctx.name} is near {limit} connections",
                "description": "Raise autoscaling.maxReplicas or lower targetConnectionsPerPod.",
            },
        },
    ]
    if ctx.spec.autoscaling.enabled:
        rules.append(
            {
                "alert": "HypersendChatAtMaxReplicas",
                "expr": (
                    "kube_horizontalpodautoscaler_status_current_replicas"
                    f'{{namespace="{ns}", horizontalpodautoscaler="{chat}"}}'
                    f" >= {ctx.spec.autoscaling.max_replicas}"
                ),
                "for": "15m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"{ns}/{ctx.name} runs at autoscaling.maxReplicas",
                    "description": "Load exceeds the autoscaling range; raise maxReplicas.",
                },
            }
        )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(ctx, chat, CHAT),
        "spec": {"groups": [{"name": f"hypersend.{ns}.{ctx.name}", "rules": rules}]},
    }


def build_monitoring(ctx: BuildContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    mon = ctx.spec.monitoring
    if mon.service_monitor and ctx.has(SERVICE_MONITOR):
        out.append(chat_service_monitor(ctx))
    if mon.prometheus_rule and ctx.has(PROMETHEUS_RULE):
        out.append(chat_prometheus_rule(ctx))
    return out
