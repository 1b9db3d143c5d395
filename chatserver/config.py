"""Chat server settings: each has an environment name (prefix HYPERSEND_) and a default.

The names are a contract with the operator's ConfigMap/Deployment builders; see
`docs/configuration.md`.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Final, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatserver.jwtkeys import MIN_SECRET_LENGTH, KeyRing, parse_key_ring, single_key_ring

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

# OWASP's Password Storage Cheat Sheet lists equivalent argon2id settings (memory, iterations):
# 46 MiB x 1, 19 MiB x 2, 12 MiB x 3, 9 MiB x 4, 7 MiB x 5. A setting must reach one of them.
OWASP_ARGON2ID_MINIMUMS: Final = ((47_104, 1), (19_456, 2), (12_288, 3), (9_216, 4), (7_168, 5))


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
    # One of the two: a single HS256 secret, or a key ring (chatserver/jwtkeys.py) that rotates.
    jwt_secret: SecretStr | None = None
    jwt_keys: SecretStr | None = None
    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=2_592_000, ge=1)
    ws_ping_interval_seconds: float = Field(default=30, gt=0)
    ws_idle_timeout_seconds: float = Field(default=300, gt=0)
    ws_max_connections: int = Field(default=5000, ge=1)
    ws_send_queue_size: int = Field(default=256, ge=1)
    # permessage-deflate (docs/configuration.md, "WebSocket compression"): "off" refuses it,
    # "on" accepts it without context takeover and with small windows (no idle memory per
    # socket; a compressor per message instead).
    ws_compression: Literal["off", "on"] = "off"
    # A socket that takes no frame for this long while history waits to be queued for it is a
    # slow consumer (chatserver/realtime.py, Session.push_wait).
    ws_send_stall_seconds: float = Field(default=10, gt=0)
    # How often a process reads the removal log for memberships its sockets rely on: the bound
    # on how long a removal whose bus event was lost still lets a socket send to and receive
    # from the room (chatserver/realtime.py, Hub.recheck_memberships).
    membership_recheck_seconds: float = Field(default=15, gt=0)
    # Allocations between two young garbage collections (Python's default is 700). Each socket
    # keeps objects alive, so a small threshold promotes short-lived ones into the oldest
    # generation, whose full collections then pause the process for 0.3 s at 4,000 sockets
    # (chatserver/__main__.py, tune_garbage_collector). 0 keeps Python's default.
    gc_young_threshold: int = Field(default=50_000, ge=0)
    max_message_bytes: int = Field(default=16_384, ge=1)
    rate_limit_per_minute: int = Field(default=100, ge=1)
    drain_delay_seconds: float = Field(default=5, ge=0)
    drain_seconds: float = Field(default=30, gt=0)
    drain_batch_size: int = Field(default=200, ge=1)
    log_level: LogLevel = "info"
    # Serve the web client (chatserver/webclient) at /app/ and redirect / to it. Off by default:
    # a deployment that only serves API clients exposes no page.
    web_client: bool = False
    # Abuse limits (issue #11, docs/configuration.md "Abuse limits").
    # Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For is believed;
    # from anyone else the peer address is the client (X-Forwarded-For is ignored).
    trusted_proxies: str = ""
    auth_ip_rate_limit_per_minute: int = Field(default=30, ge=1)
    ws_ip_opens_per_minute: int = Field(default=120, ge=1)
    ws_auth_timeout_seconds: float = Field(default=10, gt=0)
    # Comma-separated Origins a browser socket may come from (`https://chat.example.com`);
    # `*` accepts any. Sockets without an Origin (not a browser) are always accepted.
    ws_allowed_origins: str = "*"
    # A socket is told this long before its access token expires (docs/protocol.md).
    ws_token_warning_seconds: float = Field(default=60, gt=0)
    ws_max_unauthenticated: int = Field(default=500, ge=1)
    # argon2id cost; the defaults are RFC 9106's second recommendation (64 MiB, 3 passes, 4 lanes).
    argon2_memory_kib: int = Field(default=65_536, ge=7_168)
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_parallelism: int = Field(default=4, ge=1, le=64)
    # Hashes run at once: 0 derives it from the memory limit (a quarter of it for hashing).
    argon2_max_concurrent: int = Field(default=0, ge=0)
    # Requests that may wait for a hash slot; more get 503 try_again at once.
    argon2_max_waiting: int = Field(default=32, ge=0)
    # The process's memory limit in bytes; 0 reads it from the cgroup (the pod's limit).
    memory_limit_bytes: int = Field(default=0, ge=0)
    pod_name: str = Field(default_factory=socket.gethostname)

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"HYPERSEND_JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters"
            )
        return value

    @field_validator("jwt_keys")
    @classmethod
    def _jwt_keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                jwt_key_ring(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"HYPERSEND_JWT_KEYS: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_jwt_source(self) -> Settings:
        if (self.jwt_secret is None) == (self.jwt_keys is None):
            raise ValueError(
                "set exactly one of HYPERSEND_JWT_SECRET (one key) and HYPERSEND_JWT_KEYS "
                "(a key ring)"
            )
        return self

    def key_ring(self) -> KeyRing:
        """The keys that sign and verify access tokens (parsed once per value)."""
        if self.jwt_keys is not None:
            return jwt_key_ring(self.jwt_keys.get_secret_value())
        assert self.jwt_secret is not None  # _one_jwt_source
        return _single_key_ring(self.jwt_secret.get_secret_value())

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_parse(cls, value: str) -> str:
        trusted_networks(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("ws_allowed_origins")
    @classmethod
    def _origins_parse(cls, value: str) -> str:
        allowed_origins(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("argon2_time_cost")
    @classmethod
    def _argon2_owasp(cls, value: int, info: ValidationInfo) -> int:
        memory = info.data.get("argon2_memory_kib")
        if isinstance(memory, int) and not any(
            memory >= m and value >= t for m, t in OWASP_ARGON2ID_MINIMUMS
        ):
            raise ValueError(
                f"argon2id with {memory} KiB and {value} passes is below OWASP's minimums "
                "(46 MiB x 1, 19 MiB x 2, 12 MiB x 3, 9 MiB x 4 or 7 MiB x 5)"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


@functools.cache
def jwt_key_ring(text: str) -> KeyRing:
    return parse_key_ring(text)


@functools.cache
def _single_key_ring(secret: str) -> KeyRing:
    return single_key_ring(secret)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def trusted_networks(value: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> the networks; ValueError names an entry that is neither."""
    networks: list[Network] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network") from exc
    return tuple(networks)


@functools.cache
def allowed_origins(value: str) -> frozenset[str] | None:
    """``"https://a.example, http://localhost:3000"`` -> the origins, None for ``*`` (any)."""
    origins: set[str] = set()
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry == "*":
            return None
        scheme, sep, host = entry.partition("://")
        if (
            not sep
            or scheme.lower() not in ("http", "https")
            or not host
            or "/" in host.rstrip("/")
        ):
            raise ValueError(f"{entry!r} is not an origin (scheme://host[:port]) or *")
        origins.add(f"{scheme.lower()}://{host.lower()}")
    return frozenset(origins)
