"""Prometheus metrics the operator exports (served by `__main__` on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
