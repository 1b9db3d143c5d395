"""Limits, bad input and drain on real server processes: each gets its documented answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import jwt
import pytest
from hypersend_client import CloseError
from hypersend_devenv.datastores import FerretDBServer

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import (
    Client,
    connect_user,
    create_group,
    history,
    open_socket,
    register,
    until_metric,
)

pytestmark = pytest.mark.integration


def _token(secret: str, sub: str, *, expires_in: int) -> str:
    now = int(time.time())
    claims = {"sub": sub, "typ": "access", "iat": now - 60, "exp": now + expires_in}
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_rate_limit_holds_across_both_processes(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2, rate_limit_per_minute=10)
    alice, bob = await register(a.url), await register(b.url)
    # Bob creates the room: REST requests count against the same per-user budget.
    room = await create_group(a.url, bob, [alice])
    on_a = await connect_user(a.ws_url, alice)
    on_b = await connect_user(b.ws_url, alice)
    replies = []
    for i in range(8):
        for client in (on_a, on_b):
            replies.append(await client.send_message(room, f"m{i}"))
    acks = [r for r in replies if r["type"] == "ack"]
    limited = [r for r in replies if r["type"] == "error"]
    assert len(acks) == 10
    assert len(limited) == 6
    assert {r["code"] for r in limited} == {"rate_limited"}
    assert all(0 < r["retry_after"] <= 60 for r in limited)
    assert len(await history(a.url, bob, room)) == 10
    # Another user has their own budget.
    bob_b = await connect_user(b.ws_url, bob)
    assert (await bob_b.send_message(room, "mine"))["type"] == "ack"


async def test_a_user_over_the_limit_still_resumes_on_reconnect_but_not_twice(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(rate_limit_per_minute=6)
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, bob, [alice])
    sender = await connect_user(server.ws_url, alice)
    replies = [await sender.send_message(room, f"m{i}") for i in range(8)]
    assert {r["code"] for r in replies if r["type"] == "error"} == {"rate_limited"}
    acked = [r["seq"] for r in replies if r["type"] == "ack"]
    assert acked == list(range(1, len(acked) + 1))
    assert len(acked) == 6

    # Alice's budget is spent; her reconnect's resume is part of connecting and still replays.
    again = await connect_user(server.ws_url, alice, resume={room: 2})
    resumed = next(f for f in again.frames if f["type"] == "resumed")
    assert resumed["rooms"] == {room: 6}
    assert again.message_seqs(room) == [3, 4, 5, 6]
    # A second resume on the same socket is an ordinary request: refused while over the limit.
    await again.send({"type": "resume", "rooms": {room: 0}})
    error = await again.until_type("error")
    assert error["code"] == "rate_limited"
    assert error["retry_after"] > 0
    assert again.message_seqs(room) == [3, 4, 5, 6]
    # Live delivery still works on that socket.
    bob_ws = await connect_user(server.ws_url, bob)
    ack = await bob_ws.send_message(room, "live")
    live = await again.until(lambda f: f.get("type") == "message" and f["seq"] == ack["seq"])
    assert again.message_seqs(room) == [3, 4, 5, 6, 7]
    assert live["seq"] == 7

    # The opening resume still counts: Bob has spent 2 (create room, send); with his resume
    # that is 3, so 3 more sends pass and the next one is refused.
    bob_again = await connect_user(server.ws_url, bob, resume={room: 7})
    replies = [await bob_again.send_message(room, f"b{i}") for i in range(4)]
    assert [r["type"] for r in replies] == ["ack", "ack", "ack", "error"]
    assert replies[-1]["code"] == "rate_limited"


async def test_bad_frames_get_error_frames_and_nothing_is_stored(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(max_message_bytes=1000)
    alice, bob, mallory = [await register(server.url) for _ in range(3)]
    room = await create_group(server.url, alice, [bob])
    client = await connect_user(server.ws_url, alice)
    bob_ws = await connect_user(server.ws_url, bob)

    async def error_for(raw: str) -> str:
        await client.send(raw)
        return str((await client.until_type("error"))["code"])

    assert await error_for("{not json") == "invalid_json"
    assert await error_for("[1, 2]") == "invalid_frame"
    assert await error_for('{"type": "subscribe_all"}') == "unknown_type"
    big = {"type": "send", "room_id": room, "client_id": "big", "text": "z" * 1500}
    assert await error_for(json.dumps(big)) == "message_too_large"
    empty = {"type": "send", "room_id": room, "client_id": "empty", "text": " "}
    assert await error_for(json.dumps(empty)) == "empty_message"
    assert await error_for('{"type": "send", "room_id": "r"}') == "invalid_frame"
    await client.send({"type": "ping"})
    await client.until_type("pong")

    # A non-member can neither resume, send, type nor mark read in the room.
    outsider = await connect_user(server.ws_url, mallory)
    await outsider.send({"type": "resume", "rooms": {room: 0}})
    refused = await outsider.until_type("error")
    assert (refused["code"], refused["room_ids"]) == ("not_member", [room])
    assert (await outsider.until_type("resumed"))["rooms"] == {}
    reply = await outsider.send_message(room, "let me in", client_id="intruder")
    assert (reply["type"], reply["code"]) == ("error", "not_member")
    await outsider.send({"type": "typing", "room_id": room})
    assert (await outsider.until_type("error"))["code"] == "not_member"
    await outsider.send({"type": "read", "room_id": room, "seq": 1})
    assert (await outsider.until_type("error"))["code"] == "not_member"

    assert await history(server.url, alice, room) == []
    # The server keeps serving everyone, including the sockets that sent garbage.
    ack = await client.send_message(room, "still here")
    assert ack["type"] == "ack"
    assert (await bob_ws.until_type("message"))["seq"] == ack["seq"]
    assert [f["type"] for f in bob_ws.frames if f["type"] in ("message", "error")] == ["message"]

    # A frame beyond the frame limit (6 x max_message_bytes + 16 KiB) closes that socket: 1009.
    await client.send(json.dumps({"type": "send", "pad": "y" * 40_000}))
    assert (await client.closed())[0] == 1009
    again = await connect_user(server.ws_url, alice)
    assert (await again.send_message(room, "after the big one"))["type"] == "ack"
    assert len(await history(server.url, alice, room)) == 2


async def _close_of(client: Client) -> tuple[int | None, str | None]:
    return await client.closed(wait=15)


async def test_bad_or_missing_tokens_close_with_documented_codes(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start()
    alice = await register(server.url)
    secret = chat_server_factory.jwt_secret

    no_auth = await open_socket(server.ws_url)
    await no_auth.send({"type": "ping"})
    assert (await _close_of(no_auth))[0] == 4400

    garbage = await open_socket(server.ws_url)
    await garbage.send("{{{")
    assert (await _close_of(garbage))[0] == 4400

    missing = await open_socket(server.ws_url)
    await missing.send({"type": "auth"})
    assert (await _close_of(missing))[0] == 4400

    empty = await open_socket(server.ws_url, "")
    assert (await _close_of(empty))[0] == 4401
    assert any(f.get("code") == "unauthorized" for f in empty.frames)

    expired = await open_socket(server.ws_url, _token(secret, alice.id, expires_in=-10))
    code, reason = await _close_of(expired)
    assert code == 4401
    assert reason is not None
    assert "expired" in reason

    forged = await open_socket(server.ws_url, _token("x" * 40, alice.id, expires_in=600))
    assert (await _close_of(forged))[0] == 4401

    in_query = await open_socket(server.ws_url, "not-a-jwt", query=True)
    assert (await _close_of(in_query))[0] == 4401

    good = await open_socket(server.ws_url, alice.token, query=True)
    assert (await good.until_type("ready"))["user_id"] == alice.id


async def test_idle_sockets_are_pinged_then_closed(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(ws_ping_interval_seconds=0.3, ws_idle_timeout_seconds=2)
    alice, bob = await register(server.url), await register(server.url)
    silent = await connect_user(server.ws_url, alice)
    chatty = await connect_user(server.ws_url, bob)
    started = time.monotonic()
    while time.monotonic() - started < 3.5:
        await chatty.until_type("ping", wait=2)
        await chatty.send({"type": "pong"})
    code, _ = await silent.closed(wait=5)
    assert code == 4410
    assert any(f["type"] == "ping" for f in silent.frames)
    await chatty.send({"type": "ping"})
    await chatty.until_type("pong")


async def test_a_socket_waiting_on_a_slow_store_is_not_closed_as_idle(
    chat_server_factory: ChatServerFactory,
) -> None:
    """The server is not reading while it handles a frame, so the client's next frames (its
    pongs) wait in the socket: that is the server's slowness, not an idle client."""
    # Long enough that this test's own client, starved of CPU on a loaded machine, still answers
    # a ping in time before the send (closed as idle there, the send could prove nothing).
    idle = 3.0
    with FerretDBServer() as mongo:  # this test's own: freezing it harms no other test
        assert mongo.process is not None
        server = chat_server_factory.start(
            mongo_url=mongo.url, ws_ping_interval_seconds=0.3, ws_idle_timeout_seconds=idle
        )
        alice, bob = await register(server.url), await register(server.url)
        room = await create_group(server.url, alice, [bob])
        client = await connect_user(server.ws_url, alice)
        os.kill(mongo.process.pid, signal.SIGSTOP)
        try:
            await client.send({"type": "send", "room_id": room, "client_id": "c1", "text": "hi"})
            sent = time.monotonic()
            # Pings keep coming while the send waits on the frozen store; stay frozen until the
            # server's idle check has passed well beyond the timeout (the pass that would close).
            while time.monotonic() - sent < 2 * idle:
                await client.until_type("ping", wait=5)
        finally:
            os.kill(mongo.process.pid, signal.SIGCONT)
        ack = await client.until(lambda f: f.get("client_id") == "c1", wait=30)
        assert ack["type"] == "ack", ack
        assert client.ws.close_code is None


