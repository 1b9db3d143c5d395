"""The fault matrix: the zero-loss checker (``bench/zero_loss.py``) runs under one fault at a time.

Two chat server processes, 3 rooms of 3 members spread over both, every member sending about 20
messages per second and retrying until acknowledged. Each case injects one fault under that
traffic, waits until traffic flows again after it, and then proves that every acknowledged message
reached every member of its room exactly once and in seq order, and that no ``client_id`` was
stored twice. The report's figures are printed (``pytest -s`` shows them).

Each case is bounded (a timeout of its own; every wait has a deadline) and stops by itself. The
Redis and MongoDB-wire faults run on servers of their own, so no other test sees them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Final

import httpx
import pytest
from hypersend_devenv.datastores import FerretDBServer, RedisServer, free_port

from bench.zero_loss import Report, ZeroLossChecker
from tests.fixtures.chat import ChatServerFactory, ChatServerProcess
from tests.integration.chatserver.realtime_client import metric

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

# Settings of the servers under test: no rate limit in the way of the checker's traffic.
SERVER_SETTINGS: Final = {"rate_limit_per_minute": 1_000_000}
# Acknowledged messages that show traffic flows (before, during and after a fault).
PROGRESS: Final = 20
# How long the Redis freeze lasts (the fault's length, from the matrix).
REDIS_FREEZE_SECONDS: Final = 10.0
WAIT: Final = 60.0

Condition = Callable[[], Awaitable[bool]]


def _pid(process: ChatServerProcess | RedisServer) -> int:
    proc = process.process
    assert proc is not None
    return proc.pid


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block (SIGCONT even when the block fails)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _until(condition: Condition, what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within}s: {what}")
        await asyncio.sleep(0.1)


async def _progress(checker: ZeroLossChecker, within: float = WAIT) -> None:
    """Wait until PROGRESS more messages are acknowledged."""
    await checker.wait_acked(checker.acked_count() + PROGRESS, within)


async def _readiness(server: ChatServerProcess) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        try:
            response = await http.get(f"{server.url}/readyz")
        except httpx.TransportError:
            return "unreachable"
    return str(response.json()["status"])


@asynccontextmanager
async def _checker(servers: list[ChatServerProcess]) -> AsyncIterator[ZeroLossChecker]:
    checker = ZeroLossChecker([s.url for s in servers], rooms=3, members=3, interval=0.05)
    try:
        await checker.setup()
        await checker.start()
        await _progress(checker)
        yield checker
    finally:
        await checker.close()


async def _finish(case: str, checker: ZeroLossChecker) -> Report:
    report = await checker.finish(settle=30)
    print(f"\n[fault-matrix] {case}: {report.format()}")
    assert report.ok, report.problems()
    return report


async def test_kill_9_of_a_chat_process(chat_server_factory: ChatServerFactory) -> None:
    a, b = chat_server_factory.start_many(2, **SERVER_SETTINGS)
    async with _checker([a, b]) as checker:
        a.kill()
        await _progress(checker)
        report = await _finish("kill -9 chat", checker)
    assert report.reconnects >= 4  # A's members (half of them) moved to B


async def test_sigstop_of_a_chat_process_longer_than_the_ping_timeout(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2, **SERVER_SETTINGS)
    async with _checker([a, b]) as checker:
        with _stopped(_pid(a)):
            # A's members find it dead only by their ping timeout (its TCP connections stay
            # open), then move to B; the stop lasts until they all have, and traffic goes on.
            await _until(_all_moved_off(checker, a), "every member live on B while A is stopped")
            await _progress(checker)
        await _progress(checker)
        report = await _finish("SIGSTOP chat", checker)
    assert report.reconnects >= 4


def _all_moved_off(checker: ZeroLossChecker, server: ChatServerProcess) -> Condition:
    async def check() -> bool:
        return all(m.live and m.url != server.url for m in checker.members)

    return check


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own on a fixed port (a restart keeps the servers' URL)."""
    server = RedisServer(port=free_port())
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def _factory(redis_url: str, mongo_url: str, mongo_db: str) -> ChatServerFactory:
    return ChatServerFactory(redis_url, mongo_url, mongo_db)


async def test_redis_restart(own_redis: RedisServer, mongo_url: str, mongo_db_name: str) -> None:
    factory = _factory(own_redis.url, mongo_url, mongo_db_name)
    try:
        a, b = factory.start_many(2, **SERVER_SETTINGS)
        async with _checker([a, b]) as checker:
            own_redis.stop()
            for server in (a, b):
                await _until(_status(server, "degraded"), f"{server.name} degraded")
            await _progress(checker)  # sends are stored and acknowledged without Redis
            own_redis.start()
            for server in (a, b):
                await _until(_resynced(server), f"{server.name} resynced")
            await _progress(checker)
            report = await _finish("redis restart", checker)
        # Degrade, don't disconnect: no socket was closed for it.
        assert report.reconnects == 0, report.closes
    finally:
        factory.close()


async def test_redis_frozen_for_10_seconds(
    own_redis: RedisServer, mongo_url: str, mongo_db_name: str
) -> None:
    factory = _factory(own_redis.url, mongo_url, mongo_db_name)
    try:
        a, b = factory.start_many(2, **SERVER_SETTINGS)
        async with _checker([a, b]) as checker:
            with _stopped(_pid(own_redis)):
                frozen_at = time.monotonic()
                for server in (a, b):
                    await _until(_status(server, "degraded"), f"{server.name} finds Redis dead")
                await _progress(checker)  # still acknowledged while Redis is frozen
                # The fault's length (not a synchronisation): keep Redis frozen for 10 s in all.
                await asyncio.sleep(max(0.0, REDIS_FREEZE_SECONDS - (time.monotonic() - frozen_at)))
            for server in (a, b):
                await _until(_resynced(server), f"{server.name} resynced")
            await _progress(checker)
            report = await _finish("redis frozen 10s", checker)
        assert report.reconnects == 0, report.closes
    finally:
        factory.close()


async def test_mongodb_wire_server_restart(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    mongo = FerretDBServer(state_dir=tmp_path / "ferretdb", port=free_port())
    mongo.start()
    factory = ChatServerFactory(redis_url, mongo.url, "faultmatrix", redis_prefix)
    try:
        a, b = factory.start_many(2, **SERVER_SETTINGS)
        async with _checker([a, b]) as checker:
            mongo.stop()
            for server in (a, b):
                await _until(_status(server, "not ready"), f"{server.name} sees MongoDB gone")
            mongo.start()
            await _progress(checker)
            await _finish("mongodb-wire restart", checker)
    finally:
        factory.close()
        mongo.stop()


def _status(server: ChatServerProcess, status: str) -> Condition:
    async def check() -> bool:
        return await _readiness(server) == status

    return check


def _resynced(server: ChatServerProcess) -> Condition:
    async def check() -> bool:
        return (
            await metric(server.url, "hypersend_pubsub_resyncs_total") >= 1
            and await _readiness(server) == "ready"
        )

    return check
