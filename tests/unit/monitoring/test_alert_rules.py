"""The alert rules under `promtool test rules`: each alert fires on its case's series (only once
its `for` has passed) and stays quiet on the quiet ones, in the chart's rule files (all clusters)
and in a HypersendCluster's PrometheusRule; a wrong threshold makes its case fail. The chart's
files are the generated ones (one source: `hypersend_operator.builders.alerts`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator import rulefiles
from hypersend_operator.builders import build_all
from hypersend_operator.builders.context import PROMETHEUS_RULE

from tests.unit.monitoring import promtool
from tests.unit.monitoring.alert_cases import (
    CHAT_CASES,
    CLUSTER,
    CLUSTER_ONLY_CASES,
    NAMESPACE,
    OPERATOR_CASES,
    AlertCase,
)
from tests.unit.operator.support import ctx, find

pytestmark = pytest.mark.unit

RULES_DIR = rulefiles.DEFAULT_DIR
CHAT_FILE = RULES_DIR / "hypersend-chat.rules.yaml"
OPERATOR_FILE = RULES_DIR / "hypersend-operator.rules.yaml"


def file_groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def cluster_groups() -> list[dict[str, Any]]:
    c = ctx(capabilities=frozenset({PROMETHEUS_RULE}), monitoring={"prometheusRule": True})
    assert (c.namespace, c.name) == (NAMESPACE, CLUSTER)
    rule = find(build_all(c), "PrometheusRule", f"{CLUSTER}-chat")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alert_names(groups: list[dict[str, Any]]) -> list[str]:
    return [r["alert"] for g in groups for r in g["rules"]]


def passes(proc: Any) -> None:
    assert proc.returncode == 0, f"promtool failed:\n{proc.stdout}{proc.stderr}"


def test_chart_rule_files_are_the_generated_ones() -> None:
    assert rulefiles.main(["--check"]) == 0, "run `python -m hypersend_operator.rulefiles`"


def test_drift_is_noticed(tmp_path: Path) -> None:
    rulefiles.main(["--dir", str(tmp_path)])
    assert rulefiles.main(["--check", "--dir", str(tmp_path)]) == 0
    path = tmp_path / CHAT_FILE.name
    path.write_text(path.read_text().replace("> 0.01", "> 0.02"))
    assert rulefiles.main(["--check", "--dir", str(tmp_path)]) == 1


@pytest.mark.parametrize("path", [CHAT_FILE, OPERATOR_FILE], ids=lambda p: p.name)
def test_chart_rule_files_pass_promtool_check(path: Path) -> None:
    passes(promtool.run("check", "rules", str(path), cwd=path.parent))


def test_every_alert_has_a_case() -> None:
    assert alert_names(file_groups(CHAT_FILE)) == [c.alert for c in CHAT_CASES]
    assert alert_names(file_groups(OPERATOR_FILE)) == [c.alert for c in OPERATOR_CASES]
    cluster = [c.alert for c in CHAT_CASES + CLUSTER_ONLY_CASES]
    assert alert_names(cluster_groups()) == cluster


def test_both_scopes_share_each_alerts_timing_severity_and_text() -> None:
    chart = {r["alert"]: r for g in file_groups(CHAT_FILE) for r in g["rules"]}
    cluster = {r["alert"]: r for g in cluster_groups() for r in g["rules"]}
    for name, rule in chart.items():
        mine = cluster[name]
        assert (mine["for"], mine["annotations"]) == (rule["for"], rule["annotations"]), name
        assert mine["labels"] == {**rule["labels"], "hypersendcluster": CLUSTER}, name


def test_chart_chat_alerts_fire_and_stay_quiet(tmp_path: Path) -> None:
    passes(promtool.unit_test_rules(file_groups(CHAT_FILE), CHAT_CASES, False, tmp_path))


def test_chart_operator_alerts_fire_and_stay_quiet(tmp_path: Path) -> None:
    passes(promtool.unit_test_rules(file_groups(OPERATOR_FILE), OPERATOR_CASES, False, tmp_path))


def test_cluster_prometheus_rule_alerts_fire_and_stay_quiet(tmp_path: Path) -> None:
    cases = CHAT_CASES + CLUSTER_ONLY_CASES
    passes(promtool.unit_test_rules(cluster_groups(), cases, True, tmp_path))


def elsewhere(labels: dict[str, str]) -> dict[str, str]:
    """The labels of the same series from the cluster `demo2` (namespace kept)."""
    renamed = {"demo-chat": "demo2-chat", CLUSTER: "demo2"}
    return {k: renamed.get(v, v.replace("demo-chat-", "demo2-chat-")) for k, v in labels.items()}


def test_cluster_rule_ignores_other_clusters(tmp_path: Path) -> None:
    """Each firing case's series, but from another cluster's pods: `demo`'s rule stays quiet."""
    cases = [
        replace(c, quiet=[(m, elsewhere(lb), v) for m, lb, v in c.firing])
        for c in CHAT_CASES + CLUSTER_ONLY_CASES
        if c.alert != "HypersendChatNoTargets"  # absent(): the other pods are no targets of ours
    ]
    for c in cases:
        assert c.quiet != c.firing
    tests = [
        t
        for t in promtool.unit_tests(
            {c.alert: {"labels": {}, "annotations": {}} for c in cases}, cases, True
        )
        if t["name"].endswith("stays quiet")
    ]
    proc = promtool.run_tests(cluster_groups(), tests, tmp_path)
    passes(proc)


