"""The operator at fleet scale, against the real API server: its watches carry only what it owns
(the server filters by label), and an operator upgrade that changes the chat pod template rolls at
most `--max-concurrent-rollouts` clusters at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypersend_operator.builders.deployment import CONFIG_HASH_ANNOTATION
from hypersend_operator.handlers import operator_version
from hypersend_operator.plan import OPERATOR_VERSION_ANNOTATION, deployment_rolling

from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import ClusterHelper, OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

WATCH_EVENTS = "hypersend_operator_watch_events_total"
PREVIOUS = "0.0.0-previous"


@pytest.fixture
def ready(hsc: ClusterHelper) -> ClusterHelper:
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=120)
    return hsc


def configmap(name: str, namespace: str, value: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"value": value},
    }


def test_unrelated_objects_never_reach_the_operator(ready: ClusterHelper) -> None:
    hsc = ready
    kube = hsc.kube
    before = hsc.operator.counter(WATCH_EVENTS, kind="ConfigMap")
    # Unrelated ConfigMaps, beside the cluster's children and in another namespace; one even
    # carries the cluster's instance label (without the operator's managed-by label).
    other_ns = f"{hsc.namespace}-other"
    kube.kubectl("create", "namespace", other_ns)
    try:
        for i in range(3):
            kube.apply(configmap("unrelated", hsc.namespace, str(i)))
            kube.apply(configmap("unrelated", other_ns, str(i)))
            kube.apply(
                configmap(
                    "lookalike", hsc.namespace, str(i), **{"app.kubernetes.io/instance": "demo"}
                )
            )
        # Then one change to a ConfigMap the operator owns (a foreign annotation: not drift, no
        # write). Its event comes after the unrelated ones on the same watch, so once it has been
        # counted, any unrelated event would have been counted too.
        owned = next(
            cm["metadata"]["name"]
            for cm in kube.json("get", "configmaps", "-n", hsc.namespace)["items"]
            if (cm["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by")
            == "hypersend-operator"
        )
        kube.kubectl("annotate", "configmap", owned, "-n", hsc.namespace, "team=chat")
        hsc.wait_for(
            lambda: hsc.operator.counter(WATCH_EVENTS, kind="ConfigMap") > before,
            "the owned ConfigMap's event",
        )
        assert hsc.operator.counter(WATCH_EVENTS, kind="ConfigMap") == before + 1
    finally:
        kube.kubectl("delete", "namespace", other_ns, "--wait=false", check=False)


# --------------------------------------------------------------------------- fleet rollouts


@pytest.fixture
def throttled_operator(
    hypersend_operator: OperatorProcess, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The suite's operator stopped for the test (never two operators on the same objects), and
    one allowed a single fleet rollout at a time in its place."""
    hypersend_operator.stop()
    op = OperatorProcess(
        kubeconfig=hypersend_operator.kubeconfig,
        log_path=tmp_path / "operator.log",
        extra_args=("--max-concurrent-rollouts", "1"),
    )
    try:
        op.start()
        yield op
    finally:
        op.stop()
        hypersend_operator.start()


