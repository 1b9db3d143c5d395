"""The message hot path on a real FerretDB: seq allocation and client-id dedupe by `_id` point
operations only, correct when the room's `last_seq` summary is stale, a retry found by the
message's own client id, graceful (`SeqContention`, never a lost ack) under heavy contention, and
the room summaries written behind the messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pymongo
import pytest

from chatserver.models import Message
from chatserver.store import SeqContention, Store

pytestmark = pytest.mark.integration


@pytest.fixture
def db(mongo_url: str, mongo_db_name: str) -> Any:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    yield client[mongo_db_name]
    client.close()


async def test_stale_room_hint_still_gives_the_next_seq(stores: list[Store], db: Any) -> None:
    room = await stores[0].create_group_room("owner", "stale", [])
    for i in range(5):
        await stores[0].append_message(room.id, "owner", f"c{i}", "x")
    # A lost summary update (FerretDB's read-modify-write): the hint lags 4 messages behind.
    db.rooms.update_one({"_id": room.id}, {"$set": {"last_seq": 1}})
    assert await stores[1].highest_seq(room.id) == 5  # a fresh process probes past the hint
    message, created = await stores[2].append_message(room.id, "owner", "c5", "x")
    assert created
    assert message.seq == 6
    assert [m.seq for m in await stores[0].messages_after(room.id, 0, 50)] == list(range(1, 7))


async def test_retry_of_an_older_message_returns_it(stores: list[Store], db: Any) -> None:
    room = await stores[0].create_group_room("owner", "retry", [])
    first, _ = await stores[0].append_message(room.id, "owner", "first", "one")
    await stores[0].append_message(room.id, "owner", "second", "two")
    # The message document is the idempotency record: no second collection is written.
    assert "message_client_ids" not in db.list_collection_names()
    again, created = await stores[1].append_message(room.id, "owner", "first", "one")
    assert not created
    assert again.seq == first.seq
    assert again.text == "one"
    assert await stores[0].highest_seq(room.id) == 2


async def test_same_client_id_from_two_senders_is_two_messages(stores: list[Store]) -> None:
    room = await stores[0].create_group_room("owner", "two", [])
    one, _ = await stores[0].append_message(room.id, "alice", "c", "a")
    two, created = await stores[1].append_message(room.id, "bob", "c", "b")
    assert created
    assert (one.seq, two.seq) == (1, 2)


async def test_500_concurrent_appends_lose_no_ack_and_leave_no_gap(stores: list[Store]) -> None:
    room = await stores[0].create_group_room("owner", "storm", [])

    async def send(i: int) -> Message | None:
        try:
            message, created = await stores[i % 3].append_message(
                room.id, f"u{i % 10}", f"c{i}", f"m{i}"
            )
        except SeqContention:
            return None  # the documented answer: nothing stored, the client sends again
        assert created
        return message

    results = await asyncio.gather(*(send(i) for i in range(500)))
    acked = sorted(m.seq for m in results if m is not None)
    stored = await stores[0].messages_after(room.id, 0, 1000)
    # Every stored message was acknowledged and every ack is stored: seqs 1..n, no gap.
    assert [m.seq for m in stored] == acked == list(range(1, len(acked) + 1))
    assert len(acked) >= 450, f"only {len(acked)} of 500 stored"
    assert await stores[1].highest_seq(room.id) == len(acked)


async def test_room_summaries_follow_the_messages_off_the_send_path(
    stores: list[Store], db: Any
) -> None:
    rooms = [await stores[0].create_group_room("owner", f"r{i}", []) for i in range(3)]
    for i, room in enumerate(rooms):
        for k in range(i + 1):
            await stores[0].append_message(room.id, "owner", f"c{k}", f"{room.id} {k}")
    # The process that stored them lists them exactly at once, whatever the summaries say.
    await stores[0].add_member(rooms[0].id, "reader", "member")
    await stores[0].add_member(rooms[2].id, "reader", "member")
    listed = await stores[0].rooms_for_user("reader")
    assert [(r.id, r.last_seq) for r, _ in listed] == [(rooms[2].id, 3), (rooms[0].id, 1)]
    last = listed[0][0].last_message
    assert last is not None
    assert last.text == f"{rooms[2].id} 2"
    # The summaries are written behind the messages, in one bulk update per interval.
    deadline = asyncio.get_running_loop().time() + 10
    while [db.rooms.find_one({"_id": r.id})["last_seq"] for r in rooms] != [1, 2, 3]:
        assert asyncio.get_running_loop().time() < deadline, "summaries never written"
        await asyncio.sleep(0.05)
