"""The local metric path's manifests (tools/hypersend_devenv/metrics.py) are built from the files
users get: the scrape jobs of docs/install.md, the chart's alert rules and the adapter values."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypersend_devenv import build, metrics

pytestmark = pytest.mark.unit


def by_kind(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_prometheus_runs_the_users_scrape_jobs_and_loads_every_chart_rule_file() -> None:
    config = metrics.prometheus_config()
    users = yaml.safe_load(metrics.SCRAPE_CONFIG.read_text())["scrape_configs"]
    assert config["scrape_configs"] == users
    names = {path.name for path in metrics.RULE_FILES}
    assert names == {"hypersend-chat.rules.yaml", "hypersend-operator.rules.yaml"}
    assert config["rule_files"] == [f"/etc/prometheus/{n}" for n in sorted(names)]
    files = metrics.prometheus_files(config)
    assert set(files) == {"prometheus.yml", *names}
    for path in metrics.RULE_FILES:
        assert files[path.name] == path.read_text()


def test_a_changed_rule_file_rolls_the_prometheus_pod(tmp_path: Any) -> None:
    rule = tmp_path / "x.rules.yaml"
    rule.write_text("groups: []\n")

    def template_hash() -> str:
        objects = metrics.prometheus_manifests(
            "img", metrics.prometheus_config(rule_files=[rule]), rule_files=[rule]
        )
        deployment = by_kind(objects, "Deployment", "prometheus")
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return str(annotations)

    before = template_hash()
    rule.write_text("groups: [{name: g, rules: []}]\n")
    assert template_hash() != before


def test_the_adapter_serves_the_values_files_rules_from_this_prometheus() -> None:
    values = metrics.adapter_values()
    shipped = yaml.safe_load(metrics.ADAPTER_VALUES.read_text())
    assert metrics.adapter_config(values)["rules"] == shipped["rules"]["custom"]
    args = metrics.adapter_args(values)
    assert "--prometheus-url=http://prometheus.hypersend-monitoring.svc:9090" in args


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60}[duration[-1]]


def test_the_local_cluster_changes_only_the_intervals_and_relists_slower_than_it_scrapes() -> None:
    users = metrics.prometheus_config()
    local = metrics.prometheus_config(scrape_interval=metrics.LOCAL_SCRAPE_INTERVAL)

    def without_interval(config: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in job.items() if k != "scrape_interval"}
            for job in config["scrape_configs"]
        ]

    assert without_interval(local) == without_interval(users)
    assert {job["scrape_interval"] for job in local["scrape_configs"]} == {"5s"}
    assert local["rule_files"] == users["rule_files"]
    objects = metrics.manifests("p", "a", "m", b"ca")
    served = by_kind(objects, "ConfigMap", "prometheus")["data"]["prometheus.yml"]
    assert yaml.safe_load(served) == local
    deployment = by_kind(objects, "Deployment", "prometheus-adapter")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    relist = next(a.split("=", 1)[1] for a in args if a.startswith("--metrics-relist-interval="))
    # A relist window shorter than the scrape interval can miss a series (the metric vanishes).
    assert _seconds(relist) > _seconds(metrics.LOCAL_SCRAPE_INTERVAL)
    assert _seconds(relist) < _seconds(str(metrics.ADAPTER_CHART_DEFAULTS["metricsRelistInterval"]))


def test_the_adapter_refuses_values_that_turn_the_charts_default_rules_on() -> None:
    with pytest.raises(ValueError, match="default rules"):
        metrics.adapter_config({"rules": {"default": True}})


@pytest.mark.parametrize(
    ("module_version", "release"), [("v0.316.0", "3.16.0"), ("v0.300.1", "3.0.1")]
)
def test_prometheus_module_versions_name_their_release(module_version: str, release: str) -> None:
    assert build.prometheus_release(module_version) == release
    assert f"Version={release} " in build.prometheus_ldflags(module_version) + " "


def test_a_version_that_is_not_prometheus_3_is_refused() -> None:
    with pytest.raises(ValueError, match="Prometheus 3"):
        build.prometheus_release("v2.53.0")
