"""The statuses the operator's status module writes, read by the real kstatus library.

kstatus (Flux, kpt, cli-utils) decides on observedGeneration, then `Reconciling` / `Stalled`, then
`Ready`: Current when Ready, InProgress while work is under way, Failed when progress needs a human.
tests/e2e/test_operator_kstatus.py checks the same on statuses the running operator writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypersend_operator import crd
from hypersend_operator import status as st

from tests.unit.delivery import kstatus
from tests.unit.delivery.test_argocd_health import cluster, components, summary

pytestmark = pytest.mark.unit


def test_ready_is_current() -> None:
    assert kstatus.compute(cluster(summary(components()), 1, 1))["status"] == "Current"


def test_pods_starting_is_in_progress() -> None:
    result = kstatus.compute(cluster(summary(components(chat_ready=1)), 1, 1))
    assert result["status"] == "InProgress", result
    assert "not ready 1/2" in result["message"]


def test_a_lagging_generation_is_in_progress() -> None:
    result = kstatus.compute(cluster(summary(components()), 2, 1))
    assert result["status"] == "InProgress", result


def test_a_missing_secret_is_failed_with_its_message() -> None:
    checks = components()
    missing = st.SecretRef("atlas", "uri", "demo", exists=False, has_key=False)
    checks[2] = st.mongo_ready("Atlas", None, missing)
    result = kstatus.compute(cluster(summary(checks), 1, 1))
    assert result["status"] == "Failed", result
    assert "secret atlas not found in namespace demo; create it with key uri" in result["message"]


def test_an_invalid_spec_is_failed() -> None:
    blocking = st.failed(st.READY, "InvalidSpec", "spec.chat.replicas: must be >= 0")
    stalled = st.summarize([], paused=False, generation=3, observed_generation=3, blocking=blocking)
    result = kstatus.compute(cluster(stalled, 3, 3))
    assert result["status"] == "Failed", result


def test_a_brand_new_cluster_is_in_progress() -> None:
    result = kstatus.compute(cluster(st.initial_summary(), 1, None))
    assert result["status"] == "InProgress", result


def test_without_any_status_kstatus_reads_current() -> None:
    """Why the CRD defaults the status and the operator writes one at once: without, kstatus
    has nothing to go on."""
    bare: dict[str, Any] = cluster(st.initial_summary(), 1, None)
    del bare["status"]
    assert kstatus.compute(bare)["status"] == "Current"


def test_the_crds_default_status_is_in_progress_before_the_operator_writes() -> None:
    unseen: dict[str, Any] = cluster(st.initial_summary(), 1, None)
    unseen["status"] = dict(crd.UNOBSERVED_STATUS)
    result = kstatus.compute(unseen)
    assert result["status"] == "InProgress", result


RECORDED = Path(__file__).resolve().parent / "recorded_statuses"
# What kstatus must conclude on each object recorded from the real operator
# (tests/e2e/test_kubectl_plugin.py with HYPERSEND_RECORD_STATUSES=1).
RECORDED_KSTATUS = {
    "first-status": "InProgress",
    "progressing-pods-pending": "InProgress",
    "ready": "Current",
    "paused": "Current",
    "paused-with-new-spec": "InProgress",
    "resumed": "Current",
    "argocd-paused": "Current",
    "argocd-resumed": "Current",
    "degraded-atlas-secret-missing": "Failed",
    "recovered": "Current",
}


@pytest.mark.parametrize(("name", "expected"), sorted(RECORDED_KSTATUS.items()))
def test_recorded_operator_status(name: str, expected: str) -> None:
    obj = json.loads((RECORDED / f"{name}.json").read_text())["object"]
    result = kstatus.compute(obj)
    assert result["status"] == expected, result


def test_every_recording_has_an_expectation() -> None:
    assert {p.stem for p in RECORDED.glob("*.json")} == set(RECORDED_KSTATUS)
