"""The chat server's non-secret settings (HYPERSEND_* names of the env contract) as a ConfigMap."""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata

CHAT_PORT = 8080


def chat_config_name(ctx: BuildContext) -> str:
    return child_name(ctx, CHAT)


def chat_config_data(ctx: BuildContext) -> dict[str, str]:
    chat, mongo = ctx.spec.chat, ctx.spec.mongo
    ws = chat.websocket
    data = {
        "HYPERSEND_HOST": "0.0.0.0",
        "HYPERSEND_PORT": str(CHAT_PORT),
        "HYPERSEND_MONGO_DB": mongo.database,
        "HYPERSEND_MONGO_MIN_POOL": str(mongo.pool.min_size),
        "HYPERSEND_MONGO_MAX_POOL": str(mongo.pool.max_size),
        "HYPERSEND_WS_PING_INTERVAL_SECONDS": str(ws.ping_interval_seconds),
        "HYPERSEND_WS_IDLE_TIMEOUT_SECONDS": str(ws.idle_timeout_seconds),
        "HYPERSEND_WS_MAX_CONNECTIONS": str(ws.max_connections_per_pod),
        "HYPERSEND_RATE_LIMIT_PER_MINUTE": str(chat.rate_limit.requests_per_minute),
        # The pod's preStop sleep already waits drainDelaySeconds while endpoints drop the
        # terminating pod; waiting again after SIGTERM would only stretch every rollout.
        "HYPERSEND_DRAIN_DELAY_SECONDS": "0",
        "HYPERSEND_DRAIN_SECONDS": str(ws.drain_seconds),
        "HYPERSEND_LOG_LEVEL": chat.log_level,
        "HYPERSEND_WEB_CLIENT": "true" if chat.web_client else "false",
        "HYPERSEND_TRUSTED_PROXIES": ", ".join(chat.trusted_proxies),
    }
    # HYPERSEND_REDIS_URL comes from a Secret in both Redis modes (deployment.secret_refs).
    return dict(sorted(data.items()))


def chat_config_map(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ctx, chat_config_name(ctx), CHAT),
        "data": chat_config_data(ctx),
    }
