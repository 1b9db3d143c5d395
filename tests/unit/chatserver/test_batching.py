"""KeyedReads: which keys share a read, and that no caller is answered by a read sent before it
asked."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest

from chatserver.batching import KeyedReads

pytestmark = pytest.mark.unit


class Table:
    """The read's data source: a set of keys, and each read's keys in order."""

    def __init__(self, *present: str) -> None:
        self.present = set(present)
        self.reads: list[list[str]] = []
        self.gate: asyncio.Event | None = None  # when set, reads wait for it
        self.sent = asyncio.Event()
        self.fail: Exception | None = None

    async def read(self, keys: list[str]) -> Collection[str]:
        self.reads.append(keys)
        snapshot = self.present & set(keys)  # what the server saw when the read arrived
        self.sent.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return snapshot


async def _scheduled_callbacks_ran() -> None:
    """Return once every callback the loop had scheduled before this call has run (the loop
    runs them in order): a task's next step, or a read `KeyedReads` would have started."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


async def test_keys_asked_together_share_one_read() -> None:
    table = Table("b")
    reads = KeyedReads(table.read, max_keys=100)
    answers = await asyncio.gather(*(reads.contains(k) for k in ("a", "b", "a", "c")))
    assert answers == [False, True, False, False]
    assert table.reads == [["a", "b", "c"]]


async def test_a_key_asked_after_a_read_was_sent_gets_a_later_read() -> None:
    table = Table()
    table.gate = asyncio.Event()
    reads = KeyedReads(table.read, max_keys=100)
    first = asyncio.ensure_future(reads.contains("fam"))
    await table.sent.wait()
    # Written after the first read saw the table: a caller asking now must see it.
    table.present.add("fam")
    second = asyncio.ensure_future(reads.contains("fam"))
    table.gate.set()
    assert await first is False
    assert await second is True
    assert table.reads == [["fam"], ["fam"]]


async def test_keys_wait_for_a_free_read_and_go_together() -> None:
    table = Table("y")
    table.gate = asyncio.Event()
    reads = KeyedReads(table.read, max_keys=100, max_in_flight=1)
    first = asyncio.ensure_future(reads.contains("x"))
    await table.sent.wait()
    later = [asyncio.ensure_future(reads.contains(k)) for k in ("y", "z")]
    await _scheduled_callbacks_ran()  # y and z were asked
    await _scheduled_callbacks_ran()  # and a read they would have started got its turn
    assert reads.waiting == 2
    assert table.reads == [["x"]]  # the one read allowed is under way
    table.gate.set()
    assert [await first, *[await f for f in later]] == [False, True, False]
    assert table.reads == [["x"], ["y", "z"]]


async def test_a_read_takes_at_most_max_keys() -> None:
    table = Table("k3")
    reads = KeyedReads(table.read, max_keys=2)
    answers = await asyncio.gather(*(reads.contains(f"k{i}") for i in range(5)))
    assert answers == [False, False, False, True, False]
    assert table.reads == [["k0", "k1"], ["k2", "k3"], ["k4"]]


async def test_an_error_reaches_every_caller_of_its_read_and_the_next_read_works() -> None:
    table = Table("a")
    table.fail = ConnectionError("down")
    reads = KeyedReads(table.read, max_keys=100)
    results = await asyncio.gather(reads.contains("a"), reads.contains("b"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    table.fail = None
    assert await reads.contains("a") is True


async def test_a_cancelled_caller_leaves_the_others_their_answer() -> None:
    table = Table("a")
    table.gate = asyncio.Event()
    reads = KeyedReads(table.read, max_keys=100)
    gone = asyncio.ensure_future(reads.contains("a"))
    stays = asyncio.ensure_future(reads.contains("a"))
    await table.sent.wait()
    gone.cancel()
    table.gate.set()
    assert await stays is True
    assert gone.cancelled()


async def test_close_cancels_reads_under_way_and_waiting_callers() -> None:
    table = Table()
    table.gate = asyncio.Event()
    reads = KeyedReads(table.read, max_keys=100, max_in_flight=1)
    sent = asyncio.ensure_future(reads.contains("a"))
    await table.sent.wait()
    waiting = asyncio.ensure_future(reads.contains("b"))
    await _scheduled_callbacks_ran()
    assert reads.waiting == 1
    await reads.close()
    for fut in (sent, waiting):
        with pytest.raises(asyncio.CancelledError):
            await fut
    assert reads.in_flight == 0


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyedReads(Table().read, max_keys=0)
