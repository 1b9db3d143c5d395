"""Many sockets' Redis commands against a real Redis and a small command pool (issue #16).

At 19,500 sockets the server's 64-connection command pool ran dry: every command took a pool
connection for its whole round trip, the event loop was seconds late, and "No connection
available" after the pool's wait put the process into degraded mode: rate limits decided per
process, publishes skipped (members got messages only through gap fill), presence refused.
The same thing happens at a scale that runs in seconds when the pool is tiny and its wait short:
thousands of concurrent commands against 2 connections and a 50 ms wait. The bus must pipeline
them instead: every command answered by Redis, never degraded, few round trips.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from chatserver import metrics
from chatserver.bus import Bus, Delivery

pytestmark = pytest.mark.integration

SOCKETS = 3000


class BusSettings:
    def __init__(self, url: str, prefix: str) -> None:
        self.redis_url = SecretStr(url)
        self.redis_prefix = prefix
        self.rate_limit_per_minute = 1000


async def _noop() -> None:
    return None


def _value(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


def _commands_sent() -> float:
    return sum(
        sample.value
        for family in metrics.REDIS_COMMANDS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def test_thousands_of_concurrent_commands_never_run_a_tiny_pool_dry(
    redis_url: str, redis_prefix: str
) -> None:
    bus = await Bus.connect(
        BusSettings(redis_url, redis_prefix), pool_size=2, pool_wait_seconds=0.05
    )
    listener = await Bus.connect(BusSettings(redis_url, redis_prefix))
    got: list[Delivery] = []
    all_arrived = asyncio.Event()

    def on_delivery(delivery: Delivery) -> None:
        got.append(delivery)
        if len(got) >= SOCKETS:
            all_arrived.set()

    await listener.start(on_delivery, _noop)
    rooms = [f"r{i}" for i in range(50)]
    fallbacks = _value(metrics.RATE_LIMIT_FALLBACKS)
    commands, trips = _commands_sent(), _value(metrics.REDIS_ROUND_TRIPS)
    degraded: list[str] = []
    try:
        await listener.subscribe("room", rooms)

        async def socket_connects_and_sends(i: int) -> tuple[bool, bool, bool]:
            # What one socket asks of Redis: its open's rate count, presence, a send's rate
            # count and the message's publish.
            opened = await bus.check_rate(f"ip:ws:{i}")
            online = await bus.presence_connect(f"u{i}", f"pod:{i}")
            allowed = await bus.check_rate(f"u{i}")
            published = await bus.publish_room(rooms[i % len(rooms)], {"type": "m"}, seq=i + 1)
            if not bus.commands_ok:
                degraded.append(f"socket {i}")
            return opened.allowed and allowed.allowed, online, published

        outcomes = await asyncio.gather(*(socket_connects_and_sends(i) for i in range(SOCKETS)))
        assert degraded == []
        assert bus.commands_ok
        assert _value(metrics.RATE_LIMIT_FALLBACKS) == fallbacks  # every count was Redis's
        assert all(allowed for allowed, _, _ in outcomes)
        assert all(online for _, online, _ in outcomes)
        assert all(published for _, _, published in outcomes)
        async with asyncio.timeout(20):
            await all_arrived.wait()
        assert len(got) == SOCKETS

        # Presence of all of them goes in a few round trips too (a drain).
        offline = await bus.presence_disconnect_many((f"u{i}", f"pod:{i}") for i in range(SOCKETS))
        assert offline == [True] * SOCKETS
        last = f"u{SOCKETS - 1}"
        assert await bus.online(["u0", last]) == {"u0": False, last: False}

        # Counted on /metrics: each command, and far fewer round trips than commands.
        sent = _commands_sent() - commands
        round_trips = _value(metrics.REDIS_ROUND_TRIPS) - trips
        assert sent >= 5 * SOCKETS
        assert round_trips < sent / 20
    finally:
        await listener.close()
        await bus.close()


async def test_scripts_are_loaded_again_after_redis_forgot_them(
    redis_url: str, redis_prefix: str
) -> None:
    """EVALSHA of a script Redis does not know (a restarted Redis) falls back to EVAL."""
    bus = await Bus.connect(BusSettings(redis_url, redis_prefix))
    try:
        assert (await bus.check_rate("alice")).allowed
        await bus._client.script_flush()
        assert (await bus.check_rate("alice")).allowed
        replies = await bus.presence_disconnect_many([("bob", "c1"), ("bob", "c2")])
        assert replies == [False, False]
        await bus._client.script_flush()
        assert await bus.presence_connect("bob", "c1") is True
        assert bus.commands_ok
    finally:
        await bus.close()


async def test_a_connected_bus_runs_its_scripts_without_a_noscript(
    redis_url: str, redis_prefix: str
) -> None:
    """The scripts are loaded on connect: the first burst of EVALSHAs needs no EVAL again."""
    flusher = await Bus.connect(BusSettings(redis_url, redis_prefix))
    try:
        await flusher._client.script_flush()
    finally:
        await flusher.close()
    evals = metrics.REDIS_COMMANDS.labels("eval")
    before = _value(evals)
    bus = await Bus.connect(BusSettings(redis_url, redis_prefix))
    try:
        decisions = await asyncio.gather(*(bus.check_rate(f"user{i}") for i in range(50)))
        assert all(decision.allowed for decision in decisions)
        assert await bus.presence_connect("bob", "c1") is True
        assert _value(evals) == before
    finally:
        await bus.close()
