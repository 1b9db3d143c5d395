"""The Grafana dashboard in the chart: every panel has queries, every query parses (promtool, as
recording rules) and reads only series that Hypersend's exporters (or cAdvisor) really export.
The alert rules get the same name check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator import rulefiles

from tests.unit.monitoring import promtool
from tests.unit.monitoring.promql import exported_names, metric_names, unknown_names
from tests.unit.monitoring.test_alert_rules import cluster_groups

pytestmark = pytest.mark.unit

DASHBOARD = (
    Path(__file__).resolve().parents[3] / "charts/hypersend-operator/dashboards/hypersend.json"
)
# Grafana's variables, as a query would see them with "All" selected.
VARIABLES = {"$namespace": ".*", "$job": ".*", "$__rate_interval": "5m"}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc["panels"]:
        out.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
        if panel["type"] != "row":
            out.append(panel)
    return out


def queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL with the variables filled in)."""
    found = []
    for panel in panels(doc):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def test_name_finder_finds_names_and_only_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route="/x", le!="1e3"}[5m])))'
        " / on (pod) group_left () b_total * 1.5e3 > bool 2 unless c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert unknown_names(expr) == {"a_bucket", "b_total", "c"}
    assert unknown_names("sum(rate(hypersend_gap_fills_total[5m]))") == set()


def test_exporters_are_read_from_code() -> None:
    names = exported_names()
    assert "hypersend_websocket_connections" in names
    assert "hypersend_http_request_duration_seconds_bucket" in names
    assert "hypersend_operator_reconcile_errors_total" in names
    assert "hypersend_operator_cluster_ready" in names
    assert "process_cpu_seconds_total" in names
    assert "hypersend_websocket_connection" not in names


def test_every_panel_has_a_query_on_the_chosen_datasource() -> None:
    doc = dashboard()
    assert doc["uid"] == "hypersend"
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= variables
    titles = [p["title"] for p in panels(doc)]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    for panel in panels(doc):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"hypersend_dashboard:query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool.run("check", "rules", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


def test_a_broken_query_is_refused(tmp_path: Path) -> None:
    """The check above can fail: promtool refuses what does not parse."""
    path = tmp_path / "broken.rules.yaml"
    bad = {"record": "x:y", "expr": "sum by (pod (hypersend_websocket_connections)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [bad]}]}))
    assert promtool.run("check", "rules", str(path), cwd=tmp_path).returncode != 0


def test_queries_read_only_exported_series() -> None:
    unknown = {title: unknown_names(expr) for title, expr in queries(dashboard())}
    assert {t: n for t, n in unknown.items() if n} == {}


def test_alerts_read_only_exported_series() -> None:
    groups = cluster_groups()
    for name in rulefiles.rendered():
        groups += yaml.safe_load((rulefiles.DEFAULT_DIR / name).read_text())["groups"]
    unknown = {r["alert"]: unknown_names(r["expr"]) for g in groups for r in g["rules"]}
    assert {a: n for a, n in unknown.items() if n} == {}
