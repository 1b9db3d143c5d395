"""Issue #16: no MongoDB round trip per message for the sender's membership, and no weaker
security for it.

A socket sends to the rooms it follows without a store check (they were read from MongoDB and
are dropped on removal, chatserver/realtime.py `Session.trusts`); every other send (REST, a room
the socket does not follow) is checked by the group commit in one find per batch
(chatserver/store.py `append_message(check_member=True)`). A removed member can post neither on
the pod that removed them nor on another, and a removal whose bus event was lost is found by the
periodic recheck (HYPERSEND_MEMBERSHIP_RECHECK_SECONDS) in the removal log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pymongo
import pytest
import redis
import redis.asyncio as aioredis
from hypersend_client import ApiError

from chatserver.store import NotMember, Store, member_id
from tests.fixtures.chat import ChatServerFactory, ChatServerProcess
from tests.integration.chatserver.realtime_client import (
    Account,
    Client,
    connect_user,
    create_group,
    history,
    metric,
    register,
    rest_as,
    until_metric,
)

pytestmark = pytest.mark.integration

SENDS = 40


@pytest.fixture
def db(mongo_url: str, mongo_db_name: str) -> Iterator[Any]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    yield client[mongo_db_name]
    client.close()


async def _commands(server: ChatServerProcess, command: str) -> float:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=20) as http:
        text = (await http.get("/metrics")).text
    prefix = f'hypersend_mongo_commands_total{{command="{command}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def _refused(sock: Client, room_id: str) -> None:
    answer = await sock.send_message(room_id, "after the removal")
    assert answer["type"] == "error", answer
    assert answer["code"] == "not_member"


async def test_checked_sends_of_a_batch_share_one_membership_read(stores: list[Store]) -> None:
    store = stores[0]
    rooms = [(await store.create_group_room("owner", f"r{i}", ["bob"])).id for i in range(10)]
    stranger = await store.create_group_room("owner", "private", [])

    async def send(i: int) -> Any:
        room, user = rooms[i % len(rooms)], ("owner", "bob")[i % 2]
        return await store.append_message(room, user, f"c{i}", "x", check_member=True)

    results = await asyncio.gather(
        *(send(i) for i in range(200)),
        store.append_message(stranger.id, "bob", "intruder", "x", check_member=True),
        return_exceptions=True,
    )
    assert isinstance(results[-1], NotMember)
    assert all(isinstance(r, tuple) and r[1] for r in results[:-1]), results[:-1]
    assert await store.messages_after(stranger.id, 0, 10) == []
    for room in rooms:
        seqs = [m.seq for m in await store.messages_after(room, 0, 100)]
        assert seqs == list(range(1, 21))


async def test_every_removal_is_logged_until_pruned(stores: list[Store]) -> None:
    store = stores[0]
    room = (await store.create_group_room("owner", "logged", ["bob", "carol"])).id
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert await store.remove_member(room, "bob")
    assert not await store.remove_member(room, "nobody")  # logged too: a check costs little
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert await stores[1].removals_since(before) >= {(room, "bob"), (room, "nobody")}
    assert (room, "carol") not in await stores[1].removals_since(before)
    assert await stores[1].removals_since(after) == set()
    await store.prune_removals(after)
    assert await stores[1].removals_since(before) == set()


async def test_a_socket_sends_without_a_find_per_message(chat_server: ChatServerProcess) -> None:
    alice = await register(chat_server.url, "alice")
    room = await create_group(chat_server.url, alice, [])
    sock = await connect_user(chat_server.ws_url, alice)
    await sock.send_message(room, "warm")  # the room's seq is known to the process from now on
    before = await _commands(chat_server, "find")
    for i in range(SENDS):
        answer = await sock.send_message(room, f"m{i}")
        assert answer["type"] == "ack", answer
    finds = await _commands(chat_server, "find") - before
    # A membership find per message (the code before issue #16's fix) is SENDS finds.
    assert finds < SENDS / 4, f"{finds} finds for {SENDS} messages"
    assert await history(chat_server.url, alice, room) == list(range(1, SENDS + 2))
    await sock.close()


async def test_a_removed_member_cannot_post_on_this_pod_or_another(
    chat_server_factory: ChatServerFactory,
) -> None:
    one, two = chat_server_factory.start_many(2)
    alice = await register(one.url, "alice")
    bob = await register(one.url, "bob")
    room = await create_group(one.url, alice, [bob])
    here = await connect_user(one.ws_url, bob)
    there = await connect_user(two.ws_url, bob)
    for sock in (here, there):
        assert (await sock.send_message(room, "while a member"))["type"] == "ack"

    owner = rest_as(one.url, alice)
    try:
        await owner.remove_member(room, bob.id)
    finally:
        await owner.aclose()
    for sock in (here, there):
        await sock.until(lambda f: f.get("type") == "room_removed" and f["room_id"] == room)
        await _refused(sock, room)
    rest = rest_as(two.url, bob)
    try:
        with pytest.raises(ApiError) as refused:
            await rest.post_message(room, "over REST")
        assert (refused.value.status, refused.value.code) == (404, "room_not_found")
    finally:
        await rest.aclose()
    assert await history(one.url, alice, room) == [1, 2]
    await here.close()
    await there.close()


async def _passes(server: ChatServerProcess, count: int) -> None:
    """Wait until the server's membership recheck has run ``count`` more passes."""
    name = "hypersend_membership_rechecks_total"
    target = await metric(server.url, name) + count
    await until_metric(server.url, name, lambda passes: passes >= target, wait=30)


