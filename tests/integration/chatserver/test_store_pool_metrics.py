"""The MongoDB pool gauge behind the pool alert, fed by PyMongo's real pool events on FerretDB:
a connection counts as checked out exactly while an operation runs on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from chatserver.store import PoolMetrics, pool_address

pytestmark = pytest.mark.integration

GAUGE = "hypersend_mongo_pool_checked_out_connections"


def checked_out(address: str) -> float:
    value = REGISTRY.get_sample_value(GAUGE, {"address": address})
    return 0.0 if value is None else value


class SeenAtStart(CommandListener):
    """Reads the gauge when a command starts, i.e. while its connection is checked out."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "ping":
            self.seen.append(checked_out(pool_address(event.connection_id)))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


async def test_checked_out_gauge_counts_connections_in_use(mongo_url: str) -> None:
    seen = SeenAtStart()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, maxPoolSize=4, event_listeners=[PoolMetrics(), seen]
    )
    try:
        await client.admin.command("ping")  # the pool exists and has its address now
        (address,) = {pool_address(a) for a in client.nodes}
        before = checked_out(address)
        await client.admin.command("ping")
        assert seen.seen[-1] == before + 1  # in use while the command ran
        assert checked_out(address) == before  # and given back after it
        await asyncio.gather(*(client.admin.command("ping") for _ in range(12)))
        assert max(seen.seen) >= before + 1
        assert max(seen.seen) <= before + 4  # never above maxPoolSize
        assert checked_out(address) == before
    finally:
        await client.close()
