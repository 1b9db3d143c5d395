"""Issue #11: whoever can publish to Redis cannot widen what a socket sees.

An attacker with a raw Redis client (any pod that reaches Redis) publishes forged events on a
user's and a room's channels. The server takes membership only from MongoDB, so nothing of a
room the user is not a member of reaches the socket, and a forged removal does not cut a member
off. Each wait is for a frame that a legitimate event sends after the forged ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.fixtures.chat import ChatServerProcess
from tests.integration.chatserver.realtime_client import (
    Account,
    connect_user,
    create_group,
    metric,
    register,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _forge(client: aioredis.Redis, channel: str, event: dict[str, Any]) -> None:
    # The envelope the servers publish (chatserver.bus.envelope), written by hand as an
    # attacker would.
    payload = json.dumps({"ts": time.time(), "event": event})
    await client.publish(channel, payload)


async def _post_message(server: ChatServerProcess, who: Account, room_id: str, text: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=20) as http:
        response = await http.post(
            f"/api/v1/rooms/{room_id}/messages",
            json={"client_id": f"c{time.monotonic_ns()}", "text": text},
            headers={"Authorization": f"Bearer {who.token}"},
        )
        response.raise_for_status()


async def test_forged_bus_events_leak_nothing(
    chat_server: ChatServerProcess, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    alice = await register(chat_server.url, "alice")
    eve = await register(chat_server.url, "eve")
    secret = await create_group(chat_server.url, alice, [])
    await _post_message(chat_server, alice, secret, "s3cret")
    shared = await create_group(chat_server.url, alice, [eve])

    sock = await connect_user(chat_server.ws_url, eve)
    assert sock.ready is not None
    assert sock.ready["rooms"] == [shared]
    refused_before = await metric(chat_server.url, "hypersend_bus_events_refused_total")

    user_channel = f"{redis_prefix}user:{eve.id}"
    room_channel = f"{redis_prefix}room:{shared}"
    forged_room = {"id": secret, "kind": "group", "name": "room", "last_seq": 0}
    # 1. "You became a member of the secret room": follow it and replay its history from seq 0.
    await _forge(
        raw_redis, user_channel, {"type": "room_added", "room_id": secret, "room": forged_room}
    )
    # 2. Any other frame pushed straight to the user.
    await _forge(
        raw_redis,
        user_channel,
        {"type": "message", "room_id": secret, "seq": 9, "message": {"text": "forged-user"}},
    )
    # 3. Membership and foreign-room events on a room channel the socket does follow.
    await _forge(
        raw_redis, room_channel, {"type": "room_added", "room_id": secret, "room": forged_room}
    )
    await _forge(
        raw_redis,
        room_channel,
        {"type": "message", "room_id": secret, "seq": 1, "message": {"text": "forged-room"}},
    )
    # 4. "You were removed from the shared room" while MongoDB says eve is still a member.
    await _forge(raw_redis, user_channel, {"type": "room_removed", "room_id": shared})

    # A real membership change on the same user channel, after the forged ones: the server
    # handles a socket's membership events in order, so once it arrives they were all handled.
    third = await create_group(chat_server.url, alice, [eve])
    added = await sock.until(lambda f: f.get("type") == "room_added" and f["room_id"] == third)
    assert added["room"]["id"] == third
    # A real message on the room channel, after the forged ones there.
    await _post_message(chat_server, alice, shared, "after the forgeries")
    await sock.until(lambda f: f.get("type") == "message" and f["room_id"] == shared)

    # The forged removal did not cut eve off: the next message of the shared room still comes.
    await _post_message(chat_server, alice, shared, "still a member")
    got = await sock.until(lambda f: f.get("type") == "message" and f["room_id"] == shared)
    assert got["message"]["text"] == "still a member"

    leaked = [
        frame
        for frame in sock.frames
        if secret in json.dumps(frame) or "forged" in json.dumps(frame)
    ]
    assert leaked == []
    assert not any(f.get("type") == "room_removed" for f in sock.frames)

    # The socket still refuses the secret room when asked directly.
    await sock.send({"type": "resume", "rooms": {secret: 0}})
    refused = await sock.until(lambda f: f.get("type") == "error" and f["code"] == "not_member")
    assert refused["room_ids"] == [secret]
    refused_after = await metric(chat_server.url, "hypersend_bus_events_refused_total")
    assert refused_after >= refused_before + 5
    await sock.close()


async def test_stale_room_added_after_removal_is_not_followed(
    chat_server: ChatServerProcess, raw_redis: aioredis.Redis, redis_prefix: str
) -> None:
    """A genuine-looking ``room_added`` replayed after the user left (a copy an attacker kept)."""
    alice = await register(chat_server.url, "alice")
    bob = await register(chat_server.url, "bob")
    room = await create_group(chat_server.url, alice, [bob])
    sock = await connect_user(chat_server.ws_url, bob)
    async with httpx.AsyncClient(base_url=chat_server.url, trust_env=False, timeout=20) as http:
        response = await http.post(
            f"/api/v1/rooms/{room}/leave", headers={"Authorization": f"Bearer {bob.token}"}
        )
        assert response.status_code == 204
    await sock.until(lambda f: f.get("type") == "room_removed" and f["room_id"] == room)

    await _forge(
        raw_redis,
        f"{redis_prefix}user:{bob.id}",
        {"type": "room_added", "room_id": room, "room": {"id": room, "last_seq": 0}},
    )
    barrier = await create_group(chat_server.url, alice, [bob])
    await sock.until(lambda f: f.get("type") == "room_added" and f["room_id"] == barrier)
    await _post_message(chat_server, alice, room, "after bob left")
    await _post_message(chat_server, alice, barrier, "barrier")
    await sock.until(lambda f: f.get("type") == "message" and f["room_id"] == barrier)
    assert not [f for f in sock.frames if f.get("type") == "room_added" and f["room_id"] == room]
    assert sock.message_seqs(room) == []
    await sock.close()
