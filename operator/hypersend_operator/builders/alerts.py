"""Hypersend's alerting rules, defined once and rendered for two scopes.

- `cluster_scope(ctx)`: one HypersendCluster. Series are filtered to its namespace and chat pods,
  the chat container's CPU and memory limits come from its spec. The operator puts these rules in
  the cluster's PrometheusRule (`spec.monitoring.prometheusRule: true`).
- `ALL_CLUSTERS`: every Hypersend chat pod the Prometheus scrapes. The limits are read from
  cAdvisor's `container_spec_*` series instead. This is the chart's plain rule file
  `files/rules/hypersend-chat.rules.yaml`, for users without the operator's rule.

`operator_rules()` are the operator's own alerts (its reconcile errors): the chart's
`files/rules/hypersend-operator.rules.yaml`. Both chart files are written by
`python -m hypersend_operator.rulefiles`, and a unit test fails when they drift.

Series each alert needs (all exported by Hypersend unless said otherwise):
- error rate, p99 latency: `hypersend_http_requests_total`,
  `hypersend_http_request_duration_seconds`
- CPU: cAdvisor's `container_cpu_usage_seconds_total` (kubelet `/metrics/cadvisor`); for all
  clusters also `container_spec_cpu_quota` and `container_spec_cpu_period`
- memory: cAdvisor's `container_memory_working_set_bytes`; for all clusters also
  `container_spec_memory_limit_bytes`. No kube-state-metrics series is needed by either.
- MongoDB pool: `hypersend_mongo_pool_checked_out_connections`,
  `hypersend_mongo_pool_max_connections`
- connections: `hypersend_websocket_connections`, `hypersend_websocket_max_connections`
- pub/sub lag, gap fills, slow consumers: `hypersend_pubsub_lag_seconds`,
  `hypersend_gap_fills_total`, `hypersend_slow_consumer_disconnects_total`
- not Ready: the operator's `hypersend_operator_cluster_ready`
- one cluster only: no chat target up (`up`), at maxReplicas (kube-state-metrics'
  `kube_horizontalpodautoscaler_status_current_replicas`, only with autoscaling on)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.deployment import CHAT_CONTAINER
from hypersend_operator.builders.labels import CHAT, child_name
from hypersend_operator.quantity import parse_quantity

Rule = dict[str, Any]

CHAT_GROUP: Final = "hypersend-chat"
OPERATOR_GROUP: Final = "hypersend-operator"

# Thresholds (the deployment study's alerting rules, and the operational ones added with them).
ERROR_RATIO: Final = 0.01
P99_LATENCY_SECONDS: Final = 1.0
CPU_FRACTION: Final = 0.85
MEMORY_FRACTION: Final = 0.90
MONGO_POOL_FRACTION: Final = 0.80
NEAR_LIMIT_FRACTION: Final = 0.90
PUBSUB_P99_LAG_SECONDS: Final = 0.5
GAP_FILLS_PER_MINUTE: Final = 1.0
SLOW_CONSUMERS_PER_MINUTE: Final = 1.0
RATE_WINDOW: Final = "5m"


@dataclass(frozen=True)
class Scope:
    """Which series the chat alerts read, and where the container limits come from.

    Matchers are PromQL label matchers without braces ("" matches every series of the name).
    A limit is a PromQL expression by (namespace, pod), or a number; None leaves its alert out.
    """

    chat: str  # the chat pods' own series (hypersend_*, up)
    container: str  # cAdvisor series of the chat container
    cluster: str  # the operator's hypersend_operator_cluster_ready
    cpu_limit: str | None
    memory_limit: str | None
    # Appended to the cAdvisor alerts to keep them to Hypersend chat pods ("" when `container`
    # already does).
    only_chat_pods: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # added to every alert


def _sel(*matchers: str) -> str:
    inner = ", ".join(m for m in matchers if m)
    return f"{{{inner}}}" if inner else ""


def _num(value: float) -> str:
    return f"{value:.15g}"


ALL_CLUSTERS: Final = Scope(
    chat="",
    container=f'container="{CHAT_CONTAINER}"',
    cluster="",
    cpu_limit=(
        f'sum by (namespace, pod) (container_spec_cpu_quota{{container="{CHAT_CONTAINER}"}} > 0)'
        f' / sum by (namespace, pod) (container_spec_cpu_period{{container="{CHAT_CONTAINER}"}})'
    ),
    memory_limit=(
        "max by (namespace, pod) "
        f'(container_spec_memory_limit_bytes{{container="{CHAT_CONTAINER}"}} > 0)'
    ),
    # A container named "chat" of some other application is not ours: keep pods that export
    # Hypersend's own gauge.
    only_chat_pods=" and on (namespace, pod) hypersend_websocket_max_connections",
)


def cluster_scope(ctx: BuildContext) -> Scope:
    chat = child_name(ctx, CHAT)
    # Deployment pods are <deployment>-<template hash>-<suffix>; anchored, so "demo-chat" does
    # not also match a cluster named "demo-chat-x".
    # Names may hold dots (DNS subdomains): escaped for the regex, and the backslash for PromQL.
    pod_regex = chat.replace(".", "\\\\.") + "-[a-z0-9]+-[a-z0-9]+"
    pods = f'namespace="{ctx.namespace}", pod=~"{pod_regex}"'
    limits = ctx.spec.chat.resources.limits
    cpu = limits.get("cpu")
    memory = limits.get("memory")
    return Scope(
        chat=pods,
        container=f'{pods}, container="{CHAT_CONTAINER}"',
        cluster=f'hypersendcluster_namespace="{ctx.namespace}", hypersendcluster="{ctx.name}"',
        cpu_limit=None if cpu is None else _num(parse_quantity(cpu)),
        memory_limit=None if memory is None else _num(parse_quantity(memory)),
        labels={"hypersendcluster": ctx.name},
    )


def _alert(
    scope: Scope,
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    labels: dict[str, str] | None = None,
) -> Rule:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **scope.labels, **(labels or {})},
        "annotations": {"summary": summary, "description": description},
    }


def _rate(metric: str, scope: Scope, *matchers: str) -> str:
    return f"rate({metric}{_sel(scope.chat, *matchers)}[{RATE_WINDOW}])"


def _p99(histogram: str, scope: Scope) -> str:
    rate = _rate(f"{histogram}_bucket", scope)
    return f"histogram_quantile(0.99, sum by (namespace, job, le) ({rate}))"


WHERE = "{{ $labels.namespace }}/{{ $labels.job }}"
POD = "{{ $labels.namespace }}/{{ $labels.pod }}"


def chat_alerts(scope: Scope) -> list[Rule]:
    """The chat backend's alerts, in a stable order."""
    s = scope
    by = "sum by (namespace, job)"
    errors = _rate("hypersend_http_requests_total", s, 'status=~"5.."')
    requests = _rate("hypersend_http_requests_total", s)
    rules = [
        _alert(
            s,
            "HypersendHighErrorRate",
            f"{by} ({errors}) / {by} ({requests}) > {_num(ERROR_RATIO)}",
            "5m",
            "critical",
            f"More than {ERROR_RATIO:.0%} of HTTP requests to {WHERE} fail with 5xx",
            "Chat pods answer 5xx: check their logs and MongoDB/Redis reachability.",
        ),
        _alert(
            s,
            "HypersendHighLatency",
            f"{_p99('hypersend_http_request_duration_seconds', s)} > {_num(P99_LATENCY_SECONDS)}",
            "10m",
            "warning",
            f"p99 HTTP latency of {WHERE} is above {_num(P99_LATENCY_SECONDS)}s",
            "Requests are slow: check MongoDB latency, the pool alert and the pods' CPU.",
        ),
    ]
    if s.cpu_limit is not None:
        usage = (
            "sum by (namespace, pod) "
            f"(rate(container_cpu_usage_seconds_total{_sel(s.container)}[{RATE_WINDOW}]))"
        )
        rules.append(
            _alert(
                s,
                "HypersendChatHighCPU",
                f"({usage} / ({s.cpu_limit}) > {_num(CPU_FRACTION)}){s.only_chat_pods}",
                "5m",
                "warning",
                f"Chat pod {POD} uses more than {CPU_FRACTION:.0%} of its CPU limit",
                "The pod is near CPU throttling; the HPA should add pods (is it at maxReplicas?).",
            )
        )
    if s.memory_limit is not None:
        working_set = (
            f"max by (namespace, pod) (container_memory_working_set_bytes{_sel(s.container)})"
        )
        rules.append(
            _alert(
                s,
                "HypersendChatHighMemory",
                f"({working_set} / ({s.memory_limit}) > {_num(MEMORY_FRACTION)}){s.only_chat_pods}",
                "5m",
                "warning",
                f"Chat pod {POD} uses more than {MEMORY_FRACTION:.0%} of its memory limit",
                "The pod is close to being OOM-killed; raise chat.resources.limits.memory.",
            )
        )
    rules += [
        _alert(
            s,
            "HypersendMongoPoolSaturated",
            "max without (address) "
            f"(hypersend_mongo_pool_checked_out_connections{_sel(s.chat)})"
            f" / hypersend_mongo_pool_max_connections{_sel(s.chat)} > {_num(MONGO_POOL_FRACTION)}",
            "5m",
            "warning",
            f"Chat pod {POD} uses more than {MONGO_POOL_FRACTION:.0%} of its MongoDB pool",
            "Operations queue for a connection: raise mongo.pool.maxSize or check MongoDB.",
        ),
        _alert(
            s,
            "HypersendChatNearConnectionLimit",
            f"hypersend_websocket_connections{_sel(s.chat)}"
            f" / hypersend_websocket_max_connections{_sel(s.chat)} > {_num(NEAR_LIMIT_FRACTION)}",
            "10m",
            "warning",
            f"Chat pod {POD} holds more than {NEAR_LIMIT_FRACTION:.0%} of its maximum connections",
            "New sockets will be refused: raise autoscaling.maxReplicas or lower "
            "targetConnectionsPerPod.",
        ),
        _alert(
            s,
            "HypersendPubSubLag",
            f"{_p99('hypersend_pubsub_lag_seconds', s)} > {_num(PUBSUB_P99_LAG_SECONDS)}",
            "5m",
            "warning",
            f"p99 Redis pub/sub lag of {WHERE} is above {_num(PUBSUB_P99_LAG_SECONDS)}s",
            "Messages reach other pods late: check Redis CPU and network.",
        ),
        _alert(
            s,
            "HypersendGapFills",
            f"{by} ({_rate('hypersend_gap_fills_total', s)}) * 60 > {_num(GAP_FILLS_PER_MINUTE)}",
            "10m",
            "warning",
            f"Chat pods of {WHERE} keep reading history to fill message gaps",
            "Published messages go missing (Redis drops or pods killed between store and "
            "publish); clients still get every message, later.",
        ),
        _alert(
            s,
            "HypersendSlowConsumerDisconnects",
            f"{by} ({_rate('hypersend_slow_consumer_disconnects_total', s)}) * 60"
            f" > {_num(SLOW_CONSUMERS_PER_MINUTE)}",
            "10m",
            "warning",
            f"Chat pods of {WHERE} keep disconnecting slow WebSocket clients",
            "Clients read slower than messages arrive (bad networks, or pods starved of CPU).",
        ),
        _alert(
            s,
            "HypersendClusterNotReady",
            f"hypersend_operator_cluster_ready{_sel(s.cluster)} == 0",
            "10m",
            "critical",
            "HypersendCluster {{ $labels.hypersendcluster_namespace }}/"
            "{{ $labels.hypersendcluster }} is not Ready",
            "See `kubectl hypersend status` or the cluster's conditions for the reason.",
        ),
    ]
    return rules


