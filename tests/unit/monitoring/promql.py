"""Which metric names a PromQL expression reads, and which names Hypersend's exporters have.

The expression's syntax is promtool's to judge; this only needs to find names: label matchers,
strings, ranges, numbers, grouping clauses, keywords and function calls are taken out, and what
is left are series names.
"""

from __future__ import annotations

import re
from typing import Final

import hypersend_operator.metrics
from prometheus_client import REGISTRY

import chatserver.metrics

# Series from outside Hypersend that rules and panels may read, and where they come from.
EXTERNAL: Final = {
    "up": "Prometheus, per target",
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet /metrics/cadvisor)",
    "container_memory_working_set_bytes": "cAdvisor",
    "container_spec_cpu_quota": "cAdvisor",
    "container_spec_cpu_period": "cAdvisor",
    "container_spec_memory_limit_bytes": "cAdvisor",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
}

_KEYWORDS: Final = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip
_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(\\.|[^"\\])*"' + r"|'(\\.|[^'\\])*'", " ", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(ms|s|m|h|d|w|y)\b", " ", text)  # durations (offset)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if re.match(r"\s*\(", text[match.end() :]):
            continue  # a function call
        if match[0].lower() not in _KEYWORDS:
            names.add(match[0])
    return names


def exported_names() -> set[str]:
    """Every series name the chat server and the operator can expose (their metrics modules,
    plus the default collectors both serve: process_*, python_*)."""
    assert chatserver.metrics.router is not None  # imported for their registrations
    assert hypersend_operator.metrics.RECONCILES is not None
    names = set()
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def unknown_names(expr: str) -> set[str]:
    return metric_names(expr) - exported_names() - set(EXTERNAL)
