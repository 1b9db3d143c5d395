"""Pinned versions of the upstream test infrastructure. Changing one rebuilds only that part."""

from __future__ import annotations

KUBERNETES = "v1.36.3"
# kwok makes pods on fake nodes reach Running/Ready without a kubelet or container runtime.
KWOK = "v0.8.0"
# FerretDB v1 is the MongoDB-wire server the tests use (v2 needs a patched PostgreSQL).
FERRETDB = "v1.24.2"
HELM = "v3.22.0"
GOPHER_LUA = "v1.1.1"
# kstatus (sigs.k8s.io/cli-utils pkg/kstatus): how Flux, kpt and cli-utils read an object's status.
CLI_UTILS = "v0.37.2"
CUSTOM_METRICS_APISERVER = "v1.36.0"


def staging_version(kubernetes: str = KUBERNETES) -> str:
    """k8s.io staging modules are published as v0.<minor>.<patch> of the v1 release."""
    major, minor, patch = kubernetes.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes}")
    return f"v0.{minor}.{patch}"
