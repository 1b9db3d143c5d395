"""Secrets the operator generates once: the JWT key ring (rotated on request) and the in-cluster
MongoDB and Redis credentials.

Values come from `ctx.secrets` (read back from the live Secrets, or generated once by the
reconciler), so rendering is pure and a value never changes by accident. The Atlas and external
Redis Secrets are the user's: they are referenced, never built.

The MongoDB credentials belong to the data, not to the cluster object: under
`mongo.deletePolicy: Retain` the Secret carries no owner reference, so it survives the CR with the
volume and a cluster re-created under the same name reads the same passwords back. Under `Delete`
it is owned by the CR and the garbage collector removes it with everything else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypersend_operator.api import HypersendClusterSpec, SecretKeyRef
from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, MONGO, REDIS, child_name, metadata

JWT_SECRET_SUFFIX = "jwt"
JWT_KEYS_KEY = "jwt-keys"  # the key ring (builders/jwtring.py)
JWT_SECRET_KEY = "jwt-secret"  # a single key, as written before rings; read once to migrate
MONGO_CREDENTIALS_SUFFIX = "mongo-credentials"
MONGO_USERNAME_KEY = "username"
MONGO_PASSWORD_KEY = "password"
MONGO_URL_KEY = "url"  # full connection URL for the chat pods (the application user)
MONGO_APP_USERNAME_KEY = "app-username"
MONGO_APP_PASSWORD_KEY = "app-password"
MONGO_ROOT_USER = "root"  # only the MongoDB container logs in as root
# The chat pods' user: role readWrite on the chat database only (created by mongo.init_script).
MONGO_APP_USER = "hypersend-chat"
MONGO_PORT = 27017
REDIS_PORT = 6379

REDIS_CREDENTIALS_SUFFIX = "redis-credentials"
REDIS_PASSWORD_KEY = "password"
REDIS_URL_KEY = "url"  # full connection URL for the chat pods
REDIS_ACL_KEY = "users.acl"  # the in-cluster Redis's ACL file
REDIS_CHAT_USER = "hypersend-chat"
# What the chat server uses (chatserver/bus.py): keys and channels under its prefix (the
# default HYPERSEND_REDIS_PREFIX; the operator never sets another) and these commands. Lua scripts
# run their commands under the same user, so those are listed too (TIME, Z*, PEXPIRE). The chat
# server does not send CLIENT SETINFO (chatserver/bus.py), so no CLIENT subcommand is needed.
REDIS_CHAT_PREFIX = "hypersend:"
REDIS_CHAT_COMMANDS = (
    "ping",
    "publish",
    "subscribe",
    "unsubscribe",
    "evalsha",
    "eval",
    "script|load",
    "script|exists",
    "time",
    "zadd",
    "zrem",
    "zremrangebyscore",
    "zcard",
    "zcount",
    "zrange",
    "pexpire",
)

GENERATED_ANNOTATION = "hypersend.io/generated"


def jwt_secret_name(cluster_name: str) -> str:
    return child_name(cluster_name, JWT_SECRET_SUFFIX)


def mongo_credentials_secret_name(cluster_name: str) -> str:
    return child_name(cluster_name, MONGO_CREDENTIALS_SUFFIX)


def redis_credentials_secret_name(cluster_name: str) -> str:
    return child_name(cluster_name, REDIS_CREDENTIALS_SUFFIX)


def redis_acl(ctx: BuildContext) -> str:
    """The in-cluster Redis's users: the default user is off (no unauthenticated access, so
    protected mode never has to decide), the chat user may run only its commands on its prefix.
    Passwords are stored as SHA-256 (`#`), so the file holds no plain password."""
    digest = hashlib.sha256(ctx.secrets.redis_password.encode()).hexdigest()
    commands = " ".join(f"+{command}" for command in REDIS_CHAT_COMMANDS)
    return (
        "user default off resetpass resetkeys resetchannels -@all\n"
        f"user {REDIS_CHAT_USER} on #{digest} resetkeys resetchannels "
        f"~{REDIS_CHAT_PREFIX}* &{REDIS_CHAT_PREFIX}* -@all {commands}\n"
    )


def in_cluster_redis_url(ctx: BuildContext) -> str:
    password = quote(ctx.secrets.redis_password, safe="")
    host = f"{child_name(ctx, REDIS)}.{ctx.namespace}.svc"
    return f"redis://{REDIS_CHAT_USER}:{password}@{host}:{REDIS_PORT}/0"


def redis_credentials_secret(ctx: BuildContext) -> dict[str, Any]:
    return _secret(
        ctx,
        redis_credentials_secret_name(ctx.name),
        REDIS,
        {
            REDIS_PASSWORD_KEY: ctx.secrets.redis_password,
            REDIS_URL_KEY: in_cluster_redis_url(ctx),
            REDIS_ACL_KEY: redis_acl(ctx),
        },
    )


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def decode_secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """The decoded value of `key` in a Secret object as read from the API, or None if absent."""
    data = secret.get("data") or {}
    raw = data.get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode()


def _secret(
    ctx: BuildContext, name: str, component: str, data: dict[str, str], *, owned: bool = True
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            ctx, name, component, annotations={GENERATED_ANNOTATION: "true"}, owned=owned
        ),
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in data.items()},
    }


def jwt_secret(ctx: BuildContext) -> dict[str, Any]:
    return _secret(ctx, jwt_secret_name(ctx.name), CHAT, {JWT_KEYS_KEY: ctx.secrets.jwt_keys})


def mongo_host(ctx: BuildContext) -> str:
    """DNS name of the single in-cluster MongoDB pod (through its headless Service)."""
    sts = child_name(ctx, MONGO)
    return f"{sts}-0.{sts}.{ctx.namespace}.svc:{MONGO_PORT}"


def in_cluster_mongo_url(ctx: BuildContext) -> str:
    """The chat pods' URL: the application user, authenticated against the chat database (where
    the init script creates it), never root."""
    password = quote(ctx.secrets.mongo_app_password, safe="")
    database, host = ctx.spec.mongo.database, mongo_host(ctx)
    return f"mongodb://{MONGO_APP_USER}:{password}@{host}/{database}?authSource={database}"


def mongo_credentials_owned(ctx: BuildContext) -> bool:
    """Whether the MongoDB credentials Secret goes with the CR: only under `deletePolicy:
    Delete`. Under Retain it outlives the CR like the volume whose users it holds (issue #11)."""
    return ctx.spec.mongo.delete_policy == "Delete"


def mongo_credentials_secret(ctx: BuildContext) -> dict[str, Any]:
    return _secret(
        ctx,
        mongo_credentials_secret_name(ctx.name),
        MONGO,
        {
            MONGO_USERNAME_KEY: MONGO_ROOT_USER,
            MONGO_PASSWORD_KEY: ctx.secrets.mongo_root_password,
            MONGO_APP_USERNAME_KEY: MONGO_APP_USER,
            MONGO_APP_PASSWORD_KEY: ctx.secrets.mongo_app_password,
            MONGO_URL_KEY: in_cluster_mongo_url(ctx),
        },
        owned=mongo_credentials_owned(ctx),
    )


def build_secrets(ctx: BuildContext) -> list[dict[str, Any]]:
    out = [jwt_secret(ctx)]
    if ctx.spec.mongo.mode == "InCluster":
        out.append(mongo_credentials_secret(ctx))
    if ctx.spec.redis.mode == "InCluster":
        out.append(redis_credentials_secret(ctx))
    return out


@dataclass(frozen=True)
class UserSecretRef:
    """A Secret key the user provides (never built or modified by the operator)."""

    component: str  # "redis" or "mongo": whose readiness depends on it
    field: str  # spec path, for messages: "mongo.atlas.connectionSecretRef"
    ref: SecretKeyRef


def user_secret_refs(spec: HypersendClusterSpec) -> list[UserSecretRef]:
    """Secrets the chat pods need that the user must create; the reconciler checks they exist."""
    out: list[UserSecretRef] = []
    if spec.redis.mode == "External" and spec.redis.external is not None:
        out.append(
            UserSecretRef(
                "redis", "redis.external.urlSecretRef", spec.redis.external.url_secret_ref
            )
        )
    if spec.mongo.mode == "Atlas" and spec.mongo.atlas is not None:
        out.append(
            UserSecretRef(
                "mongo", "mongo.atlas.connectionSecretRef", spec.mongo.atlas.connection_secret_ref
            )
        )
    return out