def _mutated(groups: list[dict[str, Any]], alert: str, old: str, new: str) -> list[dict[str, Any]]:
    out = []
    for g in groups:
        rules = []
        for r in g["rules"]:
            if r["alert"] == alert:
                assert r["expr"].count(old) == 1, f"{old!r} is not once in {r['expr']!r}"
                r = {**r, "expr": r["expr"].replace(old, new)}
            rules.append(r)
        out.append({**g, "rules": rules})
    return out


@pytest.mark.parametrize(
    ("case", "source"),
    [(c, "chart-chat") for c in CHAT_CASES]
    + [(c, "cluster") for c in CLUSTER_ONLY_CASES]
    + [(c, "chart-operator") for c in OPERATOR_CASES],
    ids=lambda v: v.alert if isinstance(v, AlertCase) else v,
)
def test_a_wrong_threshold_fails_the_case(case: AlertCase, source: str, tmp_path: Path) -> None:
    groups = {
        "chart-chat": lambda: file_groups(CHAT_FILE),
        "chart-operator": lambda: file_groups(OPERATOR_FILE),
        "cluster": cluster_groups,
    }[source]()
    wrong = _mutated(groups, case.alert, *case.wrong_threshold)
    proc = promtool.unit_test_rules(wrong, [case], source == "cluster", tmp_path)
    assert proc.returncode != 0, f"{case.alert} passed with {case.wrong_threshold[1]!r}"
    assert case.alert in proc.stdout + proc.stderr


def test_a_dotted_cluster_name_matches_only_its_own_pods(tmp_path: Path) -> None:
    """Cluster names may hold dots; in the pod regex a dot must not match any character."""
    c = ctx(
        name="my.app",
        capabilities=frozenset({PROMETHEUS_RULE}),
        monitoring={"prometheusRule": True},
    )
    groups = find(build_all(c), "PrometheusRule", "my.app-chat")["spec"]["groups"]
    near = next(x for x in CHAT_CASES if x.alert == "HypersendChatNearConnectionLimit")

    def on_pod(pod: str) -> list[tuple[str, dict[str, str], str]]:
        return [(m, {**lb, "pod": pod}, v) for m, lb, v in near.firing]

    case = replace(
        near,
        firing=on_pod("my.app-chat-7d9f8c6b5-x2x4z"),
        labels={**near.labels, "pod": "my.app-chat-7d9f8c6b5-x2x4z"},
        quiet=on_pod("myxapp-chat-7d9f8c6b5-x2x4z"),
        extra_labels={},
    )
    passes(promtool.unit_test_rules(groups, [case], True, tmp_path))