def cluster_only_alerts(ctx: BuildContext) -> list[Rule]:
    """Alerts that only make sense for one named cluster."""
    s = cluster_scope(ctx)
    chat = child_name(ctx, CHAT)
    rules = [
        _alert(
            s,
            "HypersendChatNoTargets",
            f"absent(up{_sel(s.chat)} == 1)",
            "5m",
            "critical",
            f"No chat pod of {ctx.namespace}/{ctx.name} is scraped and up",
            f"Check the Deployment {chat}, its pods' readiness and the ServiceMonitor.",
            labels={"namespace": ctx.namespace},
        )
    ]
    if ctx.spec.autoscaling.enabled:
        rules.append(
            _alert(
                s,
                "HypersendChatAtMaxReplicas",
                "kube_horizontalpodautoscaler_status_current_replicas"
                f'{{namespace="{ctx.namespace}", horizontalpodautoscaler="{chat}"}}'
                f" >= {ctx.spec.autoscaling.max_replicas}",
                "15m",
                "warning",
                f"{ctx.namespace}/{ctx.name} runs at autoscaling.maxReplicas",
                "Load exceeds the autoscaling range; raise maxReplicas.",
            )
        )
    return rules


def operator_rules() -> list[Rule]:
    """The operator's own alerts (one operator, whatever the clusters)."""
    none = Scope(chat="", container="", cluster="", cpu_limit=None, memory_limit=None)
    return [
        _alert(
            none,
            "HypersendOperatorReconcileErrors",
            "sum by (namespace, job, error) "
            "(increase(hypersend_operator_reconcile_errors_total[10m])) > 0",
            "15m",
            "warning",
            "The Hypersend operator {{ $labels.namespace }}/{{ $labels.job }} keeps failing "
            "reconcile passes ({{ $labels.error }})",
            "Read the operator's log; api_<code> errors come from the API server (RBAC, "
            "admission), others from the operator itself.",
        )
    ]


def cluster_rule_groups(ctx: BuildContext) -> list[dict[str, Any]]:
    """The groups of one HypersendCluster's PrometheusRule."""
    rules = chat_alerts(cluster_scope(ctx)) + cluster_only_alerts(ctx)
    return [{"name": f"{CHAT_GROUP}.{ctx.namespace}.{ctx.name}", "rules": rules}]


def chart_rule_files() -> dict[str, dict[str, Any]]:
    """The chart's plain Prometheus rule files, by name under files/rules/."""
    return {
        f"{CHAT_GROUP}.rules.yaml": {
            "groups": [{"name": CHAT_GROUP, "rules": chat_alerts(ALL_CLUSTERS)}]
        },
        f"{OPERATOR_GROUP}.rules.yaml": {
            "groups": [{"name": OPERATOR_GROUP, "rules": operator_rules()}]
        },
    }
