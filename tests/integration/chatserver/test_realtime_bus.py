"""The bus against a real Redis: confirmed subscriptions, fan-out, shared rate limit, presence,
and degraded mode when Redis is frozen or restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis.asyncio as aioredis
from hypersend_devenv.datastores import RedisServer, free_port
from prometheus_client import REGISTRY
from pydantic import SecretStr

from chatserver.bus import (
    DEAD_CONNECTION_BOUND_SECONDS,
    PRESENCE_TTL_MS,
    Bus,
    BusUnavailable,
    Delivery,
)
from tests.integration.chatserver.realtime_client import until_true

pytestmark = pytest.mark.integration


class BusSettings:
    def __init__(self, url: str, prefix: str, limit: int = 100) -> None:
        self.redis_url = SecretStr(url)
        self.redis_prefix = prefix
        self.rate_limit_per_minute = limit


async def _noop() -> None:
    return None


async def test_subscribe_returns_once_redis_delivers(redis_url: str, redis_prefix: str) -> None:
    publisher = await Bus.connect(BusSettings(redis_url, redis_prefix))
    subscriber = await Bus.connect(BusSettings(redis_url, redis_prefix))
    got: list[Delivery] = []
    await subscriber.start(got.append, _noop)
    try:
        await subscriber.subscribe("room", ["r1", "r2"])
        await subscriber.subscribe("user", ["u1"])
        # Published right after subscribe() returned: must arrive (no warm-up sleep).
        await publisher.publish_room("r1", {"type": "a"})
        await publisher.publish_rooms(["r2", "r3"], {"type": "b"})
        await publisher.publish_user("u1", {"type": "c"})
        await until_true(lambda: len(got) >= 3, "the three publishes delivered", 10)
        assert [(d.kind, d.target, d.event["type"]) for d in got] == [
            ("room", "r1", "a"),
            ("room", "r2", "b"),
            ("user", "u1", "c"),
        ]
        assert all(d.published_at > 0 for d in got)
        assert subscriber.subscribed_channels == 3

        await subscriber.unsubscribe("room", ["r1"])
        await publisher.publish_room("r1", {"type": "gone"})
        await publisher.publish_room("r2", {"type": "still"})
        # Redis delivers one connection's messages in publish order: once "still" is here, a
        # "gone" that the unsubscribed channel still let through would have come before it.
        await until_true(
            lambda: any(d.event["type"] == "still" for d in got), "the later publish", 10
        )
        assert [d.event["type"] for d in got[3:]] == ["still"]
    finally:
        await publisher.close()
        await subscriber.close()


def _pubsub_commands(command: str) -> float:
    sample = REGISTRY.get_sample_value("hypersend_redis_commands_total", {"command": command})
    return sample or 0.0


async def test_subscribes_asked_together_are_one_command_in_call_order(
    redis_url: str, redis_prefix: str
) -> None:
    publisher = await Bus.connect(BusSettings(redis_url, redis_prefix))
    subscriber = await Bus.connect(BusSettings(redis_url, redis_prefix))
    rooms = [f"w{i}" for i in range(40)]
    got: list[Delivery] = []
    all_arrived = asyncio.Event()

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        if len(got) >= len(rooms):
            all_arrived.set()

    await subscriber.start(on_delivery, _noop)
    try:
        await subscriber.subscribe("room", ["left"])
        subscribes, unsubscribes = _pubsub_commands("subscribe"), _pubsub_commands("unsubscribe")
        # A wave of connects and a socket leaving, in one turn of the loop.
        await asyncio.gather(
            *(subscriber.subscribe("room", [room]) for room in rooms),
            subscriber.unsubscribe("room", ["left"]),
        )
        assert _pubsub_commands("subscribe") - subscribes == 1
        assert _pubsub_commands("unsubscribe") - unsubscribes == 1
        # The last member of w0 leaves and a new one arrives in the same turn: the SUBSCRIBE
        # must follow the UNSUBSCRIBE on the wire, or w0 ends up not subscribed.
        await asyncio.gather(
            subscriber.unsubscribe("room", ["w0"]), subscriber.subscribe("room", ["w0"])
        )
        # One publisher connection: Redis delivers in publish order, so "left" (published
        # first) would arrive before the rest if it were still subscribed.
        await publisher.publish_room("left", {"type": "left"})
        for room in rooms:
            await publisher.publish_room(room, {"type": room})
        async with asyncio.timeout(10):
            await all_arrived.wait()
        assert [d.event["type"] for d in got] == rooms
        assert subscriber.subscribed_channels == len(rooms)
    finally:
        await publisher.close()
        await subscriber.close()


async def test_rate_limit_is_shared_between_bus_instances(
    redis_url: str, redis_prefix: str
) -> None:
    one = await Bus.connect(BusSettings(redis_url, redis_prefix, limit=10))
    two = await Bus.connect(BusSettings(redis_url, redis_prefix, limit=10))
    try:
        decisions = await asyncio.gather(
            *(bus.check_rate("alice") for _ in range(8) for bus in (one, two))
        )
        allowed = [d for d in decisions if d.allowed]
        refused = [d for d in decisions if not d.allowed]
        assert len(allowed) == 10
        assert len(refused) == 6
        assert all(0 < d.retry_after <= 60 for d in refused)
        # Another user has their own budget.
        assert (await one.check_rate("bob")).allowed
    finally:
        await one.close()
        await two.close()


async def test_presence_counts_connections_across_processes(
    redis_url: str, redis_prefix: str
) -> None:
    one = await Bus.connect(BusSettings(redis_url, redis_prefix))
    two = await Bus.connect(BusSettings(redis_url, redis_prefix))
    try:
        assert await one.presence_connect("u", "pod1:a") is True
        assert await two.presence_connect("u", "pod2:b") is False
        assert await one.online(["u", "nobody"]) == {"u": True, "nobody": False}
        await one.presence_refresh([("u", "pod1:a")])
        assert await one.presence_disconnect("u", "pod1:a") is False
        assert await two.presence_disconnect("u", "pod2:b") is True
        assert await two.presence_disconnect("u", "pod2:b") is False
        assert await one.online(["u"]) == {"u": False}
    finally:
        await one.close()
        await two.close()


async def test_presence_refresh_extends_entries_and_restores_lost_ones(
    redis_url: str, redis_prefix: str
) -> None:
    """A refresh writes each connection's expiry anew, by the Redis clock, and re-adds an entry
    Redis lost (a restart without persistence) with its key's expiry."""
    bus = await Bus.connect(BusSettings(redis_url, redis_prefix))
    raw = aioredis.Redis.from_url(redis_url)
    kept, lost = f"{redis_prefix}presence:kept", f"{redis_prefix}presence:lost"
    try:
        await bus.presence_connect("kept", "pod1:a")
        await bus.presence_connect("lost", "pod1:b")
        await raw.zadd(kept, {"pod1:a": 1})  # an expiry long past
        await raw.delete(lost)
        assert await bus.online(["kept", "lost"]) == {"kept": False, "lost": False}

        await bus.presence_refresh([("kept", "pod1:a"), ("lost", "pod1:b")])

        seconds, micros = await raw.time()
        now_ms = seconds * 1000 + micros // 1000
        for key, member in ((kept, "pod1:a"), (lost, "pod1:b")):
            score = await raw.zscore(key, member)
            assert score is not None
            assert now_ms < score <= now_ms + PRESENCE_TTL_MS
            assert 0 < await raw.pttl(key) <= PRESENCE_TTL_MS
        assert await bus.online(["kept", "lost"]) == {"kept": True, "lost": True}
    finally:
        await raw.aclose()
        await bus.close()


