"""argocd/health.lua in gopher-lua (ArgoCD's engine) against HypersendCluster statuses.

Three sources of statuses: objects recorded from the real operator on the local cluster
(recorded_statuses/*.json: `HYPERSEND_RECORD_STATUSES=1 pytest -m e2e
tests/e2e/test_kubectl_plugin.py`, which also checks health.lua live on every e2e run), statuses
computed by the operator's own status module (hypersend_operator.status), and cases crafted per
docs/architecture.md ("The status contract") for shapes a run does not reliably produce
(health_cases.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator import status as st

from tests.unit.delivery import glua

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent
CASES: list[dict[str, Any]] = yaml.safe_load((HERE / "health_cases.yaml").read_text())
RECORDED = sorted((HERE / "recorded_statuses").glob("*.json"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_crafted_status(case: dict[str, Any]) -> None:
    result = glua.health(case["obj"])
    assert result["status"] == case["expect"]["status"], result
    assert case["expect"]["message"] in result["message"], result


def cluster(summary: st.Summary, generation: int, observed: int | None) -> dict[str, Any]:
    """A HypersendCluster carrying the status the operator writes for `summary`."""
    conditions = st.merge_conditions(
        None, summary.conditions, now="2026-11-25T08:00:00Z", observed_generation=observed
    )
    status: dict[str, Any] = {"phase": summary.phase, "conditions": conditions}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {"name": "demo", "namespace": "demo", "generation": generation},
        "status": status,
    }


def ready_deployment(name: str, ready: int, desired: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 1},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 1,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def components(chat_ready: int = 2) -> list[st.Check]:
    return [
        st.chat_ready(ready_deployment("demo-chat", chat_ready, 2)),
        st.redis_ready("InCluster", ready_deployment("demo-redis", 1, 1), None),
        st.mongo_ready(
            "Atlas",
            None,
            st.SecretRef("atlas", "uri", "demo", exists=True, has_key=True),
        ),
        st.autoscaling_ready(False, None),
    ]


def summary(checks: list[st.Check], *, paused: bool = False, gen: int = 1, obs: int = 1) -> Any:
    return st.summarize(checks, paused=paused, generation=gen, observed_generation=obs)


def test_operator_status_all_ready_is_healthy() -> None:
    result = glua.health(cluster(summary(components()), 1, 1))
    assert result["status"] == "Healthy", result


def test_operator_status_with_a_lagging_generation_is_progressing() -> None:
    # The status the operator wrote for generation 1, read after the spec moved to generation 2.
    result = glua.health(cluster(summary(components()), 2, 1))
    assert result["status"] == "Progressing", result
    assert "generation 2" in result["message"]


def test_operator_status_with_pods_starting_is_progressing() -> None:
    result = glua.health(cluster(summary(components(chat_ready=1)), 1, 1))
    assert result == {"status": "Progressing", "message": result["message"]}
    assert "not ready 1/2" in result["message"]


def test_operator_status_with_a_missing_secret_is_degraded_with_its_message() -> None:
    checks = components()
    missing = st.SecretRef("atlas", "uri", "demo", exists=False, has_key=False)
    checks[2] = st.mongo_ready("Atlas", None, missing)
    result = glua.health(cluster(summary(checks), 1, 1))
    assert result["status"] == "Degraded", result
    assert "secret atlas not found in namespace demo" in result["message"]


def test_operator_status_when_paused_is_suspended() -> None:
    obj = cluster(summary(components(), paused=True, gen=2, obs=1), 2, 1)
    obj["metadata"]["annotations"] = {"hypersend.io/paused": "true"}
    result = glua.health(obj)
    assert result["status"] == "Suspended", result
    assert "hypersend.io/paused" in result["message"]


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_status(path: Path) -> None:
    """Each file: {"expect": {"status", "message"}, "object": <HypersendCluster as read>}."""
    record = json.loads(path.read_text())
    result = glua.health(record["object"])
    assert result["status"] == record["expect"]["status"], result
    assert record["expect"]["message"] in result["message"], result


def test_recorded_ready_status_reads_progressing_once_the_spec_moves_on() -> None:
    """A status the operator wrote as Ready, read after a spec change it has not seen yet."""
    record = json.loads((HERE / "recorded_statuses" / "ready.json").read_text())
    obj = record["object"]
    assert glua.health(obj)["status"] == "Healthy"
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    result = glua.health(obj)
    assert result["status"] == "Progressing", result
    assert f"generation {obj['metadata']['generation']}" in result["message"]


def test_a_script_error_fails_loudly(tmp_path: Path) -> None:
    """The runner reports Lua errors, so a broken health.lua cannot pass as 'no result'."""
    broken = tmp_path / "broken.lua"
    broken.write_text('return ("x"):upper()\n')  # ArgoCD opens no string library
    with pytest.raises(pytest.fail.Exception, match="non-table"):
        glua.run(broken, {})


def test_operator_status_stalled_on_an_invalid_spec_is_degraded() -> None:
    """A spec the models refuse: Stalled at its generation (kstatus Failed), Degraded here."""
    blocking = st.failed(st.READY, "InvalidSpec", "spec.chat.replicas: must be >= 0")
    stalled = st.summarize([], paused=False, generation=3, observed_generation=3, blocking=blocking)
    assert {c.type: c.status for c in stalled.conditions}["Stalled"] == "True"
    result = glua.health(cluster(stalled, 3, 3))
    assert result == {"status": "Degraded", "message": "Ready: spec.chat.replicas: must be >= 0"}


def test_operator_status_of_a_brand_new_cluster_is_progressing() -> None:
    result = glua.health(cluster(st.initial_summary(), 1, None))
    assert result["status"] == "Progressing", result
