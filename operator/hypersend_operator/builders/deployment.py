"""The chat server Deployment.

Shutdown is staged (docs/architecture.md, "Drain"): the preStop sleep lets endpoints drop the pod,
then SIGTERM starts the server's drain (readiness off, sockets closed in batches within
`drainSeconds`), and `terminationGracePeriodSeconds` covers both plus a margin. `spec.replicas` is
left out when the HPA owns it, and the config hash rolls pods only when their configuration
changes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypersend_operator.api import RESTARTED_AT_ANNOTATION, SecretKeyRef
from hypersend_operator.builders.configmap import CHAT_PORT, chat_config_data, chat_config_name
from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import (
    CHAT,
    child_name,
    common_labels,
    metadata,
    selector_labels,
)
from hypersend_operator.builders.secrets import (
    JWT_KEYS_KEY,
    MONGO_URL_KEY,
    REDIS_URL_KEY,
    jwt_secret_name,
    mongo_credentials_secret_name,
    redis_credentials_secret_name,
)
from hypersend_operator.builders.security import (
    container_security_context,
    pod_security_context,
    resources,
)

CONFIG_HASH_ANNOTATION = "hypersend.io/config-hash"
CHAT_UID = 10001
CHAT_CONTAINER = "chat"
TERMINATION_MARGIN_SECONDS = 10


def chat_name(ctx: BuildContext) -> str:
    return child_name(ctx, CHAT)


def secret_refs(ctx: BuildContext) -> dict[str, SecretKeyRef]:
    """Environment variable → Secret key it is read from."""
    refs = {"HYPERSEND_JWT_KEYS": SecretKeyRef(name=jwt_secret_name(ctx.name), key=JWT_KEYS_KEY)}
    mongo, redis = ctx.spec.mongo, ctx.spec.redis
    if mongo.mode == "Atlas" and mongo.atlas is not None:
        refs["HYPERSEND_MONGO_URL"] = mongo.atlas.connection_secret_ref
    else:
        refs["HYPERSEND_MONGO_URL"] = SecretKeyRef(
            name=mongo_credentials_secret_name(ctx.name), key=MONGO_URL_KEY
        )
    if redis.mode == "External" and redis.external is not None:
        refs["HYPERSEND_REDIS_URL"] = redis.external.url_secret_ref
    else:
        refs["HYPERSEND_REDIS_URL"] = SecretKeyRef(
            name=redis_credentials_secret_name(ctx.name), key=REDIS_URL_KEY
        )
    return refs


def config_hash(ctx: BuildContext) -> str:
    """sha256 over what the pods read at start: ConfigMap data, the Secret keys they reference
    and those Secrets' values, so a changed value (a rotated JWT key, a new Atlas or Redis URL)
    rolls the pods through the Deployment's normal rollout (issue #11).

    The values only enter this one-way hash, together with the JWT key ring, so the
    annotation reveals nothing about any of them; they never appear in a manifest.
    """
    refs = secret_refs(ctx)
    # Generated Secrets are not among the user values (None): their values are the two above.
    values = {env: ctx.user_secret_values.get(f"{ref.name}/{ref.key}") for env, ref in refs.items()}
    material = {
        "config": chat_config_data(ctx),
        "secretRefs": {k: [v.name, v.key] for k, v in refs.items()},
        "secretValues": {
            "jwt": ctx.secrets.jwt_keys,
            # Only what the pods use: with Atlas or an external Redis the generated password
            # has no Secret to live in, so it is new on every pass and would roll the pods on
            # every pass.
            # The chat pods log in as the application user; root is the MongoDB container's.
            "mongo": ctx.secrets.mongo_app_password if ctx.spec.mongo.mode == "InCluster" else "",
            "redis": ctx.secrets.redis_password if ctx.spec.redis.mode == "InCluster" else "",
            **values,
        },
        "env": [[e.name, e.value] for e in ctx.spec.chat.env],
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def termination_grace_period_seconds(ctx: BuildContext) -> int:
    ws = ctx.spec.chat.websocket
    return ws.drain_delay_seconds + ws.drain_seconds + TERMINATION_MARGIN_SECONDS


def _env(ctx: BuildContext) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        for name, ref in secret_refs(ctx).items()
    ]
    env.append(
        {
            "name": "HYPERSEND_POD_NAME",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        }
    )
    env.extend({"name": e.name, "value": e.value} for e in ctx.spec.chat.env)
    return env


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _spread(ctx: BuildContext, topology_key: str) -> dict[str, Any]:
    return {
        "maxSkew": 1,
        "topologyKey": topology_key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector_labels(ctx, CHAT)},
        # Spread each ReplicaSet on its own, so a rollout does not skew the new pods.
        "matchLabelKeys": ["pod-template-hash"],
    }


def chat_container(ctx: BuildContext) -> dict[str, Any]:
    chat = ctx.spec.chat
    container: dict[str, Any] = {
        "name": CHAT_CONTAINER,
        "image": chat.image,
        "imagePullPolicy": chat.image_pull_policy,
        "ports": [{"name": "http", "containerPort": CHAT_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": chat_config_name(ctx)}}],
        "env": _env(ctx),
        "resources": resources(chat.resources.requests, chat.resources.limits),
        "startupProbe": _http_probe("/healthz", period=2, failures=30),
        "readinessProbe": _http_probe("/readyz", period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", period=10, failures=3),
        "securityContext": {**container_security_context(), "runAsUser": CHAT_UID},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    delay = chat.websocket.drain_delay_seconds
    if delay > 0:
        # The image guarantees no shell, so the kubelet's own sleep action (k8s >= 1.30).
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": delay}}}
    return container


def chat_deployment(ctx: BuildContext) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if not ctx.spec.autoscaling.enabled:
        spec["replicas"] = ctx.spec.chat.replicas
    spec |= {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector_labels(ctx, CHAT)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
        "template": {
            "metadata": {
                "labels": common_labels(ctx, CHAT),
                "annotations": {
                    CONFIG_HASH_ANNOTATION: config_hash(ctx),
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(CHAT_PORT),
                    "prometheus.io/path": "/metrics",
                }
                | ({RESTARTED_AT_ANNOTATION: ctx.restarted_at} if ctx.restarted_at else {}),
            },
            "spec": {
                "automountServiceAccountToken": False,  # the chat server never calls the API
                # Service links would inject FOO_PORT=tcp://… variables; a Service named
                # "hypersend" would even clobber HYPERSEND_PORT.
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": termination_grace_period_seconds(ctx),
                "securityContext": pod_security_context(CHAT_UID),
                "topologySpreadConstraints": [
                    _spread(ctx, "topology.kubernetes.io/zone"),
                    _spread(ctx, "kubernetes.io/hostname"),
                ],
                "containers": [chat_container(ctx)],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(ctx, chat_name(ctx), CHAT),
        "spec": spec,
    }
