"""Operations endpoints and process lifecycle: /healthz, /readyz, /metrics, OpenAPI, SIGTERM
drain timing, dependency loss, configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import redis
from hypersend_devenv.datastores import FerretDBServer, RedisServer
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.chat import (
    REPO_ROOT,
    ChatServerFactory,
    ChatServerProcess,
    free_port,
    register_user,
)

pytestmark = pytest.mark.integration


def test_health_ready_metrics_openapi(chat_server: ChatServerProcess) -> None:
    assert httpx.get(f"{chat_server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{chat_server.url}/readyz").json() == {
        "status": "ready",
        "redis": {"commands": "ok", "pubsub": "ok"},
    }
    metrics = httpx.get(f"{chat_server.url}/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "hypersend_websocket_connections",
        "hypersend_messages_received_total",
        "hypersend_messages_delivered_total",
        "hypersend_message_delivery_latency_seconds",
        "hypersend_pubsub_lag_seconds",
        "hypersend_store_commit_seconds",
        "hypersend_store_commit_messages",
        "hypersend_slow_consumer_disconnects_total",
        "hypersend_gap_fills_total",
        "hypersend_rate_limited_total",
        "hypersend_event_loop_lag_seconds",
        "hypersend_redis_up",
        "hypersend_pubsub_reconnects_total",
        "hypersend_pubsub_resyncs_total",
        "hypersend_rate_limit_fallbacks_total",
        "hypersend_shed_sockets_total",
        "process_resident_memory_bytes",
    ):
        assert f"# TYPE {name}" in metrics.text, name
    spec = httpx.get(f"{chat_server.url}/openapi.json").json()
    assert "/api/v1/rooms/{room_id}/messages" in spec["paths"]
    assert "/api/v1/auth/refresh" in spec["paths"]


def test_capacity_gauges_the_alerts_compare_with(chat_server_factory: ChatServerFactory) -> None:
    server = chat_server_factory.start(ws_max_connections=7, mongo_max_pool=13)
    register_user(server.url)  # MongoDB work: connections were checked out and back in
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        for s in family.samples
    }
    assert samples[("hypersend_websocket_max_connections", ())] == 7
    assert samples[("hypersend_mongo_pool_max_connections", ())] == 13
    in_use = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "hypersend_mongo_pool_checked_out_connections"
    }
    assert len(in_use) == 1, in_use  # one series per server address (FerretDB: one)
    ((labels, value),) = in_use.items()
    assert dict(labels)["address"].startswith("127.0.0.1:")
    assert value == 0  # nothing in flight between requests


def test_sigterm_fails_readiness_then_exits_within_budget(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(drain_delay_seconds=1.5, drain_seconds=6)
    started = time.monotonic()
    server.terminate()
    # Readiness fails at once (well within the delay) while liveness still answers.
    deadline = started + 1.0
    ready = httpx.get(f"{server.url}/readyz")
    while ready.status_code == 200 and time.monotonic() < deadline:
        ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert ready.json()["reason"] == "draining"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    code = server.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert code == 0, server.log_tail()
    assert 1.5 <= elapsed < 6, elapsed
    logs = server.logs()
    assert "drain started" in logs
    assert "drain finished" in logs


def test_a_lost_redis_leaves_the_pod_ready_and_rate_limited_per_process(
    mongo_url: str, mongo_db_name: str
) -> None:
    """Every pod shares the one Redis: failing readiness for it would empty the Service. The pod
    stays ready (degraded) and the rate limit falls back to a per-process window instead of
    refusing everyone."""
    redis = RedisServer()
    redis.start()
    factory = ChatServerFactory(redis.url, mongo_url, mongo_db_name)
    try:
        server = factory.start(rate_limit_per_minute=5)
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "redis": {"commands": "ok", "pubsub": "ok"}}
        user = register_user(server.url)
        redis.stop()
        degraded = {"status": "degraded", "redis": {"commands": "down", "pubsub": "down"}}
        deadline = time.monotonic() + 30
        while (response := httpx.get(f"{server.url}/readyz", timeout=10)).json() != degraded:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.1)
        assert response.status_code == 200
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        statuses = [
            httpx.get(f"{server.url}/api/v1/users/me", headers=user.headers, timeout=10)
            for _ in range(6)
        ]
        assert [r.status_code for r in statuses] == [200] * 5 + [429]
        assert int(statuses[-1].headers["retry-after"]) >= 1
        assert "hypersend_rate_limit_fallbacks_total 6.0" in httpx.get(f"{server.url}/metrics").text
    finally:
        factory.close()
        redis.stop()


def test_lost_mongodb_gives_503_not_500(redis_url: str) -> None:
    mongo = FerretDBServer()
    mongo.start()
    factory = ChatServerFactory(redis_url, mongo.url, "lostmongo")
    try:
        server = factory.start()
        user = register_user(server.url)
        mongo.stop()
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("mongodb unreachable")
        me = httpx.get(f"{server.url}/api/v1/users/me", headers=user.headers, timeout=30)
        assert me.status_code == 503
        assert me.json()["error"]["code"] == "database_unavailable"
        assert me.headers["cache-control"] == "private, no-store"
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        factory.close()
        mongo.stop()


def test_server_waits_for_a_late_database(redis_url: str) -> None:
    """Started before MongoDB is up (a fresh install), the server retries, then serves."""
    port = free_port()
    server = ChatServerProcess(
        {
            "HYPERSEND_REDIS_URL": redis_url,
            "HYPERSEND_MONGO_URL": f"mongodb://127.0.0.1:{port}/",
            "HYPERSEND_MONGO_DB": "latedb",
            "HYPERSEND_JWT_SECRET": "k" * 40,
        }
    )
    mongo = FerretDBServer(port=port)
    try:
        server.launch()
        # A failed attempt, logged, with the process still up: the pass that would have crashed.
        deadline = time.monotonic() + 30
        while "mongodb not ready, retrying" not in server.logs():
            assert server.returncode is None, server.log_tail()
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        assert server.returncode is None, server.log_tail()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/readyz")
        mongo.start()
        server.wait_ready(timeout=30)
        assert register_user(server.url).id
    finally:
        server.close()
        mongo.stop()


def test_startup_log_has_settings_but_no_secrets(chat_server: ChatServerProcess) -> None:
    logs = chat_server.logs()
    assert '"max_message_bytes": 16384' in logs
    assert chat_server.env["HYPERSEND_JWT_SECRET"] not in logs
    assert chat_server.env["HYPERSEND_MONGO_URL"] not in logs
    assert chat_server.env["HYPERSEND_REDIS_URL"] not in logs


def test_invalid_configuration_exits_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERSEND_")}
    env.update({"HYPERSEND_JWT_SECRET": "too-short", "HYPERSEND_PORT": "not-a-port"})
    result = subprocess.run(
        [sys.executable, "-m", "chatserver"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "HYPERSEND_JWT_SECRET" in result.stderr
    assert "at least 32 characters" in result.stderr
    assert "HYPERSEND_PORT" in result.stderr
    assert "too-short" not in result.stderr  # secrets are never echoed


def test_redis_keys_live_under_the_configured_prefix(
    chat_server: ChatServerProcess, redis_url: str, redis_prefix: str
) -> None:
    assert chat_server.env["HYPERSEND_REDIS_PREFIX"] == redis_prefix
    user = register_user(chat_server.url)
    assert httpx.get(f"{chat_server.url}/api/v1/users/me", headers=user.headers).is_success
    admin = redis.Redis.from_url(redis_url)
    try:
        # The rate-limit counter of that request is stored under the test's prefix only.
        assert admin.exists(f"{redis_prefix}rate:{user.id}") == 1
        assert admin.exists(f"hypersend:rate:{user.id}") == 0
    finally:
        admin.close()
