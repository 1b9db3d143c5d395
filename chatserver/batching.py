"""Coalescing concurrent point reads: many callers' keys answered by one round trip.

A burst of connects (a deploy's reconnect wave) asks MongoDB the same question for hundreds of
keys within a few milliseconds, and each PyMongo operation costs ~0.25 ms of the process's CPU
whatever it carries (`bench/connect_rate.py`). `KeyedReads` hands the keys asked while the
loop was busy to one read instead.

A caller never shares a read that was already sent: its answer must reflect every write
committed before it asked (a logout committed before a socket's check must be seen, see
`Hub._run_session` in chatserver/realtime.py). Callers asking the same key before the read is
sent share it, as the read starts after all of them asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Reads under way at once at most: later keys gather for the next one. More than one, so one
# slow read does not hold up every caller; few, so that under load the batches grow.
MAX_READS_IN_FLIGHT: Final = 4


class KeyedReads(Generic[K]):
    """``await reads.contains(key)``: whether ``key`` is in what ``read(keys)`` returns.

    ``read`` gets up to ``max_keys`` distinct keys and returns those that exist. Keys asked in
    the same turn of the event loop, or while MAX_READS_IN_FLIGHT reads are under way, go out
    together. An error of the read is raised to each of its callers.
    """

    def __init__(
        self,
        read: Callable[[list[K]], Awaitable[Collection[K]]],
        max_keys: int,
        max_in_flight: int = MAX_READS_IN_FLIGHT,
    ) -> None:
        if max_keys < 1 or max_in_flight < 1:
            raise ValueError("max_keys and max_in_flight must be at least 1")
        self._read = read
        self._max_keys = max_keys
        self._max_in_flight = max_in_flight
        self._waiting: dict[K, asyncio.Future[bool]] = {}
        self._reads: set[asyncio.Task[None]] = set()
        self._scheduled = False

    @property
    def in_flight(self) -> int:
        return len(self._reads)

    @property
    def waiting(self) -> int:
        """Keys asked whose read has not been sent yet."""
        return len(self._waiting)

    async def contains(self, key: K) -> bool:
        fut = self._waiting.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._waiting[key] = fut
            self._schedule()
        # Shielded: one caller cancelled (its socket closed) must not fail the others' answer.
        return await asyncio.shield(fut)

    def _schedule(self) -> None:
        if self._scheduled or not self._waiting or len(self._reads) >= self._max_in_flight:
            return
        self._scheduled = True
        # On the next turn: the keys the other callbacks of this turn ask join the same read.
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if not self._waiting or len(self._reads) >= self._max_in_flight:
            return
        batch: dict[K, asyncio.Future[bool]] = {}
        for key in list(self._waiting)[: self._max_keys]:
            batch[key] = self._waiting.pop(key)
        task = asyncio.create_task(self._run(batch), name="keyed-read")
        self._reads.add(task)
        task.add_done_callback(self._finished)
        self._schedule()  # more keys than one read takes

    async def _run(self, batch: dict[K, asyncio.Future[bool]]) -> None:
        try:
            found = await self._read(list(batch))
        except Exception as exc:
            for fut in batch.values():
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: its callers may all be gone
            return
        except BaseException:
            for fut in batch.values():
                fut.cancel()
            raise
        for key, fut in batch.items():
            if not fut.done():
                fut.set_result(key in found)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._reads.discard(task)
        self._schedule()

    async def close(self) -> None:
        """Cancel the reads under way; their callers and those still waiting get CancelledError."""
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        reads = list(self._reads)
        for task in reads:
            task.cancel()
        if reads:
            await asyncio.wait(reads)
