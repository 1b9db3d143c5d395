"""What refreshing presence costs a chat server process, and how long it holds the event loop.

Starts Redis on loopback and, in this process, refreshes ``--connections`` presence entries
through the chat server's own bus (``Bus.presence_refresh``: one script call per connection,
pipelined a hundred at a time) at once, then again as the server's ticker does it, a thirtieth
per second (each socket on its own schedule, ``Hub._tick``). Each way runs twice: once for its
CPU, once beside a 1 ms timer that measures how late the event loop runs it. Prints the CPU per
connection and the longest stall of each way.

    .venv/bin/python bench/presence_refresh.py --connections 19500

Bounded by its connection count (each spread pass takes ``--seconds``); stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "tools"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from hypersend_devenv.datastores import RedisServer  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from chatserver.bus import Bus  # noqa: E402

TIMER_SECONDS = 0.001


class BusSettings:
    def __init__(self, url: str) -> None:
        self.redis_url = SecretStr(url)
        self.redis_prefix = "bench:"
        self.rate_limit_per_minute = 100


async def cpu_of(work: Callable[[], Awaitable[None]]) -> float:
    started = time.process_time()
    await work()
    return time.process_time() - started


async def longest_stall(work: Callable[[], Awaitable[None]]) -> float:
    """The longest delay of a 1 ms timer while ``work`` runs (a pass of its own: the timer's
    wake-ups would count in the work's CPU)."""
    worst = 0.0
    done = False

    async def timer() -> None:
        nonlocal worst
        while not done:
            asked = time.perf_counter()
            await asyncio.sleep(TIMER_SECONDS)
            worst = max(worst, time.perf_counter() - asked - TIMER_SECONDS)

    ticking = asyncio.create_task(timer())
    await asyncio.sleep(0.05)
    try:
        await work()
    finally:
        done = True
        await ticking
    return worst


async def measure(url: str, connections: int, seconds: int) -> None:
    bus = await Bus.connect(BusSettings(url))
    pairs = [(f"user{i:06d}", f"pod-0:{i:016x}") for i in range(connections)]
    try:
        await bus.presence_refresh(pairs[:100])  # scripts loaded, connections open

        async def at_once() -> None:
            await bus.presence_refresh(pairs)

        async def spread() -> None:
            share = -(-connections // seconds)
            for start in range(0, connections, share):
                tick = time.monotonic()
                await bus.presence_refresh(pairs[start : start + share])
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

        for name, work in (("at once", at_once), (f"over {seconds} s", spread)):
            cpu = await cpu_of(work)
            worst = await longest_stall(work)
            print(
                f"{connections} presence refreshes {name}: {cpu / connections * 1e6:.1f} µs of "
                f"process CPU per connection ({cpu * 1000:.0f} ms in all), longest event-loop "
                f"stall {worst * 1000:.1f} ms",
                flush=True,
            )
    finally:
        await bus.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=19_500)
    parser.add_argument("--seconds", type=int, default=30, help="the spread pass's length")
    args = parser.parse_args()
    with RedisServer() as redis:
        asyncio.run(measure(redis.url, args.connections, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
