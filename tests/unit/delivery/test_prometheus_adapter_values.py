"""charts/prometheus-adapter-values.yaml serves exactly the metric the operator's HPA reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator.builders.hpa import CONNECTIONS_METRIC

pytestmark = pytest.mark.unit

VALUES = Path(__file__).resolve().parents[3] / "charts" / "prometheus-adapter-values.yaml"


def rules() -> list[dict[str, Any]]:
    values = yaml.safe_load(VALUES.read_text())
    assert values["rules"]["default"] is False
    return list(values["rules"]["custom"])


def test_one_rule_for_the_connections_gauge() -> None:
    (rule,) = rules()
    assert rule["seriesQuery"].startswith(CONNECTIONS_METRIC + "{")
    assert re.fullmatch(rule["name"]["matches"], CONNECTIONS_METRIC)
    assert rule["name"]["as"] == CONNECTIONS_METRIC


def test_rule_maps_series_to_pods_for_a_pods_metric() -> None:
    (rule,) = rules()
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    # The adapter fills these placeholders; without them it cannot answer per-pod queries.
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]
