"""A socket that went live without a resume, and the room's first two publishes overtaking each
other (found while checking issue #16's live loss).

A socket that sends ``ping`` instead of ``resume`` used to have no seq for its rooms: the first
live message set the cursor (chatserver/resume.py, ``RoomCursor``). Two server processes storing
seqs N and N+1 of a room publish independently, so N+1 can reach Redis first; such a socket
then took N+1 as its first message and dropped N as already delivered. Nothing showed a gap, so
N was never filled from history, and a later ``resume`` started after N+1: the socket never got
a message stored after it went live. A single process publishes each room in seq order
(chatserver/store.py, ``_deliver``), so bench/side_by_side.py (one process) cannot meet this.
Now every room of a socket starts at its highest seq, read at connect (chatserver/realtime.py,
``Hub._set_baselines``; chatserver/store.py, ``Store.seq_floors``): seq N is a gap, held for and
filled.

The two publishes are made here as two processes would, the later seq first. The listener's
rooms start from MongoDB's room summary, the sender's (the process follows the room by then)
from what the process has.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
import redis

from chatserver import events, metrics
from chatserver.bus import envelope
from chatserver.models import Message
from chatserver.store import Store
from tests.fixtures.chat import ChatServerFactory, store_settings
from tests.integration.chatserver.realtime_client import (
    Client,
    connect_user,
    create_group,
    register,
    rest_as,
)

pytestmark = pytest.mark.integration


async def test_a_live_socket_gets_every_later_message_whatever_the_publish_order(
    chat_server_factory: ChatServerFactory, mongo_url: str, mongo_db_name: str
) -> None:
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    # Both live (ping, no resume) before anything is stored in the room.
    listener = await connect_user(server.ws_url, bob)
    sender = await connect_user(server.ws_url, alice)

    # Two processes store seqs 1 and 2 (a store without a bus: nothing published yet) ...
    store = Store(store_settings(mongo_url, mongo_db_name))
    await store.connect()
    try:
        one, _ = await store.append_message(room, alice.id, "first", "one")
        two, _ = await store.append_message(room, alice.id, "second", "two")
    finally:
        await store.close()
    # ... and the one that stored seq 2 publishes first.
    admin = redis.Redis.from_url(chat_server_factory.base_env["HYPERSEND_REDIS_URL"])
    channel = f"{chat_server_factory.redis_prefix}room:{room}"
    try:
        assert admin.publish(channel, envelope(events.message(two))) == 1
        assert admin.publish(channel, envelope(events.message(one))) == 1
    finally:
        admin.close()

    # A socket gets a room's messages in seq order: once seq 3 (sent through the server) is
    # in, seq 1 came before it or never will.
    after = await sender.send_message(room, "three")
    assert after["seq"] == 3
    for client in (listener, sender):
        await client.until(lambda f: f.get("type") == "message" and f["seq"] == after["seq"])
        assert client.message_seqs(room) == [1, 2, 3]


async def _store_unpublished(
    mongo_url: str, mongo_db_name: str, room: str, sender: str, count: int
) -> list[Message]:
    """``count`` messages stored as another process would, not published; its room summary is
    written when the store closes."""
    store = Store(store_settings(mongo_url, mongo_db_name))
    await store.connect()
    try:
        sends = [secrets.token_hex(8) for _ in range(count)]
        return [(await store.append_message(room, sender, cid, cid))[0] for cid in sends]
    finally:
        await store.close()


def _publish_reversed(factory: ChatServerFactory, room: str, messages: list[Message]) -> None:
    admin = redis.Redis.from_url(factory.base_env["HYPERSEND_REDIS_URL"])
    channel = f"{factory.redis_prefix}room:{room}"
    try:
        for msg in reversed(messages):
            assert admin.publish(channel, envelope(events.message(msg))) >= 1
    finally:
        admin.close()


async def _until_seq(client: Client, seq: int) -> None:
    await client.until(lambda f: f.get("type") == "message" and f["seq"] == seq)


async def test_a_socket_going_live_in_a_room_with_history_starts_at_its_newest_seq(
    chat_server_factory: ChatServerFactory, mongo_url: str, mongo_db_name: str
) -> None:
    """The baseline from MongoDB's summary (the listener: its process follows no socket of the
    room) and from what the process has (the sender, connecting once the listener follows the
    room) is the room's newest seq here, so nothing older is replayed; and an earlier seq
    published after a later one is still delivered first."""
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    await _store_unpublished(mongo_url, mongo_db_name, room, alice.id, 2)
    listener = await connect_user(server.ws_url, bob)
    sender = await connect_user(server.ws_url, alice)

    later = await _store_unpublished(mongo_url, mongo_db_name, room, alice.id, 2)
    assert [m.seq for m in later] == [3, 4]
    _publish_reversed(chat_server_factory, room, later)

    after = await sender.send_message(room, "five")
    assert after["seq"] == 5
    for client in (listener, sender):
        await _until_seq(client, 5)
        assert client.message_seqs(room) == [3, 4, 5]


async def test_a_room_added_while_live_gets_every_later_message_whatever_the_publish_order(
    chat_server_factory: ChatServerFactory, mongo_url: str, mongo_db_name: str
) -> None:
    """A room joined while live starts at the room's seq when the user was added (the stored
    one, chatserver/realtime.py ``Hub._add_room``), not at its first live message."""
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [])
    await _store_unpublished(mongo_url, mongo_db_name, room, alice.id, 2)
    listener = await connect_user(server.ws_url, bob)
    assert listener.ready is not None
    assert listener.ready["rooms"] == []
    rest = rest_as(server.url, alice)
    try:
        await rest.add_member(room, bob.id)
    finally:
        await rest.aclose()
    added = await listener.until_type("room_added")
    assert added["room_id"] == room

    later = await _store_unpublished(mongo_url, mongo_db_name, room, alice.id, 2)
    assert [m.seq for m in later] == [3, 4]
    _publish_reversed(chat_server_factory, room, later)

    sender = await connect_user(server.ws_url, alice)
    after = await sender.send_message(room, "five")
    assert after["seq"] == 5
    await _until_seq(listener, 5)
    assert listener.message_seqs(room) == [3, 4, 5]


async def test_sockets_of_a_room_connecting_together_share_one_floor_read(
    stores: list[Store],
) -> None:
    """The members of a room going live at once (reconnects after a deploy) share one read of
    its highest seq (its summary, then one lookup past it); each gets that seq."""
    store = stores[0]
    room = await store.create_group_room("owner", "burst", ["bob"])
    for i in range(3):
        await store.append_message(room.id, "owner", f"c{i}", "x")
    await store._write_summaries()  # what the summary loop does ~0.25 s later
    finds = metrics.MONGO_COMMANDS.labels("find")
    before = finds._value.get()
    floors = await asyncio.gather(*(store.seq_floors([room.id]) for _ in range(20)))
    assert finds._value.get() - before == 2
    assert floors == [{room.id: 3}] * 20
    # Once answered, the next connect reads again (a floor is never kept stale).
    await store.seq_floors([room.id])
    assert finds._value.get() - before == 4


async def test_a_summary_left_far_behind_costs_a_few_lookups(stores: list[Store]) -> None:
    """A process killed before writing its summaries leaves them behind until the room's next
    message: a new socket's floor is still the room's highest seq, found in about 2·log2 of the
    lag by `_id` (issue #16), not by each socket reading the lag from history."""
    room = await stores[0].create_group_room("owner", "behind", ["bob"])
    for i in range(100):
        await stores[0].append_message(room.id, "owner", f"c{i}", "x")
    await stores[0]._write_summaries()
    await stores[0]._rooms.update_one({"_id": room.id}, {"$set": {"last_seq": 0}})
    finds = metrics.MONGO_COMMANDS.labels("find")
    before = finds._value.get()
    assert await stores[1].seq_floors([room.id]) == {room.id: 100}  # a process without hints
    # the summary, 7 lookups doubling the step (1, 3, ..., 127), 6 bisecting back
    assert finds._value.get() - before == 14


async def test_a_socket_that_goes_live_gets_no_earlier_message_whatever_the_summary(
    chat_server_factory: ChatServerFactory, mongo_url: str, mongo_db_name: str
) -> None:
    """Without a resume a socket's messages start after the room's highest seq at connect,
    also when the room's summary is far behind: every socket of such a room used to fill the
    difference from history (bench/side_by_side.py counts those as earlier workloads'
    messages; issue #16)."""
    a, b = chat_server_factory.start_many(2)
    alice, bob = await register(a.url), await register(a.url)
    room = await create_group(a.url, alice, [bob])
    rest = rest_as(a.url, alice)
    try:
        for i in range(30):
            await rest.post_message(room, f"before {i}")
    finally:
        await rest.aclose()
    store = Store(store_settings(mongo_url, mongo_db_name))
    await store.connect()
    try:
        # A's summary written, then lost as a process killed before writing it loses it.
        deadline = time.monotonic() + 30
        while await store._room_last_seq(room) != 30:
            assert time.monotonic() < deadline, "A never wrote the room's summary"
            await asyncio.sleep(0.05)
        await store._rooms.update_one({"_id": room}, {"$set": {"last_seq": 0}})
    finally:
        await store.close()
    listener = await connect_user(b.ws_url, bob)  # B follows no socket of the room: it reads
    sender = await connect_user(a.ws_url, alice)
    live = await sender.send_message(room, "live")
    assert live["seq"] == 31
    await listener.until(lambda f: f.get("type") == "message" and f["seq"] == live["seq"])
    assert listener.message_seqs(room) == [31]