async def test_a_frozen_redis_is_found_degrades_the_bus_and_is_replaced_after_it_resumes(
    redis_prefix: str,
) -> None:
    """SIGSTOP keeps every TCP connection open (the kernel still answers keepalive probes):
    only the application health check can see it. Then the bus degrades instead of failing:
    the per-process rate limit decides, publishes are skipped; after SIGCONT pub/sub is
    replaced, the resync runs and the newest skipped message goes out."""
    with RedisServer() as server:
        assert server.process is not None
        pid = server.process.pid
        bus = await Bus.connect(BusSettings(server.url, redis_prefix, limit=2))
        got: list[Delivery] = []
        resyncs: list[float] = []

        async def on_resync() -> None:
            resyncs.append(time.monotonic())

        await bus.start(got.append, on_resync)
        try:
            await bus.subscribe("room", ["r"])
            assert bus.healthy
            os.kill(pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                # Generous against a loaded machine; without the health check it never happens.
                await until_true(
                    lambda: not bus.commands_ok and not bus.pubsub_ok,
                    what="the frozen Redis is declared dead",
                    wait=10 * DEAD_CONNECTION_BOUND_SECONDS,
                )
                detected_after = time.monotonic() - frozen_at
                # Degraded: decided by this process at once, never an exception or a wait.
                decisions = [await bus.check_rate("alice") for _ in range(3)]
                assert [d.allowed for d in decisions] == [True, True, False]
                assert decisions[2].retry_after > 0
                event = {"type": "message", "room_id": "r", "seq": 7}
                assert await bus.publish_room("r", {**event, "seq": 6}, seq=6) is False
                assert await bus.publish_room("r", event, seq=7) is False
                assert await bus.publish_rooms(["r"], {"type": "presence"}) is False
                with pytest.raises(BusUnavailable):
                    await bus.presence_connect("alice", "c1")
                assert not resyncs
            finally:
                os.kill(pid, signal.SIGCONT)
            await until_true(lambda: bus.healthy and bool(resyncs), "resync after SIGCONT", 30)
            # Only the newest skipped message of the room is published (receivers fill before).
            await until_true(
                lambda: any(d.event.get("seq") == 7 for d in got), "the skipped message", 10
            )
            assert not [d for d in got if d.event.get("seq") == 6]
            assert (await bus.check_rate("bob")).allowed
            print(f"frozen Redis detected after {detected_after:.1f}s")
        finally:
            await bus.close()


async def test_a_restarted_redis_brings_pubsub_back_with_a_resync(redis_prefix: str) -> None:
    with RedisServer(port=free_port()) as server:
        subscriber = await Bus.connect(BusSettings(server.url, redis_prefix))
        resyncs: list[float] = []
        got: list[Delivery] = []

        async def on_resync() -> None:
            resyncs.append(time.monotonic())

        await subscriber.start(got.append, on_resync)
        try:
            await subscriber.subscribe("room", ["r"])
            server.stop()
            await until_true(lambda: not subscriber.pubsub_ok, "pub/sub loss seen", 20)
            # Subscribing while Redis is away returns at once (the resync will cover it).
            await subscriber.subscribe("room", ["later"])
            server.start()
            await until_true(lambda: subscriber.healthy and bool(resyncs), "resync", 30)
            publisher = await Bus.connect(BusSettings(server.url, redis_prefix))
            try:
                # The rate script is loaded again into the fresh Redis (NOSCRIPT handled).
                assert (await publisher.check_rate("u")).allowed
                assert await publisher.publish_room("later", {"type": "x"})
                await until_true(lambda: bool(got), "delivery on a channel added while down", 10)
            finally:
                await publisher.close()
        finally:
            await subscriber.close()
