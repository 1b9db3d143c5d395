"""Light asyncio primitives for state every socket holds for hours (issue #16, idle memory).

asyncio.Event and asyncio.Queue each allocate a deque (and Queue three of them plus an Event)
whether or not anyone ever waits: ~740 bytes per deque, measured with tracemalloc at 2,000
sockets. These keep a waiter future only while someone waits. Pure asyncio, no I/O.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Flag:
    """asyncio.Event's set / clear / wait without its deque of waiters, which is allocated with
    every Event and costs ~740 bytes even empty: a socket has two of these (issue #16, idle
    socket memory). Waiter futures exist only while someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if self._waiters is not None and fut in self._waiters:
                self._waiters.remove(fut)


class LeanQueue(Generic[T]):
    """An unbounded FIFO for ONE consumer: ``put_nowait``, ``empty`` and ``await get()``, the
    part of asyncio.Queue that uvicorn's WebSocket protocol uses for its receive queue."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> T:
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("LeanQueue has one consumer")
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None
        return self._items.pop(0)
