"""The shipped examples are valid and have the shapes the docs promise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator.api import API_VERSION, KIND, HypersendClusterSpec

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert doc["apiVersion"] == API_VERSION
    assert doc["kind"] == KIND
    return dict(doc)


def test_dev_is_small_with_in_cluster_datastores() -> None:
    spec = HypersendClusterSpec.model_validate(load("dev.yaml")["spec"])
    assert spec.chat.image == "ghcr.io/hypersend/chatserver:0.1.0"
    assert spec.autoscaling.max_replicas <= 3
    assert spec.redis.mode == "InCluster"
    assert spec.mongo.mode == "InCluster"
    assert spec.mongo.in_cluster_settings().storage.size == "1Gi"


def test_prod_is_the_study_shape() -> None:
    spec = HypersendClusterSpec.model_validate(load("prod.yaml")["spec"])
    a = spec.autoscaling
    assert (a.enabled, a.min_replicas, a.max_replicas) == (True, 2, 10)
    assert a.target_connections_per_pod == 1000
    assert (a.target_cpu_utilization_percentage, a.target_memory_utilization_percentage) == (70, 80)
    assert spec.chat.pod_disruption_budget.enabled
    assert spec.redis.mode == "InCluster"
    assert spec.mongo.mode == "Atlas"
    assert spec.mongo.atlas is not None
    ref = spec.mongo.atlas.connection_secret_ref
    assert (ref.name, ref.key) == ("hypersend-atlas", "uri")


def test_prod_documents_an_in_cluster_alternative() -> None:
    text = (EXAMPLES / "prod.yaml").read_text()
    assert "# mode: InCluster" in text
