"""Names, labels and owner references shared by every child manifest."""

from __future__ import annotations

from typing import Any

from hypersend_operator.api import API_VERSION, KIND
from hypersend_operator.builders.context import BuildContext

APP_NAME = "hypersend"
MANAGED_BY = "hypersend-operator"
PART_OF = "hypersend"

# Label keys.
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
PART_OF_KEY = "app.kubernetes.io/part-of"

# Values of app.kubernetes.io/component.
CHAT = "chat"
REDIS = "redis"
MONGO = "mongo"
CLUSTER = "cluster"  # objects that belong to the whole cluster (Secrets of the chat, Ingress)


def child_name(ctx: BuildContext | str, suffix: str) -> str:
    """`<cluster>-<suffix>`; takes a context or the bare cluster name (to find a Secret before a
    context exists)."""
    base = ctx if isinstance(ctx, str) else ctx.name
    return f"{base}-{suffix}" if suffix else base


def selector_labels(ctx: BuildContext | str, component: str) -> dict[str, str]:
    """The immutable subset used in selectors: never add keys here (selectors cannot change)."""
    base = ctx if isinstance(ctx, str) else ctx.name
    return {NAME: APP_NAME, INSTANCE: base, COMPONENT: component}


def common_labels(ctx: BuildContext | str, component: str) -> dict[str, str]:
    return {
        **selector_labels(ctx, component),
        MANAGED_BY_KEY: MANAGED_BY,
        PART_OF_KEY: PART_OF,
    }


def managed_selector(cluster_name: str) -> str:
    """Label selector string matching every child of one cluster (for listing and cleanup)."""
    return f"{INSTANCE}={cluster_name},{MANAGED_BY_KEY}={MANAGED_BY}"


def owner_reference(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ctx.name,
        "uid": ctx.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    ctx: BuildContext,
    name: str,
    component: str,
    *,
    annotations: dict[str, str] | None = None,
    owned: bool = True,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ctx.namespace,
        "labels": common_labels(ctx, component),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    if owned:
        meta["ownerReferences"] = [owner_reference(ctx)]
    return meta
