"""A socket that went live without a resume, and the room's first two publishes overtaking each
other (found while checking issue #16's live loss).

A socket that sends ``ping`` instead of ``resume`` used to have no seq for its rooms: the first
live message set the cursor (chatserver/resume.py, ``RoomCursor``). Two server processes storing
seqs N and N+1 of a room publish independently, so N+1 can reach Redis first; such a socket
then took N+1 as its first message and dropped N as already delivered. Nothing showed a gap, so
N was never filled from history, and a later ``resume`` started after N+1: the socket never got
a message stored after it went live. A single process publishes each room in seq order
(chatserver/store.py, ``_deliver``), so bench/side_by_side.py (one process) cannot meet this.
Now every room of a socket starts at a lower bound of its highest seq, read at connect
(chatserver/realtime.py, ``Hub._set_baselines``): seq N is a gap, held for and filled.

The two publishes are made here as two processes would, the later seq first. The listener's
rooms start from MongoDB's room summary, the sender's (the process follows the room by then)
from what the process has.
"""

from __future__ import annotations

import asyncio
import secrets

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
    """The members of a room going live at once (reconnects after a deploy) read its summary
    once; each still gets a floor no higher than the room's highest seq."""
    store = stores[0]
    room = await store.create_group_room("owner", "burst", ["bob"])
    for i in range(3):
        await store.append_message(room.id, "owner", f"c{i}", "x")
    await store._write_summaries()  # what the summary loop does ~0.25 s later
    finds = metrics.MONGO_COMMANDS.labels("find")
    before = finds._value.get()
    floors = await asyncio.gather(*(store.seq_floors([room.id]) for _ in range(20)))
    assert finds._value.get() - before == 1
    assert floors == [{room.id: 3}] * 20
    # Once answered, the next connect reads again (a floor is never kept stale).
    await store.seq_floors([room.id])
    assert finds._value.get() - before == 2
