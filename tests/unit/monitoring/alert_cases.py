"""One promtool case per alert: input series on which it fires (and when), series on which it
stays quiet, the labels it fires with, and a wrong threshold that must make the case fail.

Series carry the labels a real scrape gives them: the chat pods' own series the target labels of
the chat ServiceMonitor (namespace, job, pod, instance); cAdvisor's namespace, pod and container;
the operator's its own target labels. The same series serve both scopes: the chart's rules for
all clusters and the PrometheusRule of the cluster `demo` in `team-a` (tests/unit/operator/support).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

NAMESPACE: Final = "team-a"
CLUSTER: Final = "demo"
POD: Final = "demo-chat-7d9f8c6b5-x2x4z"
# Another application's pod in the same namespace, whose container is also called "chat".
FOREIGN_POD: Final = "other-chat-5d6f7c8b9-qwert"

CHAT: Final = {"namespace": NAMESPACE, "job": "demo-chat", "pod": POD, "instance": f"{POD}:8080"}
CADVISOR: Final = {"namespace": NAMESPACE, "pod": POD, "container": "chat"}
OPERATOR: Final = {
    "namespace": "hypersend-system",
    "job": "hs-hypersend-operator-metrics",
    "pod": "hs-hypersend-operator-6b8f9d7c5-abcde",
}
CLUSTER_LABELS: Final = {"hypersendcluster_namespace": NAMESPACE, "hypersendcluster": CLUSTER}
BY_JOB: Final = {"namespace": NAMESPACE, "job": "demo-chat"}
BY_POD: Final = {"namespace": NAMESPACE, "pod": POD}

Series = list[tuple[str, dict[str, str], str]]  # (metric, labels, promtool values)


def series_text(metric: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{inner}}}"


@dataclass(frozen=True)
class AlertCase:
    alert: str
    firing: Series  # the alert fires on these...
    pending_at: str  # ...not yet at this time (its `for` has not passed)...
    fires_at: str  # ...and at this one, with exactly these labels (plus the rule's own)
    labels: dict[str, str]
    quiet: Series  # no alert at `fires_at` on these
    # (old, new) in the expr: a wrong threshold under which the firing case must fail.
    wrong_threshold: tuple[str, str]
    extra_labels: dict[str, str] = field(default_factory=dict)  # for the cluster scope only


def histogram(metric: str, labels: dict[str, str], per_minute: dict[str, int]) -> Series:
    """Cumulative bucket counters growing by `per_minute[le]` each minute."""
    return [(f"{metric}_bucket", {**labels, "le": le}, f"0+{n}x30") for le, n in per_minute.items()]


REQUEST = {**CHAT, "method": "GET", "route": "/api/v1/rooms"}
PUBSUB = "hypersend_pubsub_lag_seconds"
DURATION = "hypersend_http_request_duration_seconds"


def cpu_series(cores_per_second: float) -> Series:
    per_minute = f"{cores_per_second * 60:g}"
    foreign = {**CADVISOR, "pod": FOREIGN_POD}
    return [
        ("container_cpu_usage_seconds_total", CADVISOR, f"0+{per_minute}x20"),
        ("container_spec_cpu_quota", CADVISOR, "100000x20"),
        ("container_spec_cpu_period", CADVISOR, "100000x20"),
        ("hypersend_websocket_max_connections", CHAT, "5000x20"),
        # Not a Hypersend pod (no Hypersend series): never alerts, even at 100 %.
        ("container_cpu_usage_seconds_total", foreign, "0+60x20"),
        ("container_spec_cpu_quota", foreign, "100000x20"),
        ("container_spec_cpu_period", foreign, "100000x20"),
    ]


def memory_series(working_set: int) -> Series:
    foreign = {**CADVISOR, "pod": FOREIGN_POD}
    return [
        ("container_memory_working_set_bytes", CADVISOR, f"{working_set}x20"),
        ("container_spec_memory_limit_bytes", CADVISOR, "1073741824x20"),  # 1Gi, the default
        ("hypersend_websocket_max_connections", CHAT, "5000x20"),
        ("container_memory_working_set_bytes", foreign, "1073741824x20"),
        ("container_spec_memory_limit_bytes", foreign, "1073741824x20"),
    ]


CHAT_CASES: Final = [
    AlertCase(
        "HypersendHighErrorRate",
        firing=[
            ("hypersend_http_requests_total", {**REQUEST, "status": "200"}, "0+6000x20"),
            ("hypersend_http_requests_total", {**REQUEST, "status": "500"}, "0+120x20"),  # 2 %
        ],
        pending_at="4m",
        fires_at="10m",
        labels=BY_JOB,
        quiet=[
            ("hypersend_http_requests_total", {**REQUEST, "status": "200"}, "0+6000x20"),
            ("hypersend_http_requests_total", {**REQUEST, "status": "500"}, "0+30x20"),  # 0.5 %
        ],
        wrong_threshold=("> 0.01", "> 0.05"),
    ),
    AlertCase(
        "HypersendHighLatency",
        # p99 falls in (1, 2.5]: 2.2 s.
        firing=histogram(DURATION, REQUEST, {"0.5": 95, "1.0": 95, "2.5": 100, "+Inf": 100}),
        pending_at="8m",
        fires_at="15m",
        labels=BY_JOB,
        # p99 0.75 s.
        quiet=histogram(DURATION, REQUEST, {"0.5": 98, "1.0": 100, "2.5": 100, "+Inf": 100}),
        wrong_threshold=(")) > 1", ")) > 2.5"),
    ),
    AlertCase(
        "HypersendChatHighCPU",
        firing=cpu_series(0.9),  # of a 1-core limit
        pending_at="4m",
        fires_at="10m",
        labels=BY_POD,
        quiet=cpu_series(0.5),
        wrong_threshold=("> 0.85", "> 0.95"),
    ),
    AlertCase(
        "HypersendChatHighMemory",
        firing=memory_series(1_000_000_000),  # 93 % of 1Gi
        pending_at="4m",
        fires_at="10m",
        labels=BY_POD,
        quiet=memory_series(500_000_000),
        wrong_threshold=("> 0.9", "> 0.95"),
    ),
    AlertCase(
        "HypersendMongoPoolSaturated",
        firing=[
            (
                "hypersend_mongo_pool_checked_out_connections",
                {**CHAT, "address": "demo-mongo-0.demo-mongo:27017"},
                "45x20",
            ),
            ("hypersend_mongo_pool_max_connections", CHAT, "50x20"),
        ],
        pending_at="4m",
        fires_at="10m",
        labels=CHAT,
        quiet=[
            (
                "hypersend_mongo_pool_checked_out_connections",
                {**CHAT, "address": "demo-mongo-0.demo-mongo:27017"},
                "20x20",
            ),
            ("hypersend_mongo_pool_max_connections", CHAT, "50x20"),
        ],
        wrong_threshold=("> 0.8", "> 0.95"),
    ),
    AlertCase(
        "HypersendChatNearConnectionLimit",
        firing=[
            ("hypersend_websocket_connections", CHAT, "4700x30"),
            ("hypersend_websocket_max_connections", CHAT, "5000x30"),
        ],
        pending_at="8m",
        fires_at="15m",
        labels=CHAT,
        quiet=[
            ("hypersend_websocket_connections", CHAT, "3000x30"),
            ("hypersend_websocket_max_connections", CHAT, "5000x30"),
        ],
        wrong_threshold=("> 0.9", "> 0.95"),
    ),
    AlertCase(
        "HypersendPubSubLag",
        # p99 0.9 s.
        firing=histogram(PUBSUB, CHAT, {"0.25": 95, "0.5": 95, "1.0": 100, "+Inf": 100}),
        pending_at="4m",
        fires_at="10m",
        labels=BY_JOB,
        # p99 0.175 s.
        quiet=histogram(PUBSUB, CHAT, {"0.1": 98, "0.25": 100, "1.0": 100, "+Inf": 100}),
        wrong_threshold=(")) > 0.5", ")) > 1"),
    ),
    AlertCase(
        "HypersendGapFills",
        firing=[("hypersend_gap_fills_total", CHAT, "0+3x30")],  # 3 a minute
        pending_at="8m",
        fires_at="15m",
        labels=BY_JOB,
        quiet=[("hypersend_gap_fills_total", CHAT, "0+0.5x30")],
        wrong_threshold=("* 60 > 1", "* 60 > 5"),
    ),
    AlertCase(
        "HypersendSlowConsumerDisconnects",
        firing=[("hypersend_slow_consumer_disconnects_total", CHAT, "0+3x30")],
        pending_at="8m",
        fires_at="15m",
        labels=BY_JOB,
        quiet=[("hypersend_slow_consumer_disconnects_total", CHAT, "0+0.5x30")],
        wrong_threshold=("* 60 > 1", "* 60 > 5"),
    ),
    AlertCase(
        "HypersendClusterNotReady",
        firing=[("hypersend_operator_cluster_ready", {**OPERATOR, **CLUSTER_LABELS}, "0x20")],
        pending_at="8m",
        fires_at="15m",
        labels={**OPERATOR, **CLUSTER_LABELS},
        # Not Ready for 5 minutes only (a rollout): no alert.
        quiet=[
            ("hypersend_operator_cluster_ready", {**OPERATOR, **CLUSTER_LABELS}, "0 0 0 0 0 1x15")
        ],
        wrong_threshold=("== 0", "== 1"),
    ),
]

# Only in one cluster's PrometheusRule.
CLUSTER_ONLY_CASES: Final = [
    AlertCase(
        "HypersendChatNoTargets",
        firing=[("up", CHAT, "0x20")],
        pending_at="3m",
        fires_at="10m",
        labels={},
        quiet=[("up", CHAT, "1x20")],
        wrong_threshold=("== 1", "== 0"),
        extra_labels={"namespace": NAMESPACE},
    ),
    AlertCase(
        "HypersendChatAtMaxReplicas",
        firing=[
            (
                "kube_horizontalpodautoscaler_status_current_replicas",
                {"namespace": NAMESPACE, "horizontalpodautoscaler": "demo-chat"},
                "10x30",  # autoscaling.maxReplicas' default
            )
        ],
        pending_at="10m",
        fires_at="20m",
        labels={"namespace": NAMESPACE, "horizontalpodautoscaler": "demo-chat"},
        quiet=[
            (
                "kube_horizontalpodautoscaler_status_current_replicas",
                {"namespace": NAMESPACE, "horizontalpodautoscaler": "demo-chat"},
                "5x30",
            )
        ],
        wrong_threshold=(">= 10", ">= 11"),
    ),
]

OPERATOR_CASES: Final = [
    AlertCase(
        "HypersendOperatorReconcileErrors",
        firing=[
            (
                "hypersend_operator_reconcile_errors_total",
                {**OPERATOR, "error": "api_409"},
                "0+1x40",
            )
        ],
        pending_at="10m",
        fires_at="20m",
        labels={"namespace": OPERATOR["namespace"], "job": OPERATOR["job"], "error": "api_409"},
        # Errors long ago (the counter stays): no alert.
        quiet=[
            ("hypersend_operator_reconcile_errors_total", {**OPERATOR, "error": "api_409"}, "5x40")
        ],
        wrong_threshold=("> 0", "> 20"),
    )
]
