"""A membership change while a socket connects reaches the socket (chatserver/realtime.py,
``Hub._set_up``): the socket's user channel is subscribed before its rooms are read, so a change
committed after the read arrives on the bus, and one committed before it is in the read.

The window is opened with a relay in front of server A's MongoDB (tests/fixtures/relay.py):
the answer to the socket's rooms read is held after MongoDB has run it, the membership changes
on server B meanwhile, then the answer goes through. Had the read come before the subscription,
the change's event would have been published to nobody, and the socket would follow the rooms
of the read until it reconnects (the periodic recheck, which would find a removal, is set an
hour apart here).
"""

from __future__ import annotations

import pytest

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess
from tests.fixtures.relay import HoldingRelay
from tests.integration.chatserver.realtime_client import (
    Account,
    Client,
    create_group,
    open_socket,
    register,
    rest_as,
)

pytestmark = pytest.mark.integration


async def _two_servers(
    factory: ChatServerFactory, relay: HoldingRelay
) -> tuple[ChatServerProcess, ChatServerProcess, Account, Account]:
    """Server A on MongoDB through ``relay`` (recheck an hour apart), server B direct, and a room
    owner and a user registered on B: (A, B, owner, user)."""
    server_b = factory.start()
    server_a = factory.start(mongo_url=relay.mongo_url(), membership_recheck_seconds=3600)
    owner, user = await register(server_b.url, "o"), await register(server_b.url, "m")
    return server_a, server_b, owner, user


async def _connect_while_held(
    server_ws_url: str, relay: HoldingRelay, user_id: str, token: str
) -> Client:
    """Open a socket whose rooms read has run in MongoDB but whose answer is still held."""
    relay.hold()
    client = await open_socket(server_ws_url, token)
    await client.send({"type": "ping"})
    await relay.answer_held(b"members", user_id.encode())
    return client


async def test_a_room_added_while_a_socket_connects_is_followed(
    chat_server_factory: ChatServerFactory, mongo_relay: HoldingRelay
) -> None:
    server_a, server_b, owner, user = await _two_servers(chat_server_factory, mongo_relay)
    room = await create_group(server_b.url, owner, [])

    client = await _connect_while_held(server_a.ws_url, mongo_relay, user.id, user.token)
    rest = rest_as(server_b.url, owner)
    try:
        await rest.add_member(room, user.id)
        mongo_relay.release()
        ready = await client.until_type("ready")
        assert room not in ready["rooms"], "the read ran after the change: no race was made"
        added = await client.until_type("room_added")
        assert added["room_id"] == room
        posted = await rest.post_message(room, "after the connect")
        frame = await client.until(lambda f: f.get("type") == "message")
        assert (frame["room_id"], frame["seq"]) == (room, posted.seq)
    finally:
        await rest.aclose()
        await client.close()


async def test_a_room_removed_while_a_socket_connects_is_dropped(
    chat_server_factory: ChatServerFactory, mongo_relay: HoldingRelay
) -> None:
    server_a, server_b, owner, user = await _two_servers(chat_server_factory, mongo_relay)
    room = await create_group(server_b.url, owner, [user])

    client = await _connect_while_held(server_a.ws_url, mongo_relay, user.id, user.token)
    rest = rest_as(server_b.url, owner)
    try:
        await rest.remove_member(room, user.id)
        mongo_relay.release()
        ready = await client.until_type("ready")
        assert room in ready["rooms"], "the read ran after the change: no race was made"
        removed = await client.until_type("room_removed")
        assert removed["room_id"] == room
    finally:
        await rest.aclose()
        await client.close()
