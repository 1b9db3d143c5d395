"""The group commit on a real FerretDB: many rooms' messages in one ordered insert, with the
seq and the client id decided by the message's own unique indexes (chatserver/store.py,
docs/architecture.md "Group commit"). Two Store instances stand for two server processes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pymongo
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from chatserver.models import Message
from chatserver.store import SeqContention, Store, UnexplainedDuplicate
from tests.fixtures.chat import store_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def db(mongo_url: str, mongo_db_name: str) -> Any:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    yield client[mongo_db_name]
    client.close()


async def _seqs(store: Store, room_id: str) -> list[int]:
    return [m.seq for m in await store.messages_after(room_id, 0, 10_000)]


async def test_concurrent_sends_to_many_rooms_get_gap_free_seqs(stores: list[Store]) -> None:
    rooms = [(await stores[0].create_group_room("owner", f"r{i}", [])).id for i in range(10)]
    results = await asyncio.gather(
        *(stores[0].append_message(rooms[i % 10], "u", f"c{i}", f"m{i}") for i in range(100))
    )
    assert all(created for _, created in results)
    for room in rooms:
        assert await _seqs(stores[1], room) == list(range(1, 11))
        assert sorted(m.seq for m, _ in results if m.room_id == room) == list(range(1, 11))


def _commit_sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_each_insert_is_timed_and_counts_the_messages_it_sent(stores: list[Store]) -> None:
    room = (await stores[0].create_group_room("owner", "timed", [])).id
    inserts = _commit_sample("hypersend_store_commit_seconds_count")
    sizes = _commit_sample("hypersend_store_commit_messages_count")
    sent = _commit_sample("hypersend_store_commit_messages_sum")
    timed = _commit_sample("hypersend_store_commit_seconds_sum")
    await asyncio.gather(*(stores[0].append_message(room, "u", f"t{i}", "x") for i in range(30)))
    made = _commit_sample("hypersend_store_commit_seconds_count") - inserts
    assert 1 <= made <= 30  # batched: fewer inserts than messages once a batch is in flight
    assert _commit_sample("hypersend_store_commit_messages_count") - sizes == made
    assert _commit_sample("hypersend_store_commit_messages_sum") - sent == 30
    assert _commit_sample("hypersend_store_commit_seconds_sum") > timed


async def test_two_processes_sending_to_one_room_leave_no_gap(stores: list[Store]) -> None:
    room = (await stores[0].create_group_room("owner", "shared", [])).id
    others = [(await stores[0].create_group_room("owner", f"o{i}", [])).id for i in range(5)]

    async def send(i: int) -> Message | None:
        target = room if i % 2 == 0 else others[i % 5]
        try:
            message, created = await stores[i % 2].append_message(target, f"u{i}", f"c{i}", "m")
        except SeqContention:
            return None  # nothing stored: the client sends again
        assert created
        return message

    results = await asyncio.gather(*(send(i) for i in range(300)))
    acked = [m for m in results if m is not None]
    for target in (room, *others):
        acked_seqs = sorted(m.seq for m in acked if m.room_id == target)
        # Every ack is stored, every stored message was acked, seqs 1..n.
        assert await _seqs(stores[1], target) == acked_seqs == list(range(1, len(acked_seqs) + 1))
    assert len(acked) >= 270, f"only {len(acked)} of 300 stored"


async def test_a_retry_in_the_same_batch_and_in_a_later_one_returns_the_original(
    stores: list[Store],
) -> None:
    room = (await stores[0].create_group_room("owner", "retry", [])).id
    same = await asyncio.gather(*(stores[0].append_message(room, "u", "x", "hi") for _ in range(5)))
    assert [created for _, created in same].count(True) == 1
    assert {m.seq for m, _ in same} == {1}
    # A later batch: the retry sits between new sends of the same room and of another process.
    later = await asyncio.gather(
        stores[0].append_message(room, "u", "a", "a"),
        stores[0].append_message(room, "u", "x", "hi again"),
        stores[0].append_message(room, "u", "b", "b"),
        stores[1].append_message(room, "u", "x", "from the other process"),
    )
    (a, a_new), (x, x_new), (b, b_new), (y, y_new) = later
    assert (a_new, x_new, b_new, y_new) == (True, False, True, False)
    assert (x.seq, x.text, y.seq, y.text) == (1, "hi", 1, "hi")
    assert sorted((a.seq, b.seq)) == [2, 3]
    assert await _seqs(stores[1], room) == [1, 2, 3]


async def test_a_message_the_batch_could_not_store_gets_no_ack_and_the_others_do(
    stores: list[Store], db: Any
) -> None:
    # A real unique-index violation on one message in the middle of a batch.
    db.messages.create_index([("text", pymongo.ASCENDING)], unique=True, name="unique_text")
    room = (await stores[0].create_group_room("owner", "fail", [])).id
    other = (await stores[0].create_group_room("owner", "other", [])).id
    await stores[0].append_message(room, "u", "taken", "taken")
    sends = [(room, "a"), (other, "b"), (room, "taken"), (room, "c"), (other, "d")]
    outcomes = await asyncio.gather(
        *(stores[0].append_message(r, "u", f"new-{t}", t) for r, t in sends),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], UnexplainedDuplicate)
    acked = [o[0] for o in outcomes if isinstance(o, tuple)]
    assert all(o[1] for o in outcomes if isinstance(o, tuple))
    assert sorted((m.room_id, m.text, m.seq) for m in acked) == sorted(
        [(room, "a", 2), (room, "c", 3), (other, "b", 1), (other, "d", 2)]
    )
    # Resume after the batch returns exactly what was acknowledged, in order, no hole.
    assert [m.text for m in await stores[1].messages_after(room, 1, 100)] == ["a", "c"]
    assert [m.text for m in await stores[1].messages_after(other, 0, 100)] == ["b", "d"]
    assert db.messages.count_documents({"text": "taken"}) == 1


async def test_a_failed_batch_acks_nothing_it_did_not_store(
    mongo_url: str, mongo_db_name: str, stores: list[Store], db: Any
) -> None:
    room = (await stores[0].create_group_room("owner", "down", [])).id
    # A store whose connections go to a port nothing listens on: the batch's insert fails.
    broken = store_settings(mongo_url, mongo_db_name).model_copy(update={"mongo_url": _dead_url()})
    dead = Store(broken)
    await dead.connect()
    try:
        outcomes = await asyncio.gather(
            *(dead.append_message(room, "u", f"c{i}", "m") for i in range(5)),
            return_exceptions=True,
        )
    finally:
        await dead.close()
    assert all(isinstance(o, pymongo.errors.ConnectionFailure) for o in outcomes), outcomes
    assert db.messages.count_documents({"room_id": room}) == 0
    # The senders' retries against a working process store each message once, gap-free.
    retried = await asyncio.gather(
        *(stores[1].append_message(room, "u", f"c{i}", "m") for i in range(5))
    )
    assert sorted(m.seq for m, _ in retried) == list(range(1, 6))


def _dead_url() -> SecretStr:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Closed again: every connection is refused (the Store's server selection gives up).
    return SecretStr(f"mongodb://127.0.0.1:{port}/")
