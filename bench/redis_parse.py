"""redis-py's cost per pub/sub message, with the reply parser this environment gives it.

Starts Redis on loopback, subscribes one connection to a channel and publishes ``--messages``
chat-sized envelopes to it from another (pipelines of 1,000), all in this process, and prints
the process CPU per message received (the publisher's replies included) and the parser used:
hiredis when it is installed (pyproject.toml pins it), else redis-py's pure-Python one. To
compare, run it once more after ``.venv/bin/pip uninstall hiredis`` (reinstall it after).

    .venv/bin/python bench/redis_parse.py --messages 100000

Bounded by its message count; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))

import redis.asyncio as aioredis  # noqa: E402
from hypersend_devenv.datastores import RedisServer  # noqa: E402
from redis.asyncio.connection import DefaultParser  # noqa: E402

CHANNEL = "hypersend:room:bench"
# The shape of a message event's envelope (chatserver/bus.py, ``envelope``), 100-byte text.
PAYLOAD = (
    '{"ts":1733190000.123,"event":{"type":"message","room_id":"r123456","seq":42,'
    '"id":"r123456:42","sender_id":"u1234","client_id":"c-99","text":"' + "x" * 100 + '",'
    '"created_at":"2026-12-03T03:00:00Z"}}'
)
PIPELINE = 1000


async def measure(url: str, messages: int) -> float:
    """Process CPU seconds to receive ``messages`` (and publish them)."""
    subscriber = aioredis.from_url(url, protocol=3)
    publisher = aioredis.from_url(url, protocol=3)
    pubsub = subscriber.pubsub()
    try:
        await pubsub.subscribe(CHANNEL)
        while await pubsub.get_message(timeout=5) is None:
            pass  # the subscribe confirmation

        async def publish() -> None:
            for start in range(0, messages, PIPELINE):
                pipe = publisher.pipeline(transaction=False)
                for _ in range(min(PIPELINE, messages - start)):
                    pipe.publish(CHANNEL, PAYLOAD)
                await pipe.execute()

        started = time.process_time()
        publishing = asyncio.create_task(publish())
        received = 0
        while received < messages:
            message = await pubsub.get_message(timeout=30)
            if message is None:
                raise TimeoutError(f"no message for 30 s after {received}")
            if message.get("type") in ("message", b"message"):
                received += 1
        await publishing
        return time.process_time() - started
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await subscriber.aclose()
        await publisher.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with RedisServer() as redis:
        cpu = asyncio.run(measure(redis.url, args.messages))
    print(
        f"{DefaultParser.__name__}: {args.messages} pub/sub messages, "
        f"{cpu / args.messages * 1e6:.1f} µs of process CPU per message"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
