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

import pytest
import redis

from chatserver import events
from chatserver.bus import envelope
from chatserver.store import Store
from tests.fixtures.chat import ChatServerFactory, store_settings
from tests.integration.chatserver.realtime_client import connect_user, create_group, register

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
