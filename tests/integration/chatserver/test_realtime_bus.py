"""The bus against a real Redis: confirmed subscriptions, fan-out, shared rate limit, presence."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from chatserver.bus import Bus, Delivery

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
        for _ in range(50):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.02)
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
        for _ in range(50):
            if len(got) >= 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert [d.event["type"] for d in got[3:]] == ["still"]
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
