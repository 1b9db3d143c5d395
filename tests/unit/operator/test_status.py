"""Status conditions from children status: one function per condition, summary and transitions."""

from __future__ import annotations

from typing import Any

import pytest
from hypersend_operator import status as st

pytestmark = pytest.mark.unit


def deployment(
    *,
    desired: int = 2,
    ready: int = 2,
    updated: int | None = None,
    total: int | None = None,
    generation: int = 3,
    observed: int = 3,
    deadline: bool = False,
) -> dict[str, Any]:
    conditions = []
    if deadline:
        conditions.append(
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "x" has timed out progressing.',
            }
        )
    return {
        "metadata": {"name": "demo-chat", "generation": generation},
        "spec": {"replicas": desired, "selector": {"matchLabels": {"b": "2", "a": "1"}}},
        "status": {
            "observedGeneration": observed,
            "replicas": desired if total is None else total,
            "updatedReplicas": desired if updated is None else updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        },
    }


def statefulset(*, desired: int = 1, ready: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo-mongo", "generation": 1},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": ready,
            "currentRevision": "r1",
            "updateRevision": "r1",
            "updatedReplicas": desired,
        },
    }


def hpa(*conds: tuple[str, str, str], avg: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "currentReplicas": 3,
        "desiredReplicas": 3,
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": f"{r} message"} for t, s, r in conds
        ],
    }
    if avg is not None:
        status["currentMetrics"] = [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "hypersend_websocket_connections"},
                    "current": {"averageValue": avg},
                },
            }
        ]
    return {"metadata": {"name": "demo-chat"}, "status": status}


# ----------------------------------------------------------------- component conditions


def test_chat_ready_when_all_pods_ready() -> None:
    check = st.chat_ready(deployment())
    assert check.health is st.Health.OK
    assert check.status == "True"
    assert check.message == "Deployment demo-chat ready 2/2"


def test_chat_missing_deployment_is_creating() -> None:
    check = st.chat_ready(None)
    assert (check.health, check.reason) == (st.Health.CONVERGING, "Creating")


def test_chat_unobserved_generation_is_rolling_out() -> None:
    check = st.chat_ready(deployment(generation=4, observed=3))
    assert (check.health, check.reason) == (st.Health.CONVERGING, "RollingOut")


def test_chat_partial_rollout_and_old_pods() -> None:
    assert st.chat_ready(deployment(updated=1)).message == (
        "Deployment demo-chat rolling out: 1/2 updated"
    )
    assert "1 old pod(s) terminating" in st.chat_ready(deployment(total=3)).message


def test_chat_not_ready_message_counts_pods() -> None:
    check = st.chat_ready(deployment(ready=0))
    assert (check.health, check.reason) == (st.Health.CONVERGING, "PodsNotReady")
    assert check.message == "Deployment demo-chat not ready 0/2"


def test_chat_progress_deadline_is_a_failure() -> None:
    check = st.chat_ready(deployment(ready=0, deadline=True))
    assert (check.health, check.reason) == (st.Health.FAILED, "ProgressDeadlineExceeded")
    assert "timed out" in check.message


def test_mongo_statefulset_not_ready() -> None:
    check = st.mongo_ready("InCluster", statefulset(ready=0), None)
    assert check.message == "StatefulSet demo-mongo not ready 0/1"
    assert st.mongo_ready("InCluster", statefulset(), None).health is st.Health.OK


def test_mongo_atlas_secret_missing_is_actionable() -> None:
    ref = st.SecretRef("hypersend-atlas", "uri", "x", exists=False, has_key=False)
    check = st.mongo_ready("Atlas", None, ref)
    assert check.health is st.Health.FAILED
    assert check.reason == "AtlasSecretMissing"
    assert check.message == (
        "secret hypersend-atlas not found in namespace x; create it with key uri"
    )


def test_mongo_atlas_key_missing_and_present() -> None:
    no_key = st.SecretRef("hypersend-atlas", "uri", "x", exists=True, has_key=False)
    assert st.mongo_ready("Atlas", None, no_key).reason == "AtlasSecretKeyMissing"
    good = st.SecretRef("hypersend-atlas", "uri", "x", exists=True, has_key=True)
    assert st.mongo_ready("Atlas", None, good).health is st.Health.OK


def test_redis_external_secret_checked() -> None:
    ref = st.SecretRef("redis-url", "url", "x", exists=False, has_key=False)
    assert st.redis_ready("External", None, ref).reason == "RedisUrlSecretMissing"
    assert st.redis_ready("InCluster", deployment(desired=1, ready=1), None).status == "True"


