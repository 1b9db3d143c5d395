"""Typed subsets of the Prometheus Operator's CRDs (monitoring.coreos.com/v1) for dry runs: the
fields Hypersend writes, without x-kubernetes-preserve-unknown-fields, so that strict field
validation rejects anything the chart or the builders get wrong."""

from __future__ import annotations

import json
from typing import Any

from tests.fixtures.kube import KubeCluster

SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["selector"],
                                "properties": {
                                    "selector": {
                                        "type": "object",
                                        "properties": {
                                            "matchLabels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            }
                                        },
                                    },
                                    "namespaceSelector": {
                                        "type": "object",
                                        "properties": {
                                            "any": {"type": "boolean"},
                                            "matchNames": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                        },
                                    },
                                    "endpoints": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "port": {"type": "string"},
                                                "path": {"type": "string"},
                                                "interval": {"type": "string"},
                                                "scrapeTimeout": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}

# A rule group's fields as the chart's rule files and the operator's builder write them.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
PROMETHEUS_RULE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "prometheusrules.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "PrometheusRule",
            "listKind": "PrometheusRuleList",
            "plural": "prometheusrules",
            "singular": "prometheusrule",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "groups": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["name", "rules"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "rules": {
                                                    "type": "array",
                                                    "items": {
                                                        "type": "object",
                                                        "required": ["expr"],
                                                        "properties": {
                                                            "alert": {"type": "string"},
                                                            "record": {"type": "string"},
                                                            "expr": {"type": "string"},
                                                            "for": {"type": "string"},
                                                            "labels": _STRINGS,
                                                            "annotations": _STRINGS,
                                                        },
                                                    },
                                                },
                                            },
                                        },
                                    }
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def install_monitoring_crds(kube: KubeCluster) -> None:
    """Create the subsets where no such CRD exists yet (a real one is left alone)."""
    for crd in (SERVICE_MONITOR_CRD, PROMETHEUS_RULE_CRD):
        name = crd["metadata"]["name"]
        if kube.kubectl("get", "crd", name, check=False).returncode:
            kube.kubectl("create", "-f", "-", input=json.dumps(crd))
            kube.wait_crd_established(name)