async def test_connections_over_the_per_process_limit_are_refused(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(ws_max_connections=2)
    alice = await register(server.url)
    first = await connect_user(server.ws_url, alice)
    await connect_user(server.ws_url, alice)
    # Only authenticated sockets count (issue #11): an unauthenticated one is let in ...
    pending = await open_socket(server.ws_url)
    # ... and the third to authenticate is refused.
    third = await open_socket(server.ws_url, alice.token)
    assert (await third.closed())[0] == 1013
    await pending.send({"type": "auth", "token": alice.token})
    assert (await pending.closed())[0] == 1013
    await first.close()
    # The closed socket is no longer counted.
    await until_metric(server.url, "hypersend_websocket_connections", lambda n: n == 1, wait=10)
    await connect_user(server.ws_url, alice)


async def test_drain_sends_reconnect_then_closes_with_1012_and_readiness_fails(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(drain_delay_seconds=1.5, drain_batch_size=1)
    alice, bob = await register(server.url), await register(server.url)
    clients = [await connect_user(server.ws_url, user) for user in (alice, bob, alice)]
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        assert (await http.get("/readyz")).status_code == 200
        server.terminate()
        # Readiness fails once the signal reaches the event loop (a request answered before
        # that is no failure), then stays failed through the drain delay, until the sockets
        # are told to reconnect.
        deadline = time.monotonic() + 10
        while (status := (await http.get("/readyz")).status_code) != 503:
            assert time.monotonic() < deadline, "readiness never failed"
            await asyncio.sleep(0.05)
        first_hint = asyncio.create_task(clients[0].until_type("reconnect", wait=10))
        statuses = {status}
        while not first_hint.done():
            statuses.add((await http.get("/readyz")).status_code)
            await asyncio.sleep(0.05)
        hints = [await first_hint]
    assert statuses == {503}
    hints += [await client.until_type("reconnect", wait=10) for client in clients[1:]]
    for client, hint in zip(clients, hints, strict=True):
        assert 250 <= hint["after_ms"] <= 5000
        code, _ = await client.closed(wait=10)
        assert code == 1012
    assert server.wait(15) == 0


async def test_other_sockets_survive_a_client_that_vanishes(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start()
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    gone = await connect_user(server.ws_url, bob)
    await gone.abort()
    bob_ws = await connect_user(server.ws_url, bob)
    ack = await (await connect_user(server.ws_url, alice)).send_message(room, "hi")
    assert (await bob_ws.until_type("message"))["seq"] == ack["seq"]
    with pytest.raises(CloseError):
        await gone.ws.send("{}")


async def test_a_socket_that_never_authenticates_is_closed(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start()
    silent = await open_socket(server.ws_url)
    code, _ = await silent.closed(wait=20)  # the auth timeout is 10 s
    assert code == 4408
