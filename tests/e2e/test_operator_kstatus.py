"""The real operator's statuses read by the real kstatus library (what Flux, kpt and cli-utils use):
InProgress from the first status on and during a rollout, Current once Ready, Failed when progress
needs a human (a missing Atlas Secret), Current again once the human acted.

kstatus is sigs.k8s.io/cli-utils `pkg/kstatus/status.Compute`, run by a small command built from its
Go module (tests/unit/delivery/kstatus.py). Each step prints what kstatus said and why.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fixtures.operator import ClusterHelper
from tests.unit.delivery import kstatus

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROLLING_REASONS = ("RollingOut", "PodsNotReady")


def read(hsc: ClusterHelper) -> tuple[dict[str, Any], dict[str, Any]]:
    """The CR as the API server returns it, and kstatus's verdict on it."""
    obj = hsc.get()
    return obj, kstatus.compute(obj)


def reasons(obj: dict[str, Any]) -> str:
    conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
    return ", ".join(
        f"{t}={conds[t]['status']}/{conds[t]['reason']}"
        for t in ("Ready", "Reconciling", "Stalled")
        if t in conds
    )


def until(hsc: ClusterHelper, wanted: str, what: str, seen: list[str]) -> dict[str, Any]:
    """Poll until kstatus says `wanted`; every verdict on the way is appended to `seen`."""
    found: dict[str, Any] = {}

    def check() -> bool:
        obj, result = read(hsc)
        if obj.get("status"):
            seen.append(result["status"])
        found.update(obj=obj, result=result)
        return bool(result["status"] == wanted)

    hsc.wait_for(check, what, timeout=180)
    return found


def test_kstatus_follows_the_cluster(hsc: ClusterHelper) -> None:
    # Brand new: from the first read (the CRD's default status, before the operator has seen the
    # CR) kstatus says InProgress until Ready.
    started = time.monotonic()
    hsc.apply(hsc.manifest())
    seen: list[str] = []

    def has_status() -> bool:
        obj, result = read(hsc)
        if obj.get("status"):
            seen.append(result["status"])
            return True
        return False

    hsc.wait_for(has_status, "the first status", timeout=60)
    print(f"\n[kstatus] first status {time.monotonic() - started:.2f}s after apply: {seen[0]}")
    assert seen[0] == "InProgress", seen
    hsc.wait_phase("Ready", timeout=180)
    ready = until(hsc, "Current", "kstatus Current once Ready", seen)
    print(f"[kstatus] Ready: {ready['result']['status']} ({reasons(ready['obj'])})")

    # A rollout: a new pod template. kstatus says InProgress until the operator reports Ready.
    doc = hsc.manifest()
    doc["spec"]["chat"]["logLevel"] = "warning"
    hsc.kube.apply(doc)
    rolling: list[str] = []
    obj, result = read(hsc)
    rolling.append(result["status"])
    print(f"[kstatus] rolling: {result['status']}: {result['message']} ({reasons(obj)})")
    assert result["status"] == "InProgress", result
    hsc.wait_phase("Ready", timeout=180)
    until(hsc, "Current", "kstatus Current after the rollout", rolling)
    assert rolling[-1] == "Current"

    # A rollout that cannot finish yet (the new pods fit on no node): the operator reports
    # Reconciling, and kstatus says InProgress for as long as it lasts, not Failed.
    doc = hsc.manifest()
    doc["spec"]["chat"]["resources"] = {"requests": {"cpu": "500"}, "limits": {"cpu": "500"}}
    hsc.kube.apply(doc)

    def reconciling_rollout() -> dict[str, Any] | None:
        obj, result = read(hsc)
        conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        fresh = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        rec = conds.get("Reconciling", {})
        if fresh and rec.get("status") == "True" and rec.get("reason") in ROLLING_REASONS:
            return {"obj": obj, "result": result}
        return None

    stuck = hsc.wait_for(reconciling_rollout, "Reconciling=True for the rollout", timeout=120)
    print(
        f"[kstatus] rollout in progress: {stuck['result']['status']}: "
        f"{stuck['result']['message']} ({reasons(stuck['obj'])})"
    )
    assert stuck["result"]["status"] == "InProgress", stuck["result"]
    hsc.kube.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=180)
    until(hsc, "Current", "kstatus Current once the rollout could finish", [])

    # Progress needs a human: the Atlas Secret the spec names does not exist.
    doc = hsc.manifest()
    doc["metadata"]["name"] = "stalled"
    doc["spec"]["mongo"] = {
        "mode": "Atlas",
        "atlas": {"connectionSecretRef": {"name": "hypersend-atlas", "key": "uri"}},
    }
    hsc.kube.apply(doc)
    stalled = ClusterHelper(hsc.kube, hsc.namespace, hsc.operator, hsc.metrics, name="stalled")
    failed = until(stalled, "Failed", "kstatus Failed for a missing Atlas Secret", [])
    print(f"[kstatus] Stalled: {failed['result']['status']}: {failed['result']['message']}")
    assert "secret hypersend-atlas not found" in failed["result"]["message"]
    assert "create it with key uri" in failed["result"]["message"]
    conds = {c["type"]: c for c in failed["obj"]["status"]["conditions"]}
    assert (conds["Stalled"]["status"], conds["Stalled"]["reason"]) == (
        "True",
        "AtlasSecretMissing",
    )
    assert conds["Reconciling"]["status"] == "False"

    # The human acts: kstatus leaves Failed on its own.
    hsc.kube.kubectl(
        "create", "secret", "generic", "hypersend-atlas", "-n", hsc.namespace,
        "--from-literal=uri=mongodb+srv://user:pass@example.invalid/db",
    )  # fmt: skip
    stalled.wait_phase("Ready", timeout=180)
    until(stalled, "Current", "kstatus Current once the Secret exists", [])
