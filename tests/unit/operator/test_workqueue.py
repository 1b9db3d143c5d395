"""The operator's work queue (operator/hypersend_operator/workqueue.py): client-go's semantics."""

from __future__ import annotations

import asyncio

from hypersend_operator import workqueue
from hypersend_operator.workqueue import WorkQueue


async def take_all(queue: WorkQueue[str]) -> list[tuple[str, str]]:
    """Every key waiting now, in order (each held until `done`)."""
    taken = []
    while queue.waiting():
        taken.append(await queue.get())
    return taken


def test_a_key_waits_once_however_often_it_is_added() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for reason in ("create", "child", "child", "requeue"):
            queue.add("a", reason)
        queue.add("b", "child")
        queue.add("a", "resync")
        assert await take_all(queue) == [("a", "create"), ("b", "child")]

    asyncio.run(run())


def test_keys_come_out_first_in_first_out() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        for key in ("c", "a", "b"):
            queue.add(key, "create")
        assert [k for k, _ in await take_all(queue)] == ["c", "a", "b"]

    asyncio.run(run())


def test_a_held_key_is_not_handed_out_again_until_done() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a", "create")
        assert await queue.get() == ("a", "create")
        queue.add("a", "child")
        queue.add("a", "resync")
        queue.add("b", "child")
        # While "a" is held, only "b" can be taken.
        assert await take_all(queue) == [("b", "child")]
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not second.done()
        queue.done("a")
        # Added again (once, with its first reason) when its worker finished.
        assert await asyncio.wait_for(second, 5) == ("a", "child")

    asyncio.run(run())


def test_a_getter_waits_for_the_next_add() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not getter.done()
        queue.add("a", "create")
        assert await asyncio.wait_for(getter, 5) == ("a", "create")

    asyncio.run(run())


def test_a_forgotten_key_is_not_handed_out() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("gone", "create")
        queue.add("kept", "create")
        queue.forget("gone")
        assert queue.waiting() == 1
        assert await queue.get() == ("kept", "create")
        # Forgetting a held key drops its pending repeat, not the worker's pass.
        queue.add("kept", "child")
        queue.forget("kept")
        queue.done("kept")
        assert queue.waiting() == 0
        assert queue.held() == 0
        queue.add("gone", "create")
        assert await queue.get() == ("gone", "create")

    asyncio.run(run())


def test_background_work_waits_for_announced_work() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("checked", "resync", workqueue.BACKGROUND)
        for n in range(3):
            queue.add(f"new-{n}", "create")
        queue.add("under-way", "child", workqueue.ANNOUNCED)
        assert [k for k, _ in await take_all(queue)] == [
            "new-0", "new-1", "new-2", "under-way", "checked",
        ]  # fmt: skip

    asyncio.run(run())


def test_a_waiting_key_added_more_urgently_moves_up_once() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a", "resync", workqueue.BACKGROUND)
        queue.add("b", "resync", workqueue.BACKGROUND)
        queue.add("a", "child", workqueue.ANNOUNCED)
        # Less urgent again: stays where it is.
        queue.add("a", "resync", workqueue.BACKGROUND)
        # The first reason stays (metrics count what first asked for the pass).
        assert await take_all(queue) == [("a", "resync"), ("b", "resync")]
        assert queue.waiting() == 0

    asyncio.run(run())


def test_a_held_key_added_again_keeps_the_most_urgent_priority() -> None:
    async def run() -> None:
        queue: WorkQueue[str] = WorkQueue()
        queue.add("a", "create")
        assert await queue.get() == ("a", "create")
        queue.add("b", "resync", workqueue.BACKGROUND)
        queue.add("a", "resync", workqueue.BACKGROUND)
        queue.add("a", "child", workqueue.ANNOUNCED)
        queue.done("a")
        assert [k for k, _ in await take_all(queue)] == ["a", "b"]

    asyncio.run(run())
