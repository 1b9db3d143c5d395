"""Backend-independent figures on /metrics (issue #16): what a server asks of MongoDB and Redis
per stored message, counted by the server itself (PyMongo command monitoring, the bus)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import connect_user, create_group, register

pytestmark = pytest.mark.integration

_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{command="(?P<command>[^"]*)"\})? (?P<value>\S+)$')


async def _figures(base_url: str) -> dict[tuple[str, str], float]:
    """(metric name, command label or "") -> value, for the three command counters."""
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=20) as http:
        text = (await http.get("/metrics")).text
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] in (
            "hypersend_mongo_commands_total",
            "hypersend_redis_commands_total",
            "hypersend_redis_round_trips_total",
        ):
            found[(match["name"], match["command"] or "")] = float(match["value"])
    return found


def _moved(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


async def test_mongo_and_redis_commands_of_a_send_are_counted(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    sender = await connect_user(server.ws_url, alice)
    receiver = await connect_user(server.ws_url, bob)

    before = await _figures(server.url)
    sends = 5
    for i in range(sends):
        assert (await sender.send_message(room, f"m{i}"))["type"] == "ack"
    for _ in range(sends):
        await receiver.until_type("message")
    moved = _moved(before, await _figures(server.url))

    # MongoDB: each message was inserted, and nothing but real commands is counted.
    assert moved[("hypersend_mongo_commands_total", "insert")] >= sends
    assert all(
        value >= 0 for (name, _), value in moved.items() if name.startswith("hypersend_mongo")
    )
    # Redis: one publish and one rate-limit script per send, each counted.
    assert moved[("hypersend_redis_commands_total", "publish")] >= sends
    assert moved[("hypersend_redis_commands_total", "evalsha")] >= sends
    # Every command travelled in some round trip, and a round trip carries at least one.
    redis_commands = sum(v for (n, _), v in moved.items() if n == "hypersend_redis_commands_total")
    round_trips = moved[("hypersend_redis_round_trips_total", "")]
    assert 1 <= round_trips <= redis_commands
