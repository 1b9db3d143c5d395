"""Pure builders: `BuildContext` in, Kubernetes manifests out (one module per child kind).

Assembled by `build_components` (added below as the builders land).
"""

from hypersend_operator.builders.context import (
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
    BuildContext,
    GeneratedSecrets,
)
from hypersend_operator.builders.labels import child_name, common_labels, selector_labels

__all__ = [
    "PROMETHEUS_RULE",
    "SERVICE_MONITOR",
    "BuildContext",
    "GeneratedSecrets",
    "child_name",
    "common_labels",
    "selector_labels",
]
