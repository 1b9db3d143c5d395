"""Pause, resume and restart act at once, with the operator's DEFAULT resync period (60 s).

The annotations `hypersend.io/paused` and `hypersend.io/restartedAt` (what `kubectl hypersend
pause|resume` and ArgoCD's pause / resume / restart actions write) must start a pass as soon as
they change, not at the next periodic resync. This module runs its own operator with the default
resync (the suite's operator resyncs every 5 s and would hide a slow path), and each step asserts
that the pass triggered by the change itself (trigger "update") ran: if only the resync acted, the
update counter would not move and the test fails. The measured latencies are printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import ClusterHelper, OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RECONCILES = "hypersend_operator_reconciles_total"
PAUSED = "hypersend.io/paused"
RESTARTED_AT = "hypersend.io/restartedAt"


@pytest.fixture
def default_resync_operator(
    hypersend_operator: OperatorProcess, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The suite's operator stopped for the test (never two operators on the same objects), and
    one with the default resync in its place."""
    hypersend_operator.stop()
    op = OperatorProcess(
        kubeconfig=hypersend_operator.kubeconfig,
        log_path=tmp_path / "operator.log",
        resync_seconds=None,
    )
    try:
        op.start()
        yield op
    finally:
        op.stop()
        hypersend_operator.start()


@pytest.fixture
def cluster(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    default_resync_operator: OperatorProcess,
    request: pytest.FixtureRequest,
) -> Iterator[ClusterHelper]:
    metrics = request.getfixturevalue("custom_metrics") if kube_cluster.is_local else None
    helper = ClusterHelper(kube_cluster, kube_namespace, default_resync_operator, metrics)
    try:
        yield helper
    finally:
        kube_cluster.kubectl(
            "delete", "hypersendclusters", "--all", "-n", kube_namespace, "--timeout=60s",
            check=False,
        )  # fmt: skip
        helper.cleanup()


def updates(hsc: ClusterHelper) -> float:
    return hsc.operator.counter(RECONCILES, trigger="update", result="ok")


def timed(
    hsc: ClusterHelper, change: Callable[[], None], done: Callable[[], Any], what: str
) -> float:
    """Seconds from `change()` to `done()` holding; asserts an update-triggered pass ran."""
    before = updates(hsc)
    started = time.monotonic()
    change()
    hsc.wait_for(done, what, timeout=120)
    seconds = time.monotonic() - started
    # The change started its own pass: not a resync, not a requeue, not a child event.
    hsc.wait_for(lambda: updates(hsc) > before, f"an update-triggered pass after: {what}")
    return seconds


def annotate(hsc: ClusterHelper, *pairs: str) -> None:
    hsc.kube.kubectl(
        "annotate", "--overwrite", "hypersendcluster", hsc.name, "-n", hsc.namespace, *pairs
    )


def condition(hsc: ClusterHelper, type_: str) -> dict[str, Any] | None:
    return hsc.condition(type_)


def test_pause_resume_restart_act_at_once_with_the_default_resync(cluster: ClusterHelper) -> None:
    hsc = cluster
    assert hsc.operator.resync_seconds is None  # the operator's own default: 60 s
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=180)
    assert hsc.get("configmap", f"{hsc.name}-chat")["data"]["HYPERSEND_LOG_LEVEL"] == "debug"

    def paused() -> bool:
        c = condition(hsc, "ReconciliationPaused")
        return hsc.status().get("phase") == "Paused" and c is not None and c["status"] == "True"

    pause_s = timed(hsc, lambda: annotate(hsc, f"{PAUSED}=true"), paused, "Paused")

    # While paused a spec change is not applied: wait for the pass the change triggers, then look.
    before = updates(hsc)
    doc = hsc.manifest()
    doc["metadata"]["annotations"] = {PAUSED: "true"}
    doc["spec"]["chat"]["logLevel"] = "warning"
    hsc.kube.apply(doc)
    hsc.wait_for(lambda: updates(hsc) > before, "the pass for the spec change while paused")
    assert hsc.get("configmap", f"{hsc.name}-chat")["data"]["HYPERSEND_LOG_LEVEL"] == "debug"

    def resumed() -> bool:
        log_level = hsc.get("configmap", f"{hsc.name}-chat")["data"]["HYPERSEND_LOG_LEVEL"]
        return log_level == "warning" and condition(hsc, "ReconciliationPaused") is None

    resume_s = timed(hsc, lambda: annotate(hsc, f"{PAUSED}-"), resumed, "resumed and applied")
    hsc.wait_phase("Ready", timeout=180)

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def rolled() -> bool:
        dep = hsc.get("deployment", f"{hsc.name}-chat")
        annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
        return bool(annotations.get(RESTARTED_AT) == stamp)

    restart_s = timed(hsc, lambda: annotate(hsc, f"{RESTARTED_AT}={stamp}"), rolled, "restart")
    print(
        f"\n[annotations] default resync: pause {pause_s:.2f}s, resume {resume_s:.2f}s, "
        f"restart {restart_s:.2f}s (annotation written -> effect observed)"
    )
