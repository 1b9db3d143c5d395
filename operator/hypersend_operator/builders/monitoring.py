"""Prometheus Operator objects, built only when asked for AND their CRDs exist in the cluster
(`ctx.capabilities`); otherwise applying them would fail with "no matches for kind"."""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.alerts import cluster_rule_groups
from hypersend_operator.builders.context import PROMETHEUS_RULE, SERVICE_MONITOR, BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata, selector_labels


def _metadata(ctx: BuildContext) -> dict[str, Any]:
    """The chat child metadata plus `monitoring.labels`, which the Prometheus selects on (the
    operator's own labels win: the API refuses app.kubernetes.io/ keys anyway)."""
    meta = metadata(ctx, child_name(ctx, CHAT), CHAT)
    meta["labels"] = {**ctx.spec.monitoring.labels, **meta["labels"]}
    return meta


def chat_service_monitor(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(ctx),
        "spec": {
            "selector": {"matchLabels": selector_labels(ctx, CHAT)},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": ctx.spec.monitoring.interval}
            ],
        },
    }


def chat_prometheus_rule(ctx: BuildContext) -> dict[str, Any]:
    """The cluster's alerts (`builders.alerts`, the same definitions as the chart's rule file)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(ctx),
        "spec": {"groups": cluster_rule_groups(ctx)},
    }


def build_monitoring(ctx: BuildContext) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    mon = ctx.spec.monitoring
    if mon.service_monitor and ctx.has(SERVICE_MONITOR):
        out.append(chat_service_monitor(ctx))
    if mon.prometheus_rule and ctx.has(PROMETHEUS_RULE):
        out.append(chat_prometheus_rule(ctx))
    return out
