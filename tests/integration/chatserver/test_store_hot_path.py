"""The message hot path on a real FerretDB: seq allocation and client-id dedupe by `_id` point
operations only, correct when the room's `last_seq` hint is stale or a dedupe record is missing,
and graceful (`SeqContention`, never a lost ack) under heavy contention."""

from __future__ import annotations

import asyncio
from typing import Any

import pymongo
import pytest

from chatserver.models import Message
from chatserver.store import SeqContention, Store, client_key
from tests.fixtures.chat import store_settings

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


async def test_retry_of_an_older_message_returns_it_without_a_dedupe_record(
    stores: list[Store], db: Any
) -> None:
    room = await stores[0].create_group_room("owner", "retry", [])
    first, _ = await stores[0].append_message(room.id, "owner", "first", "one")
    await stores[0].append_message(room.id, "owner", "second", "two")
    assert db.message_client_ids.find_one({"_id": client_key(room.id, "owner", "first")})
    again, created = await stores[1].append_message(room.id, "owner", "first", "one")
    assert not created
    assert again.seq == first.seq
    assert again.text == "one"
    # A process died between storing the message and recording its client id.
    db.message_client_ids.delete_one({"_id": client_key(room.id, "owner", "first")})
    again, created = await stores[2].append_message(room.id, "owner", "first", "one")
    assert not created
    assert again.seq == first.seq
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


class _BusyClientIdStore(Store):
    """A store whose client-id write fails the way FerretDB/SQLite failed under the 4,000-user
    bench (the message insert went through, the next write found the database locked)."""

    async def _record_client_id(self, msg: Message) -> None:
        raise pymongo.errors.OperationFailure("database is locked (5) (SQLITE_BUSY)", code=1)


async def test_a_failed_best_effort_write_after_the_insert_still_acks_the_stored_message(
    stores: list[Store], mongo_url: str, mongo_db_name: str, db: Any
) -> None:
    busy = _BusyClientIdStore(store_settings(mongo_url, mongo_db_name))
    await busy.connect()
    try:
        room = await stores[0].create_group_room("owner", "busy", [])
        message, created = await busy.append_message(room.id, "owner", "c1", "stored")
    finally:
        await busy.close()
    assert created
    assert message.seq == 1
    assert db.messages.count_documents({"room_id": room.id}) == 1
    assert db.message_client_ids.find_one({"_id": client_key(room.id, "owner", "c1")}) is None
    # The sender's retry finds it through the unique index: the same message, not a second one.
    again, created = await stores[1].append_message(room.id, "owner", "c1", "stored")
    assert not created
    assert again.seq == 1
