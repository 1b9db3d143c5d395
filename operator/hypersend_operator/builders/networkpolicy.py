"""Optional NetworkPolicies: chat pods accept only their HTTP port; in-cluster Redis and MongoDB
accept only the chat pods of the same cluster."""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.configmap import CHAT_PORT
from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import (
    CHAT,
    MONGO,
    REDIS,
    child_name,
    metadata,
    selector_labels,
)
from hypersend_operator.builders.secrets import MONGO_PORT, REDIS_PORT


def _policy(ctx: BuildContext, component: str, port: int, from_chat_only: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    if from_chat_only:
        rule["from"] = [{"podSelector": {"matchLabels": selector_labels(ctx, CHAT)}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, child_name(ctx, component), component),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(ctx, component)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def build_network(ctx: BuildContext) -> list[dict[str, Any]]:
    if not ctx.spec.network_policy.enabled:
        return []
    out = [_policy(ctx, CHAT, CHAT_PORT, from_chat_only=False)]
    if ctx.spec.redis.mode == "InCluster":
        out.append(_policy(ctx, REDIS, REDIS_PORT, from_chat_only=True))
    if ctx.spec.mongo.mode == "InCluster":
        out.append(_policy(ctx, MONGO, MONGO_PORT, from_chat_only=True))
    return out
