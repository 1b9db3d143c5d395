"""The kubectl plugin's pure parts: ages, event selection, the status text, the patches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypersend_operator.cli import kubectl_plugin as kp

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-25T11:59:15Z", "45s"),
        ("2026-11-25T11:48:00Z", "12m"),
        ("2026-11-25T09:00:00Z", "3h"),
        ("2026-11-20T12:00:00Z", "5d"),
        ("2026-11-25T12:00:05Z", "0s"),  # clock skew never goes negative
        (None, "-"),
    ],
)
def test_age(stamp: str | None, expected: str) -> None:
    assert kp.age(stamp, NOW) == expected


def event(uid: str, reason: str, when: str) -> dict[str, Any]:
    return {
        "involvedObject": {"uid": uid, "kind": "HypersendCluster", "name": "demo"},
        "type": "Normal",
        "reason": reason,
        "message": f"{reason} something",
        "lastTimestamp": when,
    }


def test_related_events_keeps_ours_newest_last_and_bounded() -> None:
    events = [
        event("other", "Foreign", "2026-11-25T11:59:00Z"),
        event("cr", "Updated", "2026-11-25T11:58:00Z"),
        event("cr", "Created", "2026-11-25T11:50:00Z"),
        event("dep", "ScalingReplicaSet", "2026-11-25T11:55:00Z"),
    ]
    chosen = kp.related_events(events, {"cr", "dep"}, limit=2)
    assert [e["reason"] for e in chosen] == ["ScalingReplicaSet", "Updated"]


def cluster(status: dict[str, Any] | None, generation: int = 2, paused: bool = False) -> Any:
    meta: dict[str, Any] = {"name": "demo", "namespace": "chat", "generation": generation}
    if paused:
        meta["annotations"] = {kp.PAUSED_ANNOTATION: "true"}
    return {"metadata": meta, "status": status}


def condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-25T11:55:00Z",
    }


def test_status_text_shows_phase_chat_conditions_components_and_events() -> None:
    status = {
        "observedGeneration": 2,
        "phase": "Ready",
        "chat": {"replicas": 3, "readyReplicas": 3, "connections": 1234},
        "conditions": [
            condition("Ready", "True", "AllComponentsReady", "all ready"),
            condition("ChatReady", "True", "DeploymentReady", "Deployment demo-chat ready 3/3"),
        ],
    }
    chat = {"metadata": {"name": "demo-chat"}}
    text = kp.format_status(
        cluster(status), chat, [event("cr", "Created", "2026-11-25T11:59:30Z")], NOW
    )
    assert "HypersendCluster chat/demo" in text
    assert "Phase:       Ready" in text
    assert "Generation:  2 (observed 2)" in text
    assert "Chat pods:   3/3 ready, 1234 open connections" in text
    assert "Deployment:  demo-chat" in text
    conditions, components = text.split("Components:")
    assert "Ready  True    AllComponentsReady  5m     all ready" in conditions
    assert "ChatReady  True    DeploymentReady  5m     Deployment demo-chat ready 3/3" in components
    assert "30s  Normal  Created  HypersendCluster/demo  Created something" in text


def test_status_text_flags_a_lagging_status_a_pause_and_no_status() -> None:
    text = kp.format_status(cluster({"observedGeneration": 1}, paused=True), None, [], NOW)
    assert "Generation:  2 (observed 1, operator has not caught up)" in text
    assert "Paused:      yes" in text
    assert "(none reported)" in text
    assert "Events:\n  (none)" in text
    fresh = kp.format_status(cluster(None), None, [], NOW)
    assert "Phase:       Unknown (no status yet)" in fresh
    assert "observed none" in fresh


def test_patches() -> None:
    assert kp.pause_patch(True) == {"metadata": {"annotations": {kp.PAUSED_ANNOTATION: "true"}}}
    assert kp.pause_patch(False) == {"metadata": {"annotations": {kp.PAUSED_ANNOTATION: None}}}
    stamp = kp.restart_patch(NOW)["spec"]["template"]["metadata"]["annotations"][kp.RESTARTED_AT]
    assert stamp == "2026-11-25T12:00:00Z"


def test_chat_deployment_is_the_one_owned_by_the_cluster() -> None:
    cr = {"metadata": {"uid": "u1"}}
    mine = {"metadata": {"name": "a", "ownerReferences": [{"uid": "u1"}]}}
    other = {"metadata": {"name": "b", "ownerReferences": [{"uid": "u2"}]}}
    assert kp.chat_deployment(cr, [other, mine]) is mine
    assert kp.chat_deployment(cr, [other]) is None
