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
# Cluster DNS on the real node, so pods reach Services by name.
COREDNS = "v1.15.0"
# The metric path on the real node: custom metrics from Prometheus, resource metrics from kubelets.
PROMETHEUS_ADAPTER = "v0.12.0"
METRICS_SERVER = "v0.9.0"
# Prometheus 3.16.0 (its Go module numbers releases v0.3xx): Debian's 2.42 is built without the
# Kubernetes service discovery that scraping pods needs.
PROMETHEUS = "v0.316.0"
# Local images (tools/hypersend_devenv/images.py) are made from this Debian release's packages;
# its redis-server is the 7.0 series (the local Redis image's tag says so and the build checks it).
DEBIAN_SUITE = "bookworm"
DEBIAN_REDIS = "7.0"
# The reference server of bench/side_by_side.py; built only when that bench runs, never by CI.
CENTRIFUGO = "v6.9.1"


def staging_version(kubernetes: str = KUBERNETES) -> str:
    """k8s.io staging modules are published as v0.<minor>.<patch> of the v1 release."""
    major, minor, patch = kubernetes.lstrip("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes}")
    return f"v0.{minor}.{patch}"
