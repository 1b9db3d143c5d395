"""chatserver.lean: the light Event and Queue stand-ins every socket holds."""

from __future__ import annotations

import asyncio

import pytest

from chatserver.lean import Flag, LeanQueue

pytestmark = pytest.mark.unit


async def test_flag_wakes_every_waiter_and_stays_set_until_cleared() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    await asyncio.wait_for(flag.wait(), 1)  # set: returns at once
    flag.clear()
    late = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()  # a cancelled waiter leaves nothing behind
    with pytest.raises(asyncio.CancelledError):
        await late
    flag.set()
    assert flag.is_set()


async def test_lean_queue_is_fifo_and_wakes_its_consumer() -> None:
    queue: LeanQueue[int] = LeanQueue()
    assert queue.empty()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await asyncio.wait_for(getter, 1) == 1
    assert queue.qsize() == 1
    assert await queue.get() == 2
    assert queue.empty()
    # A consumer cancelled while waiting does not lose the next item.
    cancelled = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    queue.put_nowait(3)
    assert await queue.get() == 3
