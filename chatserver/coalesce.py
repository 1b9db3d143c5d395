"""Many callers' lookups answered by one read (issue #16: connect rate).

A connect reads the user's rooms and whether the token's login was revoked; with hundreds of
sockets connecting at once, one MongoDB command each was a large part of a connect's CPU.
:class:`Coalescer` queues the keys asked while a read is in flight and sends them together in
the next one. A key is never answered by a read that started before it was asked: a caller that
needs to see a write (a logout before the socket subscribed to its user channel,
chatserver/realtime.py) sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """``get(key)`` through ``read(keys)``, which answers every key it is given."""

    def __init__(
        self, read: Callable[[list[K]], Awaitable[Mapping[K, V]]], max_keys: int, name: str
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._read = read
        self._max_keys = max_keys
        self._name = name
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        fut: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(fut)
        if self._runner is None or self._runner.done():
            # Starts on the loop's next turn: every key asked in this turn joins the first read.
            self._runner = asyncio.create_task(self._run(), name=f"coalesce-{self._name}")
        return await fut

    async def _run(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[: self._max_keys]
            batch = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await self._read(keys)
                answers = [(futs, found[key]) for key, futs in batch.items()]
            except BaseException as exc:
                for futs in batch.values():
                    for fut in futs:
                        if fut.done():
                            continue
                        if isinstance(exc, Exception):
                            fut.set_exception(exc)
                        else:
                            fut.cancel()
                if not isinstance(exc, Exception):
                    raise
                continue
            for futs, value in answers:
                for fut in futs:
                    if not fut.done():  # its caller may have gone (cancelled)
                        fut.set_result(value)
