"""A drain of thousands of sockets fits its budget (issue #16).

Stopping a server with 19,500 idle sockets overran the graceful-shutdown deadline: the hub closed
sockets a batch at a time, awaiting each batch's peers, and every socket then made its own Redis
round trips (presence, unsubscribes) on the way out, so uvicorn cancelled thousands of tasks with
presence announcements still running. Here a few thousand sockets are drained with a tight budget:
the process must exit by itself (status 0: the drain watchdog exits 1 at the deadline), every
socket must get its reconnect hint and close code 1012, no task may be cancelled, and every
socket's presence must be gone from Redis -- in a few Redis round trips, not a few per socket
(Redis counts the reads it processes: a pipeline of a thousand commands is a handful of reads).
"""

from __future__ import annotations

import asyncio
import secrets
import time

import jwt
import pytest
import redis.asyncio as aioredis

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import (
    Account,
    Client,
    connect_user,
    create_group,
    register,
)

pytestmark = pytest.mark.integration

SOCKETS = 3000
USERS = 1000  # three sockets each: presence counts connections, not users
DRAIN_SECONDS = 8.0
CONNECTING_AT_ONCE = 64


def _account(secret: str, user_id: str) -> Account:
    """A token for a user id the store has never seen (no rooms): authenticating thousands of
    sockets needs no password hashing."""
    now = int(time.time())
    claims = {"sub": user_id, "typ": "access", "iat": now - 60, "exp": now + 3600}
    return Account(id=user_id, username=user_id, token=jwt.encode(claims, secret, "HS256"))


async def test_a_drain_of_thousands_of_sockets_closes_every_one_within_the_budget(
    chat_server_factory: ChatServerFactory, redis_url: str
) -> None:
    server = chat_server_factory.start(
        drain_delay_seconds=0.2,
        drain_seconds=DRAIN_SECONDS,
        ws_max_connections=SOCKETS + 10,
        ws_max_unauthenticated=SOCKETS,
    )
    # Two real members of a room among them: one goes offline, the other is told.
    alice, bob = await register(server.url), await register(server.url)
    await create_group(server.url, alice, [bob])
    accounts = [
        _account(chat_server_factory.jwt_secret, f"drain-{secrets.token_hex(4)}-{i}")
        for i in range(USERS)
    ]
    slots = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def connect(account: Account) -> Client:
        async with slots:
            return await connect_user(server.ws_url, account)

    clients = await asyncio.gather(
        *(connect(accounts[i % USERS]) for i in range(SOCKETS - 2)),
        connect(alice),
        connect(bob),
    )
    assert len(clients) == SOCKETS
    presence = aioredis.Redis.from_url(redis_url)
    pattern = f"{chat_server_factory.redis_prefix}presence:*"
    try:

        async def presence_keys() -> int:
            return len([key async for key in presence.scan_iter(match=pattern, count=1000)])

        # Presence is recorded by a task of each socket, just after ready.
        deadline = time.monotonic() + 30
        while await presence_keys() < USERS + 2:
            assert time.monotonic() < deadline, "presence of every user not recorded"
            await asyncio.sleep(0.1)

        async def closed(client: Client) -> tuple[bool, int | None]:
            code, _ = await client.closed(wait=DRAIN_SECONDS + 5)
            hinted = any(f.get("type") == "reconnect" for f in client.frames)
            return hinted, code

        reads = int((await presence.info("stats"))["total_reads_processed"])
        started = time.monotonic()
        server.terminate()
        outcomes = await asyncio.gather(*(closed(c) for c in clients))
        status = server.wait(DRAIN_SECONDS + 5)
        took = time.monotonic() - started

        # Status 0 is the budget kept: the drain watchdog exits 1 at the deadline (no clock here).
        assert status == 0, f"exited {status} after {took:.1f}s:\n{server.log_tail()}"
        assert [code for _, code in outcomes] == [1012] * SOCKETS
        assert all(hinted for hinted, _ in outcomes)
        logs = server.logs()
        assert "timeout graceful shutdown exceeded" not in logs
        assert "did not finish within the drain budget" not in logs
        reads = int((await presence.info("stats"))["total_reads_processed"]) - reads
        assert await presence_keys() == 0
        # The server's own health checks read a few times a second; per-socket round trips
        # would be thousands.
        assert reads < SOCKETS / 10, f"{reads} reads by Redis during the drain"
    finally:
        await presence.aclose()
