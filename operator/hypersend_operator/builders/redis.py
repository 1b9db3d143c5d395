"""In-cluster Redis (one pod + Service) for pub/sub fan-out, rate limits and presence.

Redis holds nothing that must survive a restart here (messages live in MongoDB), so it runs on an
emptyDir without persistence. In External mode nothing is built: the chat pods read the URL from
the user's Secret.
"""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import (
    REDIS,
    child_name,
    common_labels,
    metadata,
    selector_labels,
)
from hypersend_operator.builders.security import (
    container_security_context,
    pod_security_context,
    resources,
)

REDIS_PORT = 6379
REDIS_UID = 999  # the `redis` user of the official image


def redis_name(ctx: BuildContext) -> str:
    return child_name(ctx, REDIS)


def in_cluster_redis_url(ctx: BuildContext) -> str:
    return f"redis://{redis_name(ctx)}.{ctx.namespace}.svc:{REDIS_PORT}/0"


def redis_deployment(ctx: BuildContext) -> dict[str, Any]:
    settings = ctx.spec.redis.in_cluster_settings()
    probe = {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, redis_name(ctx), REDIS),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            "strategy": {"type": "Recreate"},  # one instance: never two at once
            "selector": {"matchLabels": selector_labels(ctx, REDIS)},
            "template": {
                "metadata": {"labels": common_labels(ctx, REDIS)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(REDIS_UID),
                    "containers": [
                        {
                            "name": "redis",
                            "image": settings.image,
                            "command": ["redis-server"],
                            "args": [
                                "--port",
                                str(REDIS_PORT),
                                "--save",
                                "",
                                "--appendonly",
                                "no",
                                # No password: reachable only in-namespace (NetworkPolicy when on).
                                "--protected-mode",
                                "no",
                            ],
                            "ports": [
                                {"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}
                            ],
                            "resources": resources(
                                settings.resources.requests, settings.resources.limits
                            ),
                            "readinessProbe": {**probe, "periodSeconds": 5},
                            "livenessProbe": {**probe, "failureThreshold": 3},
                            "securityContext": container_security_context(),
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def redis_service(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, redis_name(ctx), REDIS),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ctx, REDIS),
            "ports": [
                {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}
            ],
        },
    }


def build_redis(ctx: BuildContext) -> list[dict[str, Any]]:
    if ctx.spec.redis.mode != "InCluster":
        return []
    return [redis_service(ctx), redis_deployment(ctx)]