def test_an_operator_upgrade_rolls_one_cluster_at_a_time(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    throttled_operator: OperatorProcess,
    request: pytest.FixtureRequest,
) -> None:
    kube = kube_cluster
    metrics = request.getfixturevalue("custom_metrics") if kube.is_local else None
    fleet = [
        ClusterHelper(kube, kube_namespace, throttled_operator, metrics, name=f"fleet{i}")
        for i in range(3)
    ]
    try:
        for hsc in fleet:
            hsc.apply(hsc.manifest())
        for hsc in fleet:
            hsc.wait_phase("Ready", timeout=180)

        # What an older operator left behind: Deployments stamped with its version, whose pod
        # template differs from what this operator renders for the same spec.
        throttled_operator.stop()
        for hsc in fleet:
            dep = f"{hsc.name}-chat"
            kube.kubectl(
                "annotate", "deployment", dep, "-n", kube_namespace, "--overwrite",
                f"{OPERATOR_VERSION_ANNOTATION}={PREVIOUS}",
            )  # fmt: skip
            patch = {
                "spec": {
                    "template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: PREVIOUS}}}
                }
            }
            kube.kubectl(
                "patch", "deployment", dep, "-n", kube_namespace, "--type=merge",
                "-p", json.dumps(patch),
            )  # fmt: skip

        def settled(h: ClusterHelper) -> bool:
            return not deployment_rolling(h.get("deployment", f"{h.name}-chat"))

        fleet[0].wait_for(
            lambda: all(settled(h) for h in fleet), "the older template rolled out everywhere"
        )

        version = operator_version()
        throttled_operator.start()
        most_rolling = 0

        def upgraded() -> bool:
            nonlocal most_rolling
            deps = [hsc.get("deployment", f"{hsc.name}-chat") for hsc in fleet]
            ours = [
                d
                for d in deps
                if d["metadata"]["annotations"].get(OPERATOR_VERSION_ANNOTATION) == version
            ]
            most_rolling = max(most_rolling, sum(deployment_rolling(d) for d in ours))
            for hsc in fleet:
                hsc.feed_connections()
            return len(ours) == len(fleet) and not any(deployment_rolling(d) for d in deps)

        fleet[0].wait_for(upgraded, "every cluster rolled to the new template", timeout=300)
        assert most_rolling <= 1, f"{most_rolling} clusters rolled at once"
        for hsc in fleet:
            template = hsc.get("deployment", f"{hsc.name}-chat")["spec"]["template"]
            assert template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] != PREVIOUS
            hsc.wait_phase("Ready", timeout=120)
        queued = [
            e
            for e in kube.json("get", "events", "-n", kube_namespace)["items"]
            if e["reason"] == "RolloutQueued"
        ]
        # Three clusters, one slot: the two that started behind the first waited, and said so.
        assert len({e["involvedObject"]["name"] for e in queued}) >= 2, queued
    finally:
        kube.kubectl(
            "delete", "hypersendclusters", "--all", "-n", kube_namespace, "--timeout=60s",
            check=False,
        )  # fmt: skip
        for hsc in fleet:
            hsc.cleanup()


REQUESTS = "hypersend_operator_api_requests_total"
RECONCILES = "hypersend_operator_reconciles_total"


def requests_by_kind(op: OperatorProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in op.metrics().items():
        if key.startswith(REQUESTS + "{"):
            kind = key.split('kind="', 1)[1].split('"', 1)[0]
            verb = key.split('verb="', 1)[1].split('"', 1)[0]
            out[f"{verb} {kind}"] = out.get(f"{verb} {kind}", 0) + value
    return out


def test_an_idle_resync_reads_only_the_connection_count(ready: ClusterHelper) -> None:
    """Reads come from the caches: a pass with nothing to do asks the API server only for the
    chat pods' connections (the status shows them), and writes nothing."""
    hsc = ready
    op = hsc.operator

    def resynced(count: float) -> bool:
        hsc.feed_connections()
        return op.counter(RECONCILES, trigger="resync", result="ok") >= count

    # Settled first: the connection count read in the background is in the status (its arrival
    # is a status write), then one resync so what followed Ready (HPA, Deployment status) is
    # behind us.
    def counted() -> bool:
        hsc.feed_connections()
        connections = (hsc.status().get("chat") or {}).get("connections")
        return connections == 1000 * len(hsc.chat_pods())

    hsc.wait_for(counted, "the fed connection count in the status", timeout=60)
    first = op.counter(RECONCILES, trigger="resync", result="ok") + 1
    hsc.wait_for(lambda: resynced(first), "a resync pass", timeout=60)
    before, status_before = requests_by_kind(op), hsc.status()
    hsc.wait_for(lambda: resynced(first + 2), "two more resync passes", timeout=60)
    after = requests_by_kind(op)
    spent = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    if hsc.status() != status_before:
        # Something did change meanwhile (the HPA's view, a condition): writing it is the job.
        spent.pop("patch HypersendCluster", None)
    # Each pass of this one cluster: one read of the custom metrics API, nothing else. (Other
    # passes may run meanwhile, a child event's or a requeue's: they cost the same.)
    assert set(spent) <= {"get MetricValueList"}, spent
