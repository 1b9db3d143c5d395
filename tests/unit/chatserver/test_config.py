"""The HYPERSEND_* configuration contract (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatserver.config import Settings

pytestmark = pytest.mark.unit

CONTRACT_DEFAULTS = {
    "host": "0.0.0.0",
    "port": 8080,
    "mongo_db": "hypersend",
    "mongo_min_pool": 10,
    "mongo_max_pool": 50,
    "access_token_ttl_seconds": 900,
    "refresh_token_ttl_seconds": 2_592_000,
    "ws_ping_interval_seconds": 30,
    "ws_idle_timeout_seconds": 300,
    "ws_max_connections": 5000,
    "ws_send_queue_size": 256,
    "ws_compression": "off",
    "ws_send_stall_seconds": 10,
    "max_message_bytes": 16_384,
    "rate_limit_per_minute": 100,
    "drain_delay_seconds": 5,
    "drain_seconds": 30,
    "drain_batch_size": 200,
    "log_level": "info",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("HYPERSEND_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERSEND_JWT_SECRET", "k" * 32)
    settings = Settings()
    for name, value in CONTRACT_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert settings.mongo_url.get_secret_value() == "mongodb://localhost:27017"
    assert settings.redis_url.get_secret_value() == "redis://localhost:6379/0"
    assert settings.redis_prefix == "hypersend:"
    assert settings.pod_name


def test_every_setting_reads_its_env_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERSEND_JWT_SECRET", "k" * 32)
    monkeypatch.setenv("HYPERSEND_PORT", "9000")
    monkeypatch.setenv("HYPERSEND_MONGO_URL", "mongodb://db:27017/?tls=true")
    monkeypatch.setenv("HYPERSEND_REDIS_URL", "redis://:pw@cache:6379/1")
    monkeypatch.setenv("HYPERSEND_RATE_LIMIT_PER_MINUTE", "7")
    monkeypatch.setenv("HYPERSEND_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("HYPERSEND_POD_NAME", "chat-0")
    monkeypatch.setenv("HYPERSEND_REDIS_PREFIX", "blue:")
    settings = Settings()
    assert settings.port == 9000
    assert settings.redis_prefix == "blue:"
    assert settings.rate_limit_per_minute == 7
    assert settings.log_level == "debug"
    assert settings.pod_name == "chat-0"
    # URLs may carry credentials: they never show in reprs or logs.
    assert "pw" not in repr(settings)
    assert settings.redis_url.get_secret_value() == "redis://:pw@cache:6379/1"


def test_jwt_secret_is_required_and_long() -> None:
    with pytest.raises(ValidationError, match="HYPERSEND_JWT_SECRET"):
        Settings()
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(jwt_secret="short")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 70000),
        ("max_message_bytes", 0),
        ("log_level", "loud"),
        ("drain_seconds", 0),
        ("ws_compression", "sometimes"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(jwt_secret="k" * 32, **{field: value})  # type: ignore[arg-type]


def test_empty_redis_prefix_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPERSEND_JWT_SECRET", "k" * 32)
    monkeypatch.setenv("HYPERSEND_REDIS_PREFIX", "")
    with pytest.raises(ValidationError, match="redis_prefix"):
        Settings()
