"""Run Debian's promtool (package `prometheus`, installed by `./dev setup`) on rule files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.monitoring.alert_cases import AlertCase, series_text

Rule = dict[str, Any]


def binary() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError(
            "promtool is missing: ./dev setup installs Debian's prometheus package"
        )
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def expand(template: str, labels: dict[str, str]) -> str:
    """What Prometheus makes of the only template the rules use: `{{ $labels.NAME }}`."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)


def _expected(rule: Rule, case: AlertCase, scope_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "exp_labels": {**case.labels, **rule["labels"], **scope_labels},
        "exp_annotations": {k: expand(v, case.labels) for k, v in rule["annotations"].items()},
    }


def _input(series: list[tuple[str, dict[str, str], str]]) -> list[dict[str, str]]:
    return [{"series": series_text(m, labels), "values": values} for m, labels, values in series]


def unit_tests(rules: dict[str, Rule], cases: list[AlertCase], cluster_scope: bool) -> list[Any]:
    """promtool `tests:` entries: per case one run where the alert fires (not before its `for`),
    one where it stays quiet."""
    out: list[Any] = []
    for case in cases:
        rule = rules[case.alert]
        scope_labels = case.extra_labels if cluster_scope else {}
        out.append(
            {
                "name": f"{case.alert} fires",
                "interval": "1m",
                "input_series": _input(case.firing),
                "alert_rule_test": [
                    {"eval_time": case.pending_at, "alertname": case.alert, "exp_alerts": []},
                    {
                        "eval_time": case.fires_at,
                        "alertname": case.alert,
                        "exp_alerts": [_expected(rule, case, scope_labels)],
                    },
                ],
            }
        )
        out.append(
            {
                "name": f"{case.alert} stays quiet",
                "interval": "1m",
                "input_series": _input(case.quiet),
                "alert_rule_test": [
                    {"eval_time": case.fires_at, "alertname": case.alert, "exp_alerts": []}
                ],
            }
        )
    return out


def run_tests(
    groups: list[dict[str, Any]], tests: list[Any], tmp: Path
) -> subprocess.CompletedProcess[str]:
    """Write `groups` as a rule file and `tests` as a promtool test file; run them."""
    (tmp / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp / "tests.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return run("test", "rules", "tests.yaml", cwd=tmp)


def unit_test_rules(
    groups: list[dict[str, Any]], cases: list[AlertCase], cluster_scope: bool, tmp: Path
) -> subprocess.CompletedProcess[str]:
    """Each case's firing and quiet runs against the rules in `groups`."""
    rules = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    return run_tests(groups, unit_tests(rules, cases, cluster_scope), tmp)
