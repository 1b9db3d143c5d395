"""Generated Secrets a pass may not use. A Secret under a generated name that is not this
cluster's is never taken over, and a JWT key ring that does not parse is never replaced: either
stalls the cluster with a condition that says what to do and one Warning Event, while the passes
go on without failing and write nothing; the cluster recovers once someone acts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.fixtures.operator import ClusterHelper

pytestmark = pytest.mark.e2e

RECONCILES = "hypersend_operator_reconciles_total"
OPERATOR = "hypersend-operator"
# A key of the user's, in the format of a Secret from before key rings (builders/secrets.py).
THEIR_KEY = "a-key-someone-else-keeps-in-this-secret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def stalled_by(hsc: ClusterHelper, reason: str) -> dict[str, Any] | None:
    """The status once it reports `reason` as what stalls the current generation."""
    cr = hsc.get()
    status: dict[str, Any] = cr.get("status") or {}
    found = conditions(status)
    ready, stalled = found.get("Ready") or {}, found.get("Stalled") or {}
    if (
        status.get("phase") == "Degraded"
        and status.get("observedGeneration") == cr["metadata"]["generation"]
        and (ready.get("status"), ready.get("reason")) == ("False", reason)
        and (stalled.get("status"), stalled.get("reason")) == ("True", reason)
    ):
        return status
    return None


def warnings(hsc: ClusterHelper, reason: str) -> list[dict[str, Any]]:
    events = hsc.kube.json("get", "events", "-n", hsc.namespace)["items"]
    return [
        e
        for e in events
        if (e["type"], e["reason"], e["involvedObject"]["name"]) == ("Warning", reason, hsc.name)
    ]


def passes(hsc: ClusterHelper, result: str) -> float:
    return hsc.operator.counter(RECONCILES, result=result)


def wait_passes(hsc: ClusterHelper, count: int) -> None:
    """Until `count` more passes have ended well (a Degraded cluster is requeued every 10 s; the
    other tests' clusters are deleted with their namespaces' fixtures, so they are this one's)."""
    start = passes(hsc, "ok")
    hsc.wait_for(lambda: passes(hsc, "ok") >= start + count, f"{count} more passes", timeout=60)


def test_someone_elses_secret_under_a_generated_name_is_not_taken_over(
    hsc: ClusterHelper,
) -> None:
    ns = hsc.namespace
    hsc.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "demo-jwt", "namespace": ns, "labels": {"team": "payments"}},
            "data": {"jwt-secret": b64(THEIR_KEY)},
        }
    )
    theirs = hsc.get("secret", "demo-jwt")
    failed = passes(hsc, "error")
    hsc.apply(hsc.manifest())

    status = hsc.wait_for(lambda: stalled_by(hsc, "SecretConflict"), "Stalled: SecretConflict")
    message = conditions(status)["Ready"]["message"]
    assert message.startswith("Ready: Secret demo-jwt exists but is not this cluster's"), message
    assert "app.kubernetes.io/instance=demo" in message
    assert THEIR_KEY not in json.dumps(status)
    hsc.wait_for(lambda: warnings(hsc, "SecretConflict"), "a SecretConflict Warning Event")

    # The passes that follow still end well, and none takes the Secret or builds on it.
    wait_passes(hsc, 2)
    after = hsc.get("secret", "demo-jwt")
    assert after["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert OPERATOR not in {m["manager"] for m in after["metadata"].get("managedFields") or []}
    assert not after["metadata"].get("ownerReferences")
    assert not hsc.exists("configmap", "demo-chat")
    assert not hsc.exists("deployment", "demo-chat")
    assert len(warnings(hsc, "SecretConflict")) == 1  # announced once, not once per pass
    assert passes(hsc, "error") == failed

    # The two labels the message names make it this cluster's: adopted with its key.
    hsc.kube.kubectl(
        "label", "secret", "demo-jwt", "-n", ns,
        "app.kubernetes.io/managed-by=hypersend-operator", "app.kubernetes.io/instance=demo",
    )  # fmt: skip
    hsc.wait_phase("Ready", timeout=120)
    adopted = hsc.get("secret", "demo-jwt")
    ring = json.loads(base64.b64decode(adopted["data"]["jwt-keys"]))
    assert [k["secret"] for k in ring["keys"]] == [THEIR_KEY]
    owners = adopted["metadata"].get("ownerReferences") or []
    assert [o["uid"] for o in owners] == [hsc.get()["metadata"]["uid"]]


def test_a_malformed_jwt_key_ring_stalls_the_cluster_until_it_is_restored(
    hsc: ClusterHelper,
) -> None:
    ns = hsc.namespace
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=120)
    ring = hsc.get("secret", "demo-jwt")["data"]["jwt-keys"]
    chat = hsc.get("deployment", "demo-chat")["metadata"]["generation"]
    failed = passes(hsc, "error")

    broken = b64('{"keys": [')
    patch = json.dumps({"data": {"jwt-keys": broken}})
    hsc.kube.kubectl("patch", "secret", "demo-jwt", "-n", ns, "--type=merge", "-p", patch)
    status = hsc.wait_for(
        lambda: stalled_by(hsc, "JwtKeyRingMalformed"), "Stalled: JwtKeyRingMalformed"
    )
    message = conditions(status)["Ready"]["message"]
    assert message.startswith(
        "Ready: Secret demo-jwt key jwt-keys: the JWT key ring is malformed (JSONDecodeError). "
        "The operator does not replace keys it cannot read"
    ), message
    hsc.wait_for(lambda: warnings(hsc, "JwtKeyRingMalformed"), "a JwtKeyRingMalformed Event")

    # No pass fails (nothing to retry in a loop), none replaces the ring or rolls the pods.
    wait_passes(hsc, 2)
    assert hsc.get("secret", "demo-jwt")["data"]["jwt-keys"] == broken
    assert hsc.get("deployment", "demo-chat")["metadata"]["generation"] == chat
    assert len(warnings(hsc, "JwtKeyRingMalformed")) == 1
    assert passes(hsc, "error") == failed

    # The ring restored, the cluster is Ready on the same keys: nothing rolled.
    patch = json.dumps({"data": {"jwt-keys": ring}})
    hsc.kube.kubectl("patch", "secret", "demo-jwt", "-n", ns, "--type=merge", "-p", patch)
    status = hsc.wait_phase("Ready", timeout=60)
    assert conditions(status)["Stalled"]["status"] == "False"
    assert hsc.get("secret", "demo-jwt")["data"]["jwt-keys"] == ring
    assert hsc.get("deployment", "demo-chat")["metadata"]["generation"] == chat