def test_autoscaling_conditions() -> None:
    assert st.autoscaling_ready(False, None).reason == "AutoscalingDisabled"
    assert st.autoscaling_ready(True, None).health is st.Health.CONVERGING
    assert st.autoscaling_ready(True, hpa()).reason == "WaitingForController"
    broken = st.autoscaling_ready(
        True, hpa(("AbleToScale", "True", "x"), ("ScalingActive", "False", "FailedGetPodsMetric"))
    )
    assert (broken.health, broken.reason) == (st.Health.FAILED, "FailedGetPodsMetric")
    good = st.autoscaling_ready(
        True, hpa(("AbleToScale", "True", "x"), ("ScalingActive", "True", "ValidMetricFound"))
    )
    assert good.health is st.Health.OK


# ----------------------------------------------------------------- summary


def all_ok() -> list[st.Check]:
    return [
        st.chat_ready(deployment()),
        st.redis_ready("InCluster", deployment(desired=1, ready=1), None),
        st.mongo_ready("InCluster", statefulset(), None),
        st.autoscaling_ready(False, None),
    ]


def by_type(summary: st.Summary) -> dict[str, st.Check]:
    return {c.type: c for c in summary.conditions}


def test_summary_ready() -> None:
    s = st.summarize(all_ok(), paused=False, generation=3, observed_generation=3)
    conds = by_type(s)
    assert s.phase == "Ready"
    assert conds["Ready"].status == "True"
    assert conds["Progressing"].status == "False"
    assert conds["Degraded"].status == "False"
    assert "ReconciliationPaused" not in conds


def kstatus_view(summary: st.Summary) -> tuple[str, str]:
    """(Reconciling, Stalled) statuses: kstatus decides on these two before anything else."""
    conds = by_type(summary)
    return conds["Reconciling"].status, conds["Stalled"].status


def test_ready_is_neither_reconciling_nor_stalled() -> None:
    s = st.summarize(all_ok(), paused=False, generation=3, observed_generation=3)
    assert kstatus_view(s) == ("False", "False")


def test_converging_is_reconciling_with_the_reason() -> None:
    checks = all_ok()
    checks[0] = st.chat_ready(deployment(ready=1))
    s = st.summarize(checks, paused=False, generation=1, observed_generation=1)
    assert kstatus_view(s) == ("True", "False")
    assert by_type(s)["Reconciling"].reason == "PodsNotReady"
    lagging = st.summarize(all_ok(), paused=False, generation=4, observed_generation=3)
    assert kstatus_view(lagging) == ("True", "False")
    assert by_type(lagging)["Reconciling"].reason == "NewGeneration"


def test_needs_a_human_is_stalled_not_reconciling() -> None:
    checks = all_ok()
    checks[0] = st.chat_ready(deployment(ready=1))  # something converging as well
    checks[2] = st.mongo_ready(
        "Atlas", None, st.SecretRef("atlas", "uri", "x", exists=False, has_key=False)
    )
    s = st.summarize(checks, paused=False, generation=1, observed_generation=1)
    assert kstatus_view(s) == ("False", "True")
    stalled = by_type(s)["Stalled"]
    assert stalled.reason == "AtlasSecretMissing"
    assert "secret atlas not found in namespace x; create it with key uri" in stalled.message


def test_paused_is_not_reconciling() -> None:
    s = st.summarize(all_ok(), paused=True, generation=2, observed_generation=1)
    assert kstatus_view(s) == ("False", "False")
    assert by_type(s)["Reconciling"].reason == "Paused"


def test_lagging_observed_generation_reads_progressing() -> None:
    s = st.summarize(all_ok(), paused=False, generation=4, observed_generation=3)
    conds = by_type(s)
    assert s.phase == "Progressing"
    assert conds["Progressing"].status == "True"
    assert conds["Progressing"].reason == "NewGeneration"
    assert conds["Ready"].status == "False"


def test_converging_component_is_progressing_not_degraded() -> None:
    checks = all_ok()
    checks[2] = st.mongo_ready("InCluster", statefulset(ready=0), None)
    s = st.summarize(checks, paused=False, generation=1, observed_generation=1)
    conds = by_type(s)
    assert s.phase == "Progressing"
    assert conds["Progressing"].reason == "PodsNotReady"
    assert "MongoReady: StatefulSet demo-mongo not ready 0/1" in conds["Ready"].message
    assert conds["Degraded"].status == "False"


def test_failed_component_degrades_with_its_reason() -> None:
    checks = all_ok()
    checks[2] = st.mongo_ready(
        "Atlas", None, st.SecretRef("hypersend-atlas", "uri", "x", exists=False, has_key=False)
    )
    s = st.summarize(checks, paused=False, generation=1, observed_generation=1)
    conds = by_type(s)
    assert s.phase == "Degraded"
    assert conds["Degraded"].status == "True"
    assert conds["Degraded"].reason == "AtlasSecretMissing"
    assert conds["Ready"].reason == "AtlasSecretMissing"
    assert "create it with key uri" in conds["Ready"].message


