"""Two server processes share Redis and MongoDB: live fan-out, resume, and a crashed process."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from functools import partial
from typing import Any

import httpx
import pytest
import redis
from hypersend_client import CloseError
from hypersend_devenv.datastores import FerretDBServer

from chatserver.bus import envelope
from chatserver.store import Store
from tests.fixtures.chat import ChatServerFactory, store_settings
from tests.integration.chatserver.realtime_client import (
    Client,
    connect_user,
    create_group,
    history,
    metric,
    open_socket,
    register,
    rest_as,
    until_true,
)

pytestmark = pytest.mark.integration


def _is_reply_to(client_id: str, frame: dict[str, Any]) -> bool:
    return frame.get("client_id") == client_id


async def test_message_sent_on_a_reaches_members_on_b(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob, carol = [await register(a.url) for _ in range(3)]
    room = await create_group(a.url, alice, [bob, carol])

    on_a = await connect_user(a.ws_url, alice)
    bob_b = await connect_user(b.ws_url, bob)
    carol_b = await connect_user(b.ws_url, carol)
    assert on_a.ready is not None
    assert room in on_a.ready["rooms"]

    ack = await on_a.send_message(room, "hello from A")
    assert ack["type"] == "ack", ack
    seq = ack["seq"]
    for client in (bob_b, carol_b, on_a):
        frame = await client.until_type("message")
        assert frame["room_id"] == room
        assert frame["seq"] == seq
        assert frame["message"]["text"] == "hello from A"
        assert frame["message"]["sender_id"] == alice.id

    # And back: B to A.
    ack_b = await bob_b.send_message(room, "hello from B")
    frame = await on_a.until_type("message")
    assert (frame["seq"], frame["message"]["text"]) == (ack_b["seq"], "hello from B")
    for client in (on_a, bob_b, carol_b):
        await client.close()


async def test_a_stored_but_never_published_message_is_filled_from_history_in_order(
    chat_server_factory: ChatServerFactory, mongo_url: str, mongo_db_name: str
) -> None:
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    listener = await connect_user(server.ws_url, bob)
    sender = await connect_user(server.ws_url, alice)
    first = await sender.send_message(room, "one")
    await listener.until(lambda f: f.get("type") == "message" and f["seq"] == first["seq"])

    # A process that stored a message and died before publishing it: the store, no bus.
    store = Store(store_settings(mongo_url, mongo_db_name))
    await store.connect()
    try:
        lost, created = await store.append_message(room, alice.id, "lost", "never published")
    finally:
        await store.close()
    assert created
    assert lost.seq == first["seq"] + 1

    after = await sender.send_message(room, "three")
    assert after["seq"] == lost.seq + 1
    # The listener holds "three" back until history fills the missing seq, then delivers both.
    for client in (listener, sender):
        await client.until(lambda f: f.get("type") == "message" and f["seq"] == after["seq"])
        assert client.message_seqs(room) == [first["seq"], lost.seq, after["seq"]]
    texts = [f["message"]["text"] for f in listener.frames if f.get("type") == "message"]
    assert texts == ["one", "never published", "three"]
    async with httpx.AsyncClient() as http:
        metrics_text = (await http.get(f"{server.url}/metrics")).text
    # Both sockets of the room (the sender's too) filled the gap.
    assert "hypersend_gap_fills_total 2.0" in metrics_text.splitlines()


async def test_a_rest_retry_publishes_a_message_its_first_attempt_stored_but_never_published(
    chat_server_factory: ChatServerFactory, mongo_url: str, mongo_db_name: str
) -> None:
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    listener = await connect_user(server.ws_url, bob)
    store = Store(store_settings(mongo_url, mongo_db_name))
    await store.connect()
    try:  # the first attempt: stored, then the process died before publishing
        lost, _ = await store.append_message(room, alice.id, "retried", "hello")
    finally:
        await store.close()
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        response = await http.post(
            f"/api/v1/rooms/{room}/messages",
            json={"client_id": "retried", "text": "hello"},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
    assert response.status_code == 200  # already stored: the same message, not a new one
    assert response.json()["seq"] == lost.seq
    frame = await listener.until_type("message")
    assert (frame["seq"], frame["message"]["text"]) == (lost.seq, "hello")


async def test_resend_with_same_client_id_is_idempotent(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob = await register(a.url), await register(a.url)
    room = await create_group(a.url, alice, [bob])
    on_a = await connect_user(a.ws_url, alice)
    on_b = await connect_user(b.ws_url, alice)
    bob_b = await connect_user(b.ws_url, bob)
    first = await on_a.send_message(room, "once", client_id="retry-1")
    again = await on_b.send_message(room, "once", client_id="retry-1")
    assert first["type"] == again["type"] == "ack"
    assert first["seq"] == again["seq"]
    assert await history(a.url, bob, room) == [first["seq"]]
    # The retry is published again (it may be the first publish after a crash); sockets that
    # already have it drop the copy.
    after = await on_a.send_message(room, "next")
    while bob_b.message_seqs(room)[-1:] != [after["seq"]]:
        await bob_b.until_type("message")
    assert bob_b.message_seqs(room) == [first["seq"], after["seq"]]


async def test_room_added_subscribes_the_socket_live(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob = await register(a.url), await register(a.url)
    bob_b = await connect_user(b.ws_url, bob)
    assert bob_b.ready is not None
    assert bob_b.ready["rooms"] == []
    room = await create_group(a.url, alice, [bob])
    added = await bob_b.until_type("room_added")
    assert added["room_id"] == room
    on_a = await connect_user(a.ws_url, alice)
    ack = await on_a.send_message(room, "welcome")
    frame = await bob_b.until_type("message")
    assert frame["seq"] == ack["seq"]


async def test_resume_after_a_dropped_connection_delivers_each_missed_message_once_in_order(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob = await register(a.url), await register(a.url)
    room = await create_group(a.url, alice, [bob])
    sender = await connect_user(a.ws_url, alice)
    listener = await connect_user(b.ws_url, bob)
    total = 80
    acked: list[int] = []
    dropped = asyncio.Event()

    async def send_all() -> None:
        for i in range(total):
            ack = await sender.send_message(room, f"m{i}")
            assert ack["type"] == "ack", ack
            acked.append(ack["seq"])
            if i == 12:
                dropped.set()
            # Keep sending through the reconnect: messages race the resume's replay.
            await asyncio.sleep(0.02)

    sending = asyncio.create_task(send_all())
    # Read live until the drop, then vanish without a close handshake.
    await dropped.wait()
    while len(listener.message_seqs(room)) < 5:
        await listener.until_type("message")
    await listener.abort()
    seen_before = listener.message_seqs(room)
    last = seen_before[-1]
    # Messages keep flowing while bob is away.
    await until_true(lambda: sum(seq > last for seq in acked) >= 10, "acks while bob is away")

    again = await connect_user(b.ws_url, bob, resume={room: last})
    assert len(acked) < total, "the sender finished before the resume; nothing raced it"
    await sending
    while not again.message_seqs(room) or again.message_seqs(room)[-1] < acked[-1]:
        await again.until_type("message", wait=15)
    seen = seen_before + again.message_seqs(room)
    assert seen == sorted(acked), f"gap/duplicate/order problem: {seen}"
    assert acked == list(range(1, total + 1))
    # No late duplicate: one more message comes after anything still queued for the socket.
    closing = await sender.send_message(room, "last")
    while again.message_seqs(room)[-1] != closing["seq"]:
        await again.until_type("message", wait=15)
    assert seen_before + again.message_seqs(room) == [*acked, closing["seq"]]


async def test_resume_from_zero_replays_history_then_goes_live(
    chat_server_factory: ChatServerFactory,
) -> None:
    a = chat_server_factory.start(rate_limit_per_minute=10_000)
    alice, bob = await register(a.url), await register(a.url)
    room = await create_group(a.url, alice, [bob])
    sender = await connect_user(a.ws_url, alice)
    # More than one history page (200) so paging is exercised.
    for i in range(230):
        await sender.send({"type": "send", "room_id": room, "client_id": f"c{i}", "text": f"m{i}"})
    await sender.until(lambda f: f.get("type") == "ack" and f.get("client_id") == "c229", 60)
    late = await connect_user(a.ws_url, bob, resume={room: 0})
    ack = await sender.send_message(room, "live one")
    while late.message_seqs(room)[-1:] != [ack["seq"]]:
        await late.until_type("message")
    assert late.message_seqs(room) == list(range(1, 232))


@pytest.mark.timeout(90)
async def test_kill_9_under_traffic_loses_no_acknowledged_message(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob, carol = [await register(b.url) for _ in range(3)]
    room = await create_group(b.url, alice, [bob, carol])
    sender_a = await connect_user(a.ws_url, alice)
    sender_b = await connect_user(b.ws_url, carol)
    bob_a = await connect_user(a.ws_url, bob)
    bob_b = await connect_user(b.ws_url, bob)
    acked: set[int] = set()
    acks = {"a": 0, "b": 0}

    async def pump(client: Client, tag: str) -> None:
        i = 0
        while True:
            cid = f"{tag}-{i}-{secrets.token_hex(2)}"
            try:
                await client.send(
                    {"type": "send", "room_id": room, "client_id": cid, "text": f"{tag}{i}"}
                )
                frame = await client.until(partial(_is_reply_to, cid), wait=15)
            except Exception:
                return  # the process died under us
            if frame["type"] == "ack":
                acked.add(int(frame["seq"]))
                acks[tag] += 1
            i += 1

    pumps = [asyncio.create_task(pump(sender_a, "a")), asyncio.create_task(pump(sender_b, "b"))]
    await until_true(lambda: min(acks.values()) >= 10, "traffic through both processes")
    a.kill()
    await until_true(pumps[0].done, "the sender on the killed process noticing")
    # B goes on storing above every seq A acknowledged: B's sockets then find any message A
    # stored but never published as a gap and fill it from history.
    after_kill = acks["b"]
    await until_true(lambda: acks["b"] >= after_kill + 5, "acks from B after the kill")
    pumps[1].cancel()
    await asyncio.gather(*pumps, return_exceptions=True)

    # What the sockets on A received before it died (still buffered client-side) counts as seen.
    for dead in (bob_a, sender_a):
        with contextlib.suppress(CloseError, TimeoutError):
            while True:
                await dead.recv(wait=2)

    stored = set(await history(b.url, bob, room))
    assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)}"

    # Every member gets every acknowledged message after reconnecting (to the survivor).
    def seen_by(*clients: Client) -> set[int]:
        return {s for c in clients for s in c.message_seqs(room)}

    def last_of(*clients: Client) -> int:
        return max(seen_by(*clients), default=0)

    bob_again = await connect_user(b.ws_url, bob, resume={room: last_of(bob_a)})
    alice_again = await connect_user(b.ws_url, alice, resume={room: last_of(sender_a)})
    # What each member saw (with its socket on A, for those that moved) must come to cover
    # every acknowledged seq.
    for seen_in in ((bob_a, bob_again), (sender_a, alice_again), (sender_b,), (bob_b,)):
        reader = seen_in[-1]
        while missing := sorted(acked - seen_by(*seen_in)):
            try:
                await reader.until_type("message", wait=30)
            except TimeoutError as exc:
                raise AssertionError(f"acknowledged, never delivered: {missing}") from exc
    # The socket that stayed on B saw every seq once, in order, without a gap. Its tail may stop
    # short of the last stored seq: A can die after storing a message and before publishing it;
    # that message was never acked, so its sender's retry (same client_id) publishes it.
    on_b = bob_b.message_seqs(room)
    assert on_b == list(range(1, len(on_b) + 1))
    assert len(on_b) >= max(acked)


async def test_lost_pubsub_keeps_sockets_open_and_catches_them_up_in_order(
    chat_server_factory: ChatServerFactory, redis_url: str
) -> None:
    """Losing pub/sub costs live fan-out for a moment, never a socket or a message: the sockets
    stay open (also one opened while pub/sub is recovering) and, once the connection is back,
    each is caught up from MongoDB, every seq once and in order."""
    a, b = chat_server_factory.start_many(2)
    alice, bob = await register(a.url), await register(a.url)
    room = await create_group(a.url, alice, [bob])
    sender = await connect_user(a.ws_url, alice)
    listener = await connect_user(b.ws_url, bob, resume={room: 0})
    first = await sender.send_message(room, "before")
    await listener.until(lambda f: f.get("type") == "message" and f["seq"] == first["seq"])
    resyncs_before = await metric(b.url, "hypersend_pubsub_resyncs_total")
    admin = redis.Redis.from_url(redis_url)
    try:
        # Every pub/sub connection (both servers') drops, as in a Redis failover.
        assert admin.client_kill_filter(_type="pubsub") >= 2
    finally:
        admin.close()
    # Opened while B's pub/sub is recovering (this socket used to be closed with 4503).
    late = await connect_user(b.ws_url, bob, resume={room: 0})
    acked = [int(first["seq"])]
    # Send until B has resynced, so some messages were published while it was not listening.
    while await metric(b.url, "hypersend_pubsub_resyncs_total") <= resyncs_before:
        ack = await sender.send_message(room, f"m{len(acked)}")
        assert ack["type"] == "ack", ack
        acked.append(int(ack["seq"]))
    for i in range(3):
        acked.append(int((await sender.send_message(room, f"after{i}"))["seq"]))
    assert acked == list(range(1, len(acked) + 1))
    for client in (listener, late):
        await client.until(lambda f: f.get("type") == "message" and f["seq"] == acked[-1], 30)
        assert client.message_seqs(room) == acked
        assert client.ws.close_code is None


async def test_mongodb_lost_during_a_resume_closes_with_1011_instead_of_going_live_with_a_gap(
    chat_server_factory: ChatServerFactory,
) -> None:
    with FerretDBServer() as mongo:  # this test's own, so stopping it harms no other test
        server = chat_server_factory.start(mongo_url=mongo.url)
        alice, bob = await register(server.url), await register(server.url)
        room = await create_group(server.url, alice, [bob])
        sender = await connect_user(server.ws_url, alice)
        for i in range(3):
            assert (await sender.send_message(room, f"m{i}"))["type"] == "ack"
        late = await open_socket(server.ws_url, bob.token)
        await late.until_type("ready")
        mongo.stop()
        await late.send({"type": "resume", "rooms": {room: 0}})
        code, reason = await late.closed(wait=30)
    assert code == 1011
    assert reason is not None
    assert "resume" in reason
    assert not [f for f in late.frames if f["type"] in ("resumed", "message")]


async def test_a_socket_whose_gap_fill_fails_is_shed_with_a_reconnect_hint_then_1011(
    chat_server_factory: ChatServerFactory,
) -> None:
    with FerretDBServer() as mongo:  # this test's own, so stopping it harms no other test
        server = chat_server_factory.start(mongo_url=mongo.url)
        alice, bob = await register(server.url), await register(server.url)
        room = await create_group(server.url, alice, [bob])
        listener = await connect_user(server.ws_url, bob, resume={room: 0})
        mongo.stop()
        # A message two seqs ahead of what the socket has: it is held back and the gap must be
        # read from MongoDB, which is gone.
        ahead = {"type": "message", "room_id": room, "seq": 2, "message": {"seq": 2}}
        admin = redis.Redis.from_url(chat_server_factory.base_env["HYPERSEND_REDIS_URL"])
        try:
            channel = f"{chat_server_factory.redis_prefix}room:{room}"
            assert admin.publish(channel, envelope(ahead)) == 1
        finally:
            admin.close()
        hint = await listener.until_type("reconnect", wait=30)
        assert 250 <= hint["after_ms"] <= 5000
        code, reason = await listener.closed(wait=30)
    assert code == 1011
    assert reason is not None
    assert "resume" in reason
    assert not listener.message_seqs(room)


async def test_typing_read_and_presence_reach_the_other_members(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob = await register(a.url), await register(a.url)
    room = await create_group(a.url, alice, [bob])
    on_a = await connect_user(a.ws_url, alice)
    on_b = await connect_user(b.ws_url, bob)
    online = await on_a.until(lambda f: f.get("type") == "presence" and f["user_id"] == bob.id)
    assert online["online"] is True

    await on_b.send({"type": "typing", "room_id": room})
    typing = await on_a.until_type("typing")
    assert (typing["room_id"], typing["user_id"]) == (room, bob.id)

    ack = await on_a.send_message(room, "read me")
    await on_b.until_type("message")
    await on_b.send({"type": "read", "room_id": room, "seq": ack["seq"]})
    read = await on_a.until_type("read")
    assert (read["user_id"], read["seq"]) == (bob.id, ack["seq"])
    await on_b.send({"type": "read", "room_id": room, "seq": ack["seq"] + 5})
    assert (await on_b.until_type("error"))["code"] == "invalid_seq"
    # Nobody is told about their own typing.
    assert not [f for f in on_b.frames if f["type"] == "typing"]

    await on_b.close()
    offline = await on_a.until(
        lambda f: f.get("type") == "presence" and f["user_id"] == bob.id and not f["online"]
    )
    assert offline["online"] is False


async def test_removed_member_stops_receiving_and_added_member_catches_up(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob, carol = [await register(a.url) for _ in range(3)]
    room = await create_group(a.url, alice, [bob])
    on_a = await connect_user(a.ws_url, alice)
    bob_b = await connect_user(b.ws_url, bob)
    carol_b = await connect_user(b.ws_url, carol)
    first = await on_a.send_message(room, "one")
    await bob_b.until_type("message")

    rest = rest_as(a.url, alice)
    try:
        await rest.remove_member(room, bob.id)
        assert (await bob_b.until_type("room_removed"))["room_id"] == room
        added = await rest.add_member(room, carol.id)
        assert (added.room_id, added.user_id, added.role) == (room, carol.id, "member")
    finally:
        await rest.aclose()
    assert (await carol_b.until_type("room_added"))["room_id"] == room

    second = await on_a.send_message(room, "two")
    frame = await carol_b.until_type("message")
    assert frame["seq"] == second["seq"] == first["seq"] + 1
    # B has fanned "two" out (carol has it); bob's socket would have had it queued before the
    # answer to a frame he sends now.
    await bob_b.send({"type": "send", "room_id": room, "client_id": "x", "text": "hey"})
    assert (await bob_b.until_type("error"))["code"] == "not_member"
    assert bob_b.message_seqs(room) == [first["seq"]]
