"""Prometheus metrics the operator exports (served by `__main__` on --metrics-port)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "hypersend_operator_reconciles_total",
    "Reconcile passes, by trigger and result",
    ["trigger", "result"],
)
RECONCILE_DURATION = Histogram(
    "hypersend_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "hypersend_operator_reconcile_errors_total",
    "Reconcile passes that failed, by kind of error",
    ["error"],
)
DRIFT_CORRECTIONS = Counter(
    "hypersend_operator_drift_corrections_total",
    "Children changed by someone else and put back to the desired state",
    ["kind"],
)
CHILD_WRITES = Counter(
    "hypersend_operator_child_writes_total",
    "Children created, updated or deleted, by action and kind",
    ["action", "kind"],
)
API_WRITES = Counter(
    "hypersend_operator_api_write_requests_total",
    "Mutating requests sent to the API server, by verb and kind",
    ["verb", "kind"],
)
# Reads too: the benchmark counts the requests of a reconcile pass with it.
API_REQUESTS = Counter(
    "hypersend_operator_api_requests_total",
    "Requests sent to the API server (every attempt, reads and writes), by verb "
    "(get/list/watch/apply/patch/create/update/delete) and kind",
    ["verb", "kind"],
)
WATCH_EVENTS = Counter(
    "hypersend_operator_watch_events_total",
    "Watch events received, by kind and event type",
    ["kind", "type"],
)
WATCH_BYTES = Counter(
    "hypersend_operator_watch_bytes_total",
    "Size of the watch events' objects received, by kind, measured as the object re-serialised "
    "to compact JSON (not the bytes on the wire)",
    ["kind"],
)
QUEUE_DEPTH = Gauge(
    "hypersend_operator_queue_depth",
    "Clusters waiting for a worker to run their pass (handlers.Runner's work queue)",
)
QUEUED_ROLLOUTS = Gauge(
    "hypersend_operator_queued_rollouts",
    "Clusters whose pod-template change (an operator upgrade) waits for a fleet rollout slot",
)
LEADER = Gauge(
    "hypersend_operator_leader",
    "1 while this replica holds the leader Lease and may write, else 0",
)
LEADER_TRANSITIONS = Counter(
    "hypersend_operator_leader_transitions_total",
    "Times this replica started or stopped leading",
)
# Not `namespace`/`name`: a scrape would rename `namespace` to `exported_namespace`, since the
# target's own namespace label (the operator's) takes that name.
CLUSTER_READY = Gauge(
    "hypersend_operator_cluster_ready",
    "1 while the HypersendCluster's Ready condition is True, else 0 (one series per cluster)",
    ["hypersendcluster_namespace", "hypersendcluster"],
)


def is_ready(status: Mapping[str, Any]) -> bool:
    """Whether a HypersendCluster status (as written) has condition Ready=True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def observe_cluster(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    CLUSTER_READY.labels(namespace, name).set(1 if is_ready(status) else 0)


def forget_cluster(namespace: str, name: str) -> None:
    """Drop a deleted cluster's series, so it neither alerts nor lingers on dashboards."""
    with contextlib.suppress(KeyError):  # never observed by this process
        CLUSTER_READY.remove(namespace, name)
