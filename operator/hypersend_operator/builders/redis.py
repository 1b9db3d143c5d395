"""In-cluster Redis (one pod + Service) for pub/sub fan-out, rate limits and presence.

Redis holds nothing that must survive a restart here (messages live in MongoDB), so it runs on an
emptyDir without persistence. In External mode nothing is built: the chat pods read the URL from
the user's Secret.

What this single instance survives, and what not (docs/install.md says the same to users): a
restart, an eviction or a node drain costs live fan-out between chat pods for a few seconds, never
a socket or a message (the chat server runs degraded and catches its sockets up from MongoDB when
Redis is back, see chatserver/bus.py); rate-limit windows and presence restart empty. It is not
highly available: a node that does not come back takes Redis with it until it is rescheduled.

Access (issue #11): the default user is off and protected mode on; the chat pods log in as
``hypersend-chat``, a user limited to the commands and the key/channel prefix the chat server
uses, with a generated password (the ACL file and the chat pods' URL live in the
``<name>-redis-credentials`` Secret, see secrets.redis_acl; tests/integration/chatserver/
test_security_redis.py runs the rendered file in a real redis-server).

Probes ask Redis itself (``redis-cli ping`` must answer PONG): an open port is not enough, a Redis
that stopped answering (frozen, or stuck loading) must leave its Service and, if it stays so, be
restarted. The PodDisruptionBudget allows one voluntary disruption at a time: with one replica a
stricter budget would block every node drain for good, while the chat pods ride out the restart.
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
from hypersend_operator.builders.secrets import (
    REDIS_ACL_KEY,
    REDIS_CHAT_USER,
    REDIS_PASSWORD_KEY,
    REDIS_PORT,
    redis_credentials_secret_name,
)
from hypersend_operator.builders.security import (
    container_security_context,
    pod_security_context,
    resources,
)

REDIS_UID = 999  # the `redis` user of the official image
ACL_DIR = "/etc/hypersend-redis"


def redis_name(ctx: BuildContext) -> str:
    return child_name(ctx, REDIS)


def redis_ping_probe(timeout_seconds: int) -> dict[str, Any]:
    """An exec probe that passes only when Redis answers PING with PONG within the timeout (as
    the chat user: the default user is off; REDISCLI_AUTH holds its password)."""
    command = f"redis-cli --user {REDIS_CHAT_USER} -p {REDIS_PORT} ping | grep -qx PONG"
    return {
        "exec": {"command": ["sh", "-c", command]},
        "timeoutSeconds": timeout_seconds,
    }


def redis_deployment(ctx: BuildContext) -> dict[str, Any]:
    settings = ctx.spec.redis.in_cluster_settings()
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
                                # Users and passwords from the generated Secret: the default
                                # user is off, the chat user limited to its commands and prefix
                                # (secrets.redis_acl). Protected mode stays on as a backstop.
                                "--protected-mode",
                                "yes",
                                "--aclfile",
                                f"{ACL_DIR}/{REDIS_ACL_KEY}",
                            ],
                            "env": [
                                {
                                    "name": "REDISCLI_AUTH",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": redis_credentials_secret_name(ctx.name),
                                            "key": REDIS_PASSWORD_KEY,
                                        }
                                    },
                                }
                            ],
                            "ports": [
                                {"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}
                            ],
                            "resources": resources(
                                settings.resources.requests, settings.resources.limits
                            ),
                            # Out of the Service after 2 missed PINGs (10 s).
                            "readinessProbe": {
                                **redis_ping_probe(2),
                                "periodSeconds": 5,
                                "failureThreshold": 2,
                            },
                            # Restarted after 30 s without an answer.
                            "livenessProbe": {
                                **redis_ping_probe(5),
                                "initialDelaySeconds": 10,
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data"},
                                {"name": "acl", "mountPath": ACL_DIR, "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {
                            "name": "acl",
                            "secret": {
                                "secretName": redis_credentials_secret_name(ctx.name),
                                "items": [{"key": REDIS_ACL_KEY, "path": REDIS_ACL_KEY}],
                            },
                        },
                    ],
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


def redis_pdb(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, redis_name(ctx), REDIS),
        "spec": {
            # One replica: one voluntary disruption at a time, never a drain blocked for good.
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(ctx, REDIS)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_redis(ctx: BuildContext) -> list[dict[str, Any]]:
    if ctx.spec.redis.mode != "InCluster":
        return []
    return [redis_service(ctx), redis_deployment(ctx), redis_pdb(ctx)]
