"""Pure builders: a `BuildContext` in, Kubernetes manifests out (one module per child kind).

`build_components(ctx)` returns every child in reconcile order, grouped into named components.
A component whose list is empty is switched off: its children (found by `owned_kinds()` and the
`managed_selector` labels) should be deleted by the reconciler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypersend_operator.apiversion import GroupVersion
from hypersend_operator.builders.configmap import chat_config_map
from hypersend_operator.builders.context import (
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
    BuildContext,
    GeneratedSecrets,
)
from hypersend_operator.builders.deployment import (
    CONFIG_HASH_ANNOTATION,
    chat_deployment,
    config_hash,
)
from hypersend_operator.builders.hpa import build_autoscaling
from hypersend_operator.builders.ingress import build_ingress
from hypersend_operator.builders.labels import (
    child_name,
    common_labels,
    managed_selector,
    owner_reference,
    selector_labels,
)
from hypersend_operator.builders.mongo import build_mongo, mongo_pvc_names
from hypersend_operator.builders.monitoring import build_monitoring
from hypersend_operator.builders.networkpolicy import build_network
from hypersend_operator.builders.pdb import build_disruption
from hypersend_operator.builders.redis import build_redis
from hypersend_operator.builders.secrets import (
    JWT_KEYS_KEY,
    JWT_SECRET_KEY,
    MONGO_APP_PASSWORD_KEY,
    MONGO_PASSWORD_KEY,
    REDIS_PASSWORD_KEY,
    UserSecretRef,
    build_secrets,
    decode_secret_value,
    jwt_secret_name,
    mongo_credentials_secret_name,
    redis_credentials_secret_name,
    user_secret_refs,
)
from hypersend_operator.builders.service import chat_service

Manifest = dict[str, Any]

# Component names, in reconcile order. Stable: the reconciler keys conditions and events on them.
SECRETS = "secrets"
CONFIG = "config"
REDIS = "redis"
MONGO = "mongo"
CHAT = "chat"
AUTOSCALING = "autoscaling"
DISRUPTION = "disruption"
INGRESS = "ingress"
NETWORK = "network"
MONITORING = "monitoring"


@dataclass(frozen=True)
class Component:
    name: str
    manifests: list[Manifest] = field(default_factory=list)


def _chat(ctx: BuildContext) -> list[Manifest]:
    return [chat_service(ctx), chat_deployment(ctx)]


_BUILDERS: tuple[tuple[str, Callable[[BuildContext], list[Manifest]]], ...] = (
    (SECRETS, build_secrets),
    (CONFIG, lambda ctx: [chat_config_map(ctx)]),
    (REDIS, build_redis),
    (MONGO, build_mongo),
    (CHAT, _chat),
    (AUTOSCALING, build_autoscaling),
    (DISRUPTION, build_disruption),
    (INGRESS, build_ingress),
    (NETWORK, build_network),
    (MONITORING, build_monitoring),
)
COMPONENT_NAMES: tuple[str, ...] = tuple(name for name, _ in _BUILDERS)


def build_components(ctx: BuildContext) -> list[Component]:
    """Every desired child of the cluster, grouped by component, in reconcile order."""
    return [Component(name, builder(ctx)) for name, builder in _BUILDERS]


def build_all(ctx: BuildContext) -> list[Manifest]:
    return [m for c in build_components(ctx) for m in c.manifests]


@dataclass(frozen=True)
class OwnedKind(GroupVersion):
    """A kind of child the operator creates (for watches and cleanup of switched-off parts)."""

    api_version: str
    kind: str
    plural: str
    capability: str | None = None  # only present when this optional API exists in the cluster


_OWNED_KINDS: tuple[OwnedKind, ...] = (
    OwnedKind("v1", "Secret", "secrets"),
    OwnedKind("v1", "ConfigMap", "configmaps"),
    OwnedKind("v1", "Service", "services"),
    OwnedKind("apps/v1", "Deployment", "deployments"),
    OwnedKind("apps/v1", "StatefulSet", "statefulsets"),
    OwnedKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    OwnedKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    OwnedKind("networking.k8s.io/v1", "Ingress", "ingresses"),
    OwnedKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    OwnedKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", SERVICE_MONITOR),
    OwnedKind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules", PROMETHEUS_RULE),
)


def owned_kinds() -> tuple[OwnedKind, ...]:
    """Kinds the operator owns (with owner references). PVCs are not among them: data outlives
    the CR unless `mongo.deletePolicy: Delete`."""
    return _OWNED_KINDS


__all__ = [
    "AUTOSCALING",
    "CHAT",
    "COMPONENT_NAMES",
    "CONFIG",
    "CONFIG_HASH_ANNOTATION",
    "DISRUPTION",
    "INGRESS",
    "JWT_KEYS_KEY",
    "JWT_SECRET_KEY",
    "MONGO",
    "MONGO_APP_PASSWORD_KEY",
    "MONGO_PASSWORD_KEY",
    "MONITORING",
    "NETWORK",
    "PROMETHEUS_RULE",
    "REDIS",
    "REDIS_PASSWORD_KEY",
    "SECRETS",
    "SERVICE_MONITOR",
    "BuildContext",
    "Component",
    "GeneratedSecrets",
    "Manifest",
    "OwnedKind",
    "UserSecretRef",
    "build_all",
    "build_components",
    "child_name",
    "common_labels",
    "config_hash",
    "decode_secret_value",
    "jwt_secret_name",
    "managed_selector",
    "mongo_credentials_secret_name",
    "mongo_pvc_names",
    "owned_kinds",
    "owner_reference",
    "redis_credentials_secret_name",
    "selector_labels",
    "user_secret_refs",
]