async def _receives_no_more(
    server: ChatServerProcess, alice: Account, bob: Account, sock: Client, room: str
) -> None:
    """A later message of alice's in ``room`` reaches bob's socket not (a barrier room shows
    that the messages sent after it were delivered)."""
    barrier = await create_group(server.url, alice, [bob])
    await sock.until(lambda f: f.get("type") == "room_added" and f["room_id"] == barrier)
    alice_sock = await connect_user(server.ws_url, alice)
    assert (await alice_sock.send_message(room, "secret"))["type"] == "ack"
    assert (await alice_sock.send_message(barrier, "barrier"))["type"] == "ack"
    await sock.until(lambda f: f.get("type") == "message" and f["room_id"] == barrier)
    assert sock.message_seqs(room) == [1]  # bob's own, before the removal
    await alice_sock.close()


async def test_a_lost_removal_event_is_found_in_the_removal_log(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(membership_recheck_seconds=0.5)
    # The remover's events go to another Redis key space: they reach nobody (as when the
    # remover cannot reach Redis), and only the removal log tells the server.
    remover = chat_server_factory.start(redis_prefix=f"{chat_server_factory.redis_prefix}lost:")
    alice = await register(server.url, "alice")
    bob = await register(server.url, "bob")
    room = await create_group(server.url, alice, [bob])
    sock = await connect_user(server.ws_url, bob)
    assert (await sock.send_message(room, "while a member"))["type"] == "ack"
    # A pass that finds nothing removed leaves the socket alone.
    await _passes(server, 2)
    assert not [f for f in sock.frames if f.get("type") == "room_removed"]
    assert await metric(server.url, "hypersend_membership_lapsed_total") == 0

    owner = rest_as(remover.url, alice)
    try:
        await owner.remove_member(room, bob.id)
    finally:
        await owner.aclose()
    await sock.until(lambda f: f.get("type") == "room_removed" and f["room_id"] == room, wait=30)
    await _refused(sock, room)
    assert await metric(server.url, "hypersend_membership_lapsed_total") == 1
    # Found by reading the log, not every membership.
    assert await metric(server.url, "hypersend_membership_full_rechecks_total") == 0
    await _receives_no_more(server, alice, bob, sock, room)
    await sock.close()


async def test_pub_sub_coming_back_rechecks_every_followed_membership(
    chat_server_factory: ChatServerFactory, db: Any, redis_url: str
) -> None:
    """Removal events published while pub/sub was down are lost for the whole process, so it
    reads every membership its sockets follow, not only the removal log."""
    server = chat_server_factory.start(membership_recheck_seconds=0.5)
    alice = await register(server.url, "alice")
    bob = await register(server.url, "bob")
    room = await create_group(server.url, alice, [bob])
    sock = await connect_user(server.ws_url, bob)
    assert (await sock.send_message(room, "while a member"))["type"] == "ack"

    # Removed in MongoDB with neither an event nor a log entry: the log passes miss it ...
    assert db.members.delete_one({"_id": member_id(room, bob.id)}).deleted_count == 1
    await _passes(server, 2)
    assert not [f for f in sock.frames if f.get("type") == "room_removed"]
    # ... and the full pass after pub/sub came back finds it.
    admin = redis.Redis.from_url(redis_url)
    try:
        assert admin.client_kill_filter(_type="pubsub") >= 1
    finally:
        admin.close()
    await sock.until(lambda f: f.get("type") == "room_removed" and f["room_id"] == room, wait=30)
    await _refused(sock, room)
    assert await metric(server.url, "hypersend_membership_lapsed_total") == 1
    assert await metric(server.url, "hypersend_membership_full_rechecks_total") >= 1
    await _receives_no_more(server, alice, bob, sock, room)
    await sock.close()


async def test_a_forged_removal_does_not_stop_a_member_sending(
    chat_server: ChatServerProcess, redis_url: str, redis_prefix: str
) -> None:
    alice = await register(chat_server.url, "alice")
    room = await create_group(chat_server.url, alice, [])
    sock = await connect_user(chat_server.ws_url, alice)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        payload = {"ts": time.time(), "event": {"type": "room_removed", "room_id": room}}
        await raw.publish(f"{redis_prefix}user:{alice.id}", json.dumps(payload))
    finally:
        await raw.aclose()
    for i in range(5):  # whether the doubt is still open or checked already: stored
        assert (await sock.send_message(room, f"m{i}"))["type"] == "ack"
    barrier = await create_group(chat_server.url, alice, [])
    await sock.until(lambda f: f.get("type") == "room_added" and f["room_id"] == barrier)
    assert (await sock.send_message(room, "after the check"))["type"] == "ack"
    assert not [f for f in sock.frames if f.get("type") == "room_removed"]
    await sock.close()


async def test_a_socket_may_send_to_a_room_it_does_not_follow_yet(
    chat_server: ChatServerProcess, db: Any
) -> None:
    """A membership made while the socket was open, whose ``room_added`` has not been handled:
    the store checks it (one find in the batch) instead of refusing."""
    alice = await register(chat_server.url, "alice")
    bob = await register(chat_server.url, "bob")
    sock = await connect_user(chat_server.ws_url, bob)
    room = await create_group(chat_server.url, alice, [])
    db.members.insert_one(
        {
            "_id": member_id(room, bob.id),
            "room_id": room,
            "user_id": bob.id,
            "role": "member",
            "joined_at": db.rooms.find_one({"_id": room})["created_at"],
            "last_read_seq": 0,
        }
    )
    assert (await sock.send_message(room, "hi"))["type"] == "ack"
    other = await create_group(chat_server.url, alice, [])
    await _refused(sock, other)
    await sock.close()