def test_blocking_problem_degrades() -> None:
    blocking = st.failed(st.READY, "ApplyFailed", "applying chat failed: 422 Invalid: bad")
    s = st.summarize(all_ok(), paused=False, generation=2, observed_generation=1, blocking=blocking)
    assert s.phase == "Degraded"
    assert by_type(s)["Degraded"].reason == "ApplyFailed"


def test_paused_adds_condition_and_phase() -> None:
    s = st.summarize(all_ok(), paused=True, generation=1, observed_generation=1)
    conds = by_type(s)
    assert s.phase == "Paused"
    assert conds["ReconciliationPaused"].status == "True"
    assert conds["ReconciliationPaused"].reason == "PausedByAnnotation"


def test_nothing_created_yet_is_pending() -> None:
    checks = [
        st.chat_ready(None),
        st.redis_ready("InCluster", None, None),
        st.mongo_ready("InCluster", None, None),
        st.autoscaling_ready(True, None),
    ]
    assert st.summarize(checks, paused=False, generation=1, observed_generation=1).phase == (
        "Pending"
    )


# ----------------------------------------------------------------- lastTransitionTime


def test_transition_time_moves_only_on_status_change() -> None:
    s1 = st.summarize(all_ok(), paused=False, generation=1, observed_generation=1)
    first = st.merge_conditions(None, s1.conditions, now="T1", observed_generation=1)
    assert {c["lastTransitionTime"] for c in first} == {"T1"}

    # Same statuses, new messages: times kept.
    again = st.merge_conditions(first, s1.conditions, now="T2", observed_generation=1)
    assert {c["lastTransitionTime"] for c in again} == {"T1"}

    # Mongo goes unready: MongoReady, Ready, Progressing flip at T3; the rest keep T1.
    checks = all_ok()
    checks[2] = st.mongo_ready("InCluster", statefulset(ready=0), None)
    s3 = st.summarize(checks, paused=False, generation=1, observed_generation=1)
    third = {
        c["type"]: c
        for c in st.merge_conditions(again, s3.conditions, now="T3", observed_generation=1)
    }
    assert third["MongoReady"]["lastTransitionTime"] == "T3"
    assert third["Ready"]["lastTransitionTime"] == "T3"
    assert third["Progressing"]["lastTransitionTime"] == "T3"
    assert third["ChatReady"]["lastTransitionTime"] == "T1"
    assert third["Degraded"]["lastTransitionTime"] == "T1"


def test_conditions_order_is_stable() -> None:
    s = st.summarize(all_ok(), paused=True, generation=1, observed_generation=1)
    types = [
        c["type"] for c in st.merge_conditions(None, s.conditions, now="T", observed_generation=1)
    ]
    assert types == list(st.CONDITION_ORDER)


# ----------------------------------------------------------------- chat summary


def test_chat_summary_with_connections() -> None:
    summary = st.chat_summary(deployment(desired=3, ready=2), hpa(avg="1500m"))
    assert summary == {"replicas": 3, "readyReplicas": 2, "selector": "a=1,b=2", "connections": 4}


def test_chat_summary_counts_the_pods_metric_values_when_it_has_them() -> None:
    # Three pods, one not scraped yet: the HPA's average (1.5) x 3 would say 5 (rounded 4.5).
    values = [{"value": "2"}, {"value": "1"}, {"value": "500m"}]
    summary = st.chat_summary(deployment(desired=3, ready=3), hpa(avg="1500m"), values)
    assert summary["connections"] == 4
    assert st.chat_summary(deployment(desired=3, ready=3), hpa(avg="1500m"), [])["connections"] == 0


def test_chat_summary_without_an_hpa_has_no_connection_count() -> None:
    assert "connections" not in st.chat_summary(deployment(desired=1, ready=1), None, [])


def test_chat_summary_without_deployment() -> None:
    assert st.chat_summary(None, None) == {"replicas": 0, "readyReplicas": 0}


def test_mongo_pending_claim_is_named() -> None:
    check = st.mongo_ready("InCluster", statefulset(ready=0), None, ["data-demo-mongo-0"])
    assert (check.health, check.reason) == (st.Health.CONVERGING, "VolumeClaimPending")
    assert check.message.startswith("StatefulSet demo-mongo not ready 0/1: PersistentVolumeClaim ")
    assert "data-demo-mongo-0 is Pending" in check.message
    # A ready StatefulSet is ready whatever the claims say.
    assert st.mongo_ready("InCluster", statefulset(), None, ["x"]).health is st.Health.OK
