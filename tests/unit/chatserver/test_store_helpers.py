"""Pure helpers of the store: contention backoff, per-room turns, document keys."""

from __future__ import annotations

import asyncio

from chatserver.store import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    _RoomTurn,
    client_key,
    contention_backoff,
)


def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter() -> None:
    assert contention_backoff(0, draw=1.0) == BACKOFF_BASE_SECONDS
    assert contention_backoff(3, draw=1.0) == BACKOFF_BASE_SECONDS * 8
    assert contention_backoff(40, draw=1.0) == BACKOFF_CAP_SECONDS
    assert contention_backoff(40, draw=0.0) == 0.0
    assert all(0 <= contention_backoff(5) <= BACKOFF_CAP_SECONDS for _ in range(100))


def test_client_key_names_room_sender_and_client_id() -> None:
    assert client_key("r1", "u1", "a:b") == "r1:u1:a:b"


async def test_room_turns_serialise_one_room_and_free_their_lock() -> None:
    locks: dict[str, tuple[asyncio.Lock, int]] = {}
    inside: list[int] = []
    peak = 0

    async def turn(i: int, room: str) -> None:
        nonlocal peak
        async with _RoomTurn(locks, room):
            inside.append(i)
            peak = max(peak, len(inside))
            await asyncio.sleep(0.001)
            inside.remove(i)

    await asyncio.gather(*(turn(i, "a") for i in range(20)))
    assert peak == 1
    assert locks == {}
    started = asyncio.Event()

    async def hold(room: str) -> None:
        async with _RoomTurn(locks, room):
            started.set()
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold("a"))
    await started.wait()
    # Another room is not held up by room "a".
    await asyncio.wait_for(turn(99, "b"), timeout=0.04)
    await holder
    assert locks == {}
