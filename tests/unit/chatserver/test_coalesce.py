"""chatserver.coalesce: lookups asked together share one read; none is answered by a read that
started before it was asked."""

from __future__ import annotations

import asyncio

import pytest

from chatserver.coalesce import Coalescer

pytestmark = pytest.mark.unit


class Source:
    """A read whose answer is fixed when it starts (what a database read sees), released by the
    test."""

    def __init__(self) -> None:
        self.value = 0
        self.reads: list[list[str]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def read(self, keys: list[str]) -> dict[str, int]:
        self.reads.append(keys)
        self.started.set()
        seen = self.value
        await self.release.wait()
        return {key: seen for key in keys}


async def test_keys_asked_in_one_turn_share_one_read() -> None:
    source = Source()
    source.release.set()
    reads = Coalescer(source.read, max_keys=100, name="t")
    answers = await asyncio.gather(*(reads.get(k) for k in ["a", "b", "a", "c"]))
    assert answers == [0, 0, 0, 0]
    assert source.reads == [["a", "b", "c"]]


async def test_a_key_asked_during_a_read_waits_for_the_next_one() -> None:
    source = Source()
    reads = Coalescer(source.read, max_keys=100, name="t")
    first = asyncio.create_task(reads.get("a"))
    await source.started.wait()
    source.value = 1  # a write after the first read started
    second = asyncio.create_task(reads.get("a"))
    source.release.set()
    assert await first == 0
    assert await second == 1  # the in-flight read's answer would miss the write
    assert source.reads == [["a"], ["a"]]


async def test_reads_are_chunked_and_errors_reach_their_callers() -> None:
    calls: list[list[int]] = []

    async def read(keys: list[int]) -> dict[int, int]:
        calls.append(keys)
        if 3 in keys:
            raise RuntimeError("down")
        return {k: k * 10 for k in keys}

    reads = Coalescer(read, max_keys=2, name="t")
    results = await asyncio.gather(*(reads.get(k) for k in range(5)), return_exceptions=True)
    assert calls == [[0, 1], [2, 3], [4]]
    assert results[:2] == [0, 10]
    assert results[4] == 40
    assert isinstance(results[2], RuntimeError)
    assert isinstance(results[3], RuntimeError)
    assert await reads.get(7) == 70  # a failed read does not stop later ones
