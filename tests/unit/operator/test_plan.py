"""The plan step (plan.py), without a server: desired manifests + live objects -> writes,
hand-offs, prunes and fleet rollouts held back."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypersend_operator import drift, plan
from hypersend_operator.builders import Component, build_components
from hypersend_operator.builders import labels as lb

from tests.unit.operator.support import ctx

pytestmark = pytest.mark.unit

V1, V2 = "1.0.0", "1.1.0"


def components(**blocks: Any) -> list[Component]:
    return build_components(ctx(**blocks))


def as_live(write: plan.Write) -> dict[str, Any]:
    """What the server stores for a write: the manifest plus server-side fields."""
    live = copy.deepcopy(write.manifest)
    live["metadata"]["resourceVersion"] = "10"
    live["metadata"]["uid"] = f"uid-{write.name}"
    if write.kind == "Deployment":
        live["metadata"]["generation"] = 1
        replicas = live["spec"].get("replicas", 2)
        live["spec"]["replicas"] = replicas
        live["status"] = {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
    return live


def converged(comps: list[Component], version: str = V1) -> dict[plan.ChildKey, Any]:
    first = plan.plan_children(comps, {}, operator_version=version, rollout_allowed=True)
    return {plan.child_key(w.manifest): as_live(w) for w in first.writes}


def chat_key(live: dict[plan.ChildKey, Any]) -> plan.ChildKey:
    return next(k for k, v in live.items() if plan.is_chat_deployment(v))


def test_a_new_cluster_creates_every_child_in_reconcile_order() -> None:
    comps = components()
    result = plan.plan_children(comps, {}, operator_version=V1, rollout_allowed=True)
    assert [w.action for w in result.writes] == ["Created"] * len(result.writes)
    wanted = [plan.child_key(m) for c in comps for m in c.manifests]
    assert [plan.child_key(w.manifest) for w in result.writes] == wanted
    assert all(
        drift.HASH_ANNOTATION in w.manifest["metadata"]["annotations"] for w in result.writes
    )


def test_writes_go_in_waves_workloads_between_what_they_need_and_what_refers_to_them() -> None:
    comps = components(autoscaling={"enabled": True}, ingress={"enabled": True, "host": "x.test"})
    writes = plan.plan_children(comps, {}, operator_version=V1, rollout_allowed=True).writes
    waves = plan.write_waves(writes)
    kinds = [[w.kind for w in wave] for wave in waves]
    assert set(kinds[0]) >= {"Secret", "ConfigMap", "Service", "NetworkPolicy"}
    assert set(kinds[1]) == {"Deployment", "StatefulSet"}
    assert set(kinds[2]) >= {"HorizontalPodAutoscaler", "Ingress"}
    # Every write once, and within a wave in plan order.
    assert sorted(id(w) for wave in waves for w in wave) == sorted(id(w) for w in writes)
    for wave in waves:
        positions = [writes.index(w) for w in wave]
        assert positions == sorted(positions)


def test_a_converged_cluster_plans_nothing() -> None:
    comps = components()
    live = converged(comps)
    result = plan.plan_children(comps, live, operator_version=V1, rollout_allowed=True)
    assert result.empty
    assert result.unchanged == live


def test_a_spec_change_restarts_only_the_chat_deployment() -> None:
    live = converged(components())
    result = plan.plan_children(
        components(chat={"env": [{"name": "FEATURE_X", "value": "on"}]}),
        live,
        operator_version=V1,
        rollout_allowed=True,
    )
    restarted = [w for w in result.writes if w.action == "Restarted"]
    assert [w.kind for w in restarted] == ["Deployment"]
    assert plan.is_chat_deployment(restarted[0].manifest)


def test_someone_elses_edit_of_an_owned_field_is_drift() -> None:
    comps = components()
    live = converged(comps)
    key = chat_key(live)
    live[key]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    result = plan.plan_children(comps, live, operator_version=V1, rollout_allowed=True)
    (write,) = result.writes
    assert write.action == "DriftCorrected"
    assert "image" in write.detail


def test_autoscaling_switched_on_hands_the_replicas_over() -> None:
    off = components(autoscaling={"enabled": False}, chat={"replicas": 3})
    live = converged(off)
    key = chat_key(live)
    live[key]["metadata"]["managedFields"] = [
        {
            "manager": drift.FIELD_MANAGER,
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    ]
    result = plan.plan_children(
        components(autoscaling={"enabled": True}, chat={"replicas": 3}),
        live,
        operator_version=V1,
        rollout_allowed=True,
    )
    chat = next(w for w in result.writes if plan.is_chat_deployment(w.manifest))
    assert chat.handoff is not None
    assert chat.handoff["spec"] == {"replicas": 3}


def test_a_template_change_by_an_operator_upgrade_waits_for_a_slot() -> None:
    live = converged(components(), version=V1)
    # The new operator renders another template for the same spec.
    upgraded = components(chat={"env": [{"name": "NEW_DEFAULT", "value": "1"}]})
    held = plan.plan_children(upgraded, live, operator_version=V2, rollout_allowed=False)
    assert [w.kind for w in held.queued_rollouts] == ["Deployment"]
    assert chat_key(live) in held.unchanged
    assert all(not plan.is_chat_deployment(w.manifest) for w in held.writes)
    assert plan.is_fleet_rollout(held.queued_rollouts[0].manifest, live[chat_key(live)], V2)
    allowed = plan.plan_children(upgraded, live, operator_version=V2, rollout_allowed=True)
    assert any(w.action == "Restarted" for w in allowed.writes)
    assert not allowed.queued_rollouts


def test_the_users_own_change_never_waits_for_a_slot() -> None:
    live = converged(components(), version=V1)
    result = plan.plan_children(
        components(chat={"env": [{"name": "X", "value": "1"}]}),
        live,
        operator_version=V1,
        rollout_allowed=False,
    )
    assert not result.queued_rollouts
    assert any(w.action == "Restarted" for w in result.writes)


def test_an_upgrade_that_keeps_the_template_only_restamps_the_version() -> None:
    comps = components()
    live = converged(comps, version=V1)
    result = plan.plan_children(comps, live, operator_version=V2, rollout_allowed=False)
    assert not result.queued_rollouts
    (write,) = result.writes
    assert write.action == "Updated"
    assert write.manifest["metadata"]["annotations"][plan.OPERATOR_VERSION_ANNOTATION] == V2


def test_prunes_name_only_children_no_manifest_asks_for() -> None:
    on = components(autoscaling={"enabled": True})
    live = converged(on)
    off = components(autoscaling={"enabled": False})
    desired = [plan.child_key(m) for c in off for m in c.manifests]
    prunable = {"HorizontalPodAutoscaler", "Deployment", "Service", "ConfigMap"}
    prunes = plan.prunes_for(desired, live.values(), prunable)
    assert [(p.kind, p.name) for p in prunes] == [("HorizontalPodAutoscaler", "demo-chat")]
    # Secrets are never pruned, even when no manifest names them any more.
    secret = next(v for v in live.values() if v["kind"] == "Secret")
    assert plan.prunes_for([], [secret], prunable) == []


def rolling_deployment(namespace: str, cluster: str, version: str, rolling: bool) -> Any:
    labels = {lb.COMPONENT: lb.CHAT, lb.INSTANCE: cluster}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{cluster}-chat",
            "namespace": namespace,
            "labels": labels,
            "generation": 2,
            "annotations": {plan.OPERATOR_VERSION_ANNOTATION: version},
        },
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 3 if rolling else 2,
            "updatedReplicas": 1 if rolling else 2,
            "availableReplicas": 2,
        },
    }


def test_rolling_clusters_are_those_this_version_rolls() -> None:
    deps = [
        rolling_deployment("a", "one", V2, rolling=True),
        rolling_deployment("b", "two", V2, rolling=False),
        rolling_deployment("c", "three", V1, rolling=True),  # an older operator's, not ours
    ]
    assert plan.clusters_rolling(deps, V2) == {("a", "one")}
    unobserved = rolling_deployment("d", "four", V2, rolling=False)
    unobserved["metadata"]["generation"] = 3
    assert plan.clusters_rolling([unobserved], V2) == {("d", "four")}


def test_rollout_slots_bound_the_clusters_in_flight() -> None:
    slots = plan.RolloutSlots(limit=2)
    rolling = {("a", "one")}
    assert slots.try_acquire(("b", "two"), rolling)
    assert not slots.try_acquire(("c", "three"), rolling)  # one rolling + one granted
    assert slots.try_acquire(("a", "one"), rolling)  # already in flight: no new slot needed
    slots.release(("b", "two"))  # its pass ended; its rollout now shows in `rolling`
    assert not slots.try_acquire(("c", "three"), rolling | {("b", "two")})
    assert slots.try_acquire(("c", "three"), {("b", "two")})
