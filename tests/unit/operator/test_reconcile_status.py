"""The pure half of a reconcile pass: the builders' real manifests, "live" copies of them with the
status a controller would write, folded into the CR status; plus pause detection, transient-error
retries and the spec error message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypersend_operator import reconcile
from hypersend_operator import status as st
from hypersend_operator.api import HypersendClusterSpec
from hypersend_operator.builders import BuildContext, GeneratedSecrets, build_components
from hypersend_operator.kube import ApiError, Backoff, retry_transient
from pydantic import ValidationError

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "chat": {"image": "chat:1"},
    "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
}


PAUSED = "hypersend.io/paused"
Live = dict[tuple[str, str, str], dict[str, Any]]


def cr(
    generation: int = 1,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {
            "name": "demo",
            "namespace": "x",
            "uid": "u-1",
            "generation": generation,
            "annotations": annotations or {},
        },
        "spec": SPEC,
        "status": status or {},
    }


def live_children(ready: bool = True, spec: dict[str, Any] = SPEC) -> Live:
    ctx = BuildContext(
        name="demo",
        namespace="x",
        uid="u-1",
        generation=1,
        spec=HypersendClusterSpec.model_validate(spec),
        secrets=GeneratedSecrets(
            jwt_keys="k", mongo_root_password="p", mongo_app_password="a", redis_password="r"
        ),
    )
    live: Live = {}
    for component in build_components(ctx):
        for m in component.manifests:
            obj = copy.deepcopy(m)
            obj["metadata"]["generation"] = 1
            if m["kind"] == "Deployment":
                desired = m["spec"].get("replicas", 2)
                obj["spec"]["replicas"] = desired
                n = desired if ready else 0
                obj["status"] = {
                    "observedGeneration": 1,
                    "replicas": desired,
                    "updatedReplicas": desired,
                    "readyReplicas": n,
                    "availableReplicas": n,
                }
            elif m["kind"] == "StatefulSet":
                obj["status"] = {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}
            elif m["kind"] == "HorizontalPodAutoscaler":
                obj["status"] = {
                    "currentReplicas": 2,
                    "desiredReplicas": 2,
                    "conditions": [
                        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
                        {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"},
                    ],
                }
            live[reconcile.key_of(m)] = obj
    return live


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def fold(
    body: dict[str, Any], live: dict[tuple[str, str, str], dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    spec = HypersendClusterSpec.model_validate(body["spec"])
    checks = reconcile.component_checks(spec, live, {})
    kw.setdefault("paused", False)
    kw.setdefault("applied_generation", body["metadata"]["generation"])
    return reconcile.build_status(body, checks, live, now="T1", **kw)


def test_all_children_ready_folds_to_ready() -> None:
    status = fold(cr(), live_children())
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == 1
    assert status["chat"]["ready"] == "2/2"
    conds = conditions(status)
    assert {t: c["status"] for t, c in conds.items()} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Progressing": "False",
        "Degraded": "False",
        "ChatReady": "True",
        "RedisReady": "True",
        "MongoReady": "True",
        "AutoscalingReady": "True",
    }


def test_unready_chat_pods_fold_to_progressing_with_counts() -> None:
    status = fold(cr(), live_children(ready=False))
    assert status["phase"] == "Progressing"
    assert conditions(status)["ChatReady"]["message"] == "Deployment demo-chat not ready 0/2"


def test_unfinished_pass_keeps_the_old_observed_generation() -> None:
    before = fold(cr(), live_children())
    status = fold(cr(generation=2, status=before), live_children(), applied_generation=None)
    assert status["observedGeneration"] == 1
    assert status["phase"] == "Progressing"
    assert conditions(status)["Progressing"]["reason"] == "NewGeneration"


def test_invalid_spec_is_stalled_at_the_generation_it_observed() -> None:
    """kstatus reads Stalled only when observedGeneration matches: a spec the models refuse is
    observed (and refused) at its generation, not left looking like work in progress."""
    before = fold(cr(), live_children())
    body = cr(generation=2, status=before)
    problem = st.failed(st.READY, "InvalidSpec", "spec.chat.replicas: too small")
    status = reconcile.build_status(
        body, [], {}, paused=False, applied_generation=None, blocking=problem, now="T2"
    )
    conds = conditions(status)
    assert status["observedGeneration"] == 2
    assert status["phase"] == "Degraded"
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == ("True", "InvalidSpec")
    assert conds["Reconciling"]["status"] == "False"


def test_brand_new_cluster_status_is_reconciling() -> None:
    status = reconcile.initial_status(cr(), now="T0")
    conds = conditions(status)
    assert status["phase"] == "Pending"
    assert "observedGeneration" not in status
    assert conds["Reconciling"]["status"] == "True"
    assert conds["Ready"]["status"] == "False"
    assert conds["Stalled"]["status"] == "False"


def test_unchanged_pass_produces_an_identical_status() -> None:
    first = fold(cr(), live_children())
    second = reconcile.build_status(
        cr(status=first),
        reconcile.component_checks(HypersendClusterSpec.model_validate(SPEC), live_children(), {}),
        live_children(),
        paused=False,
        applied_generation=1,
        now="T2",
    )
    assert second == first  # so nothing is written on an idle resync


def test_paused_annotation() -> None:
    assert reconcile.is_paused(cr(annotations={PAUSED: "true"}))
    assert reconcile.is_paused(cr(annotations={PAUSED: "True"}))
    assert not reconcile.is_paused(cr(annotations={PAUSED: "false"}))
    assert not reconcile.is_paused(cr())
    status = fold(cr(annotations={PAUSED: "true"}), live_children(), paused=True)
    assert status["phase"] == "Paused"
    assert conditions(status)["ReconciliationPaused"]["status"] == "True"


def test_validation_message_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        HypersendClusterSpec.model_validate({"chat": {"image": "x", "replicas": -1}})
    message = reconcile._validation_message(err.value)
    assert message.startswith("spec.chat.replicas:")


async def test_transient_errors_are_retried_then_succeed() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiError(503, "ServiceUnavailable", "etcd leader changed")
        return "ok"

    assert await retry_transient(flaky, Backoff(attempts=5, first_delay=0.001)) == "ok"
    assert len(calls) == 3


async def test_permanent_errors_are_not_retried() -> None:
    calls = []

    async def forbidden() -> None:
        calls.append(1)
        raise ApiError(403, "Forbidden", "no")

    with pytest.raises(ApiError):
        await retry_transient(forbidden, Backoff(attempts=5, first_delay=0.001))
    assert len(calls) == 1


async def test_retries_give_up_after_the_last_attempt() -> None:
    calls = []

    async def down() -> None:
        calls.append(1)
        raise ApiError(0, "ConnectError", "connection refused")

    with pytest.raises(ApiError, match="connection refused"):
        await retry_transient(down, Backoff(attempts=3, first_delay=0.001))
    assert len(calls) == 3
