"""Chat server settings: each has an environment name (prefix HYPERSEND_) and a default.

The names are a contract with the operator's ConfigMap/Deployment builders; see
`docs/configuration.md`.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Validated server settings, read from the environment."""

    model_config = SettingsConfigDict(env_prefix="HYPERSEND_", extra="ignore", frozen=True)

    # A pod must listen on its pod IP, hence all interfaces by default.
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    mongo_url: SecretStr = SecretStr("mongodb://localhost:27017")
    mongo_db: str = Field(default="hypersend", min_length=1, max_length=63)
    mongo_min_pool: int = Field(default=10, ge=0)
    mongo_max_pool: int = Field(default=50, ge=1)
    redis_url: SecretStr = SecretStr("redis://localhost:6379/0")
    # Every Redis key and channel starts with it, so processes sharing a Redis can be kept apart.
    redis_prefix: str = Field(default="hypersend:", min_length=1, max_length=128)
    jwt_secret: SecretStr
    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=2_592_000, ge=1)
    ws_ping_interval_seconds: float = Field(default=30, gt=0)
    ws_idle_timeout_seconds: float = Field(default=300, gt=0)
    ws_max_connections: int = Field(default=5000, ge=1)
    ws_send_queue_size: int = Field(default=256, ge=1)
    # A socket that takes no frame for this long while history waits to be queued for it is a
    # slow consumer (chatserver/realtime.py, Session.push_wait).
    ws_send_stall_seconds: float = Field(default=10, gt=0)
    max_message_bytes: int = Field(default=16_384, ge=1)
    rate_limit_per_minute: int = Field(default=100, ge=1)
    drain_delay_seconds: float = Field(default=5, ge=0)
    drain_seconds: float = Field(default=30, gt=0)
    drain_batch_size: int = Field(default=200, ge=1)
    log_level: LogLevel = "info"
    # Serve the web client (chatserver/webclient) at /app/ and redirect / to it. Off by default:
    # a deployment that only serves API clients exposes no page.
    web_client: bool = False
    pod_name: str = Field(default_factory=socket.gethostname)

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("HYPERSEND_JWT_SECRET must be at least 32 characters")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
