"""hypersend_client against real chat server processes (Redis + FerretDB, loopback).

What the client promises (clients/python/hypersend_client/client.py): reconnects by itself
(the server's ``reconnect`` hint, else jittered backoff), resumes from the last seq per room
with nothing lost and nothing twice, repeats a send until acknowledged, refreshes the access
token before it expires, and raises one error type per close code.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest
from hypersend_client import (
    AuthError,
    Client,
    FrameSocket,
    SendError,
    TransportError,
    errors,
    events,
)

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess

pytestmark = pytest.mark.integration

PASSWORD = "correct horse 1"
WAIT = 30.0
E = TypeVar("E", bound=events.Event)


class Recorder:
    """Every event of one client, kept in order, with a way to wait for a condition on them."""

    def __init__(self) -> None:
        self.seen: list[events.Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: events.Event) -> None:
        self.seen.append(event)
        self._changed.set()

    async def until(
        self, condition: Callable[[list[events.Event]], bool], within: float = WAIT
    ) -> None:
        async with asyncio.timeout(within):
            while not condition(self.seen):
                self._changed.clear()
                await self._changed.wait()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.seen if isinstance(e, kind)]

    def texts(self, room_id: str) -> list[str]:
        return [
            e.message.text
            for e in self.seen
            if isinstance(e, events.MessageEvent) and e.room_id == room_id
        ]


async def signed_up(server: ChatServerProcess, recorder: Recorder | None = None) -> Client:
    client = Client(server.url, on_event=recorder)
    await client.register(f"c{secrets.token_hex(5)}", PASSWORD)
    return client


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients a test opens; all closed afterwards."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


async def test_two_clients_chat_and_the_sender_gets_the_stored_message(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    server = chat_server_factory.start()
    alice, bob = Recorder(), Recorder()
    a, b = await signed_up(server, alice), await signed_up(server, bob)
    clients += [a, b]
    assert b.user_id is not None
    room = await a.rest.create_group("team", [b.user_id])
    await asyncio.gather(a.start(), b.start())
    assert room.id in a.rooms

    stored = await a.send(room.id, "hello bob")
    assert (stored.room_id, stored.seq, stored.text, stored.sender_id) == (
        room.id,
        1,
        "hello bob",
        a.user_id,
    )
    await bob.until(lambda _: bob.texts(room.id) == ["hello bob"])
    await alice.until(lambda _: alice.texts(room.id) == ["hello bob"])

    # The REST half: history, members, login with the same password.
    page = await b.rest.history(room.id)
    assert [m.text for m in page.messages] == ["hello bob"]
    assert {m.user_id for m in await a.rest.members(room.id)} == {a.user_id, b.user_id}
    again = Client(server.url)
    clients.append(again)
    assert await again.login(b.rest.user.username if b.rest.user else "", PASSWORD) == b.user_id


async def test_drain_reconnects_after_the_hint_and_resumes_with_nothing_lost_or_doubled(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    a, b = chat_server_factory.start_many(2)
    alice, bob = Recorder(), Recorder()
    on_a, on_b = await signed_up(a, alice), await signed_up(b, bob)
    clients += [on_a, on_b]
    assert on_b.user_id is not None
    room = await on_a.rest.create_group("drain", [on_b.user_id])
    await asyncio.gather(on_a.start(), on_b.start())
    for i in range(3):
        await on_b.send(room.id, f"before {i}")
    await alice.until(lambda _: len(alice.texts(room.id)) == 3)

    # SIGTERM: the server sends `reconnect` with a jittered after_ms, then closes with 1012.
    await asyncio.to_thread(a.stop)
    await alice.until(lambda seen: bool(alice.of(events.Reconnecting)))
    first = alice.of(events.Reconnecting)[0]
    assert isinstance(first.error, errors.ServerRestarting)
    assert 0.25 <= first.delay <= 5.0  # the server's hint (docs/protocol.md), not our backoff

    # While alice is away: bob writes, and alice queues a send of her own.
    for i in range(5):
        await on_b.send(room.id, f"while away {i}")
    pending = asyncio.create_task(on_a.send(room.id, "sent while away", client_id="away-1"))
    await asyncio.to_thread(a.start)  # the same port: alice's client finds it by itself
    stored = await asyncio.wait_for(pending, WAIT)
    await alice.until(lambda _: len(alice.texts(room.id)) == 9)
    expected = [f"before {i}" for i in range(3)] + [f"while away {i}" for i in range(5)]
    assert alice.texts(room.id) == [*expected, "sent while away"]
    assert stored.seq == 9
    await bob.until(lambda _: len(bob.texts(room.id)) == 9)
    assert bob.texts(room.id) == [*expected, "sent while away"]
    # Stored once, though it may have been written more than once.
    history = await on_b.rest.all_messages(room.id)
    assert [m.client_id for m in history].count("away-1") == 1


async def test_a_dropped_connection_reconnects_with_backoff_and_resumes(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    server = chat_server_factory.start()
    alice, bob = Recorder(), Recorder()
    a, b = await signed_up(server, alice), await signed_up(server, bob)
    clients += [a, b]
    assert b.user_id is not None
    room = await a.rest.create_group("drops", [b.user_id])
    await asyncio.gather(a.start(), b.start())
    await a.send(room.id, "one")
    await bob.until(lambda _: bob.texts(room.id) == ["one"])

    b.abort()  # no close frame: 1006
    await bob.until(lambda _: bool(bob.of(events.Reconnecting)))
    dropped = bob.of(events.Reconnecting)[0]
    assert isinstance(dropped.error, errors.AbnormalClosure)
    assert b.backoff.base / 2 <= dropped.delay <= b.backoff.base
    for text in ("two", "three"):
        await a.send(room.id, text)
    await bob.until(lambda _: len(bob.of(events.Connected)) == 2)
    await bob.until(lambda _: len(bob.texts(room.id)) == 3)
    await a.send(room.id, "four")
    await bob.until(lambda _: len(bob.texts(room.id)) == 4)
    assert bob.texts(room.id) == ["one", "two", "three", "four"]
    assert b.positions[room.id] == 4


async def test_a_frozen_server_is_noticed_by_its_silence_and_left(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    # A stopped process keeps its TCP connections open: only the missing pings tell.
    a, b = chat_server_factory.start_many(2, ws_ping_interval_seconds=0.5)
    alice, bob = Recorder(), Recorder()
    on_a = Client(a.url, on_event=alice, silence_timeout=2.0, open_timeout=2.0)
    on_b = await signed_up(b, bob)
    await on_a.register(f"c{secrets.token_hex(5)}", PASSWORD)
    clients += [on_a, on_b]
    assert on_b.user_id is not None
    room = await on_a.rest.create_group("frozen", [on_b.user_id])
    await asyncio.gather(on_a.start(), on_b.start())
    assert a.process is not None
    a.process.send_signal(signal.SIGSTOP)
    try:
        await alice.until(lambda _: bool(alice.of(events.Reconnecting)))
        assert isinstance(alice.of(events.Reconnecting)[0].error, TransportError)
        await on_b.send(room.id, "while frozen")
    finally:
        a.process.send_signal(signal.SIGCONT)
    # The resume replays what came meanwhile, then the socket is live again.
    await alice.until(lambda _: len(alice.of(events.Connected)) == 2)
    assert alice.texts(room.id) == ["while frozen"]


async def test_a_full_server_is_retried_until_a_place_frees(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    server = chat_server_factory.start(ws_max_connections=1)
    first, waiting = Recorder(), Recorder()
    a, b = await signed_up(server, first), await signed_up(server, waiting)
    clients += [a, b]
    await a.start()
    await b.start(wait=False)
    await waiting.until(lambda _: bool(waiting.of(events.Reconnecting)))
    assert isinstance(waiting.of(events.Reconnecting)[0].error, errors.ServerFull)
    await a.close()
    await asyncio.wait_for(b.wait_live(), WAIT)


async def test_the_access_token_is_refreshed_before_it_expires(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    # 3 s tokens: the client refreshes a fifth of the lifetime before expiry.
    server = chat_server_factory.start(access_token_ttl_seconds=3)
    recorder = Recorder()
    client = await signed_up(server, recorder)
    clients.append(client)
    await client.start()
    # Two refreshes without any call of ours: the first token has expired by then.
    await recorder.until(lambda _: len(recorder.of(events.TokensRefreshed)) == 2)
    client.abort()
    await recorder.until(lambda _: len(recorder.of(events.Connected)) == 2)
    reconnects = recorder.of(events.Reconnecting)
    assert [type(r.error) for r in reconnects] == [errors.AbnormalClosure]  # never a 4401
    assert (await client.rest.me()).id == client.user_id


async def test_refused_sends_and_refused_logins_raise_their_error_types(
    chat_server_factory: ChatServerFactory, clients: list[Client]
) -> None:
    server = chat_server_factory.start()
    outsider = await signed_up(server)
    owner = await signed_up(server)
    clients += [outsider, owner]
    room = await owner.rest.create_group("private", [])
    await outsider.start()
    with pytest.raises(SendError) as refused:
        await outsider.send(room.id, "let me in")
    assert refused.value.code == "not_member"
    await owner.start()
    with pytest.raises(SendError) as empty:
        await owner.send(room.id, "   ")
    assert empty.value.code == "empty_message"

    wrong = Client(server.url)
    clients.append(wrong)
    with pytest.raises(AuthError) as denied:
        await wrong.login("nobody-here", PASSWORD)
    assert denied.value.code == "invalid_credentials"

    # A token the server refuses (4401: refresh, then reconnect) and a refresh token it does
    # not know: the client stops with the refresh's error. "live": no REST call before the socket.
    recorder = Recorder()
    forged = Client(server.url, start_from="live", on_event=recorder)
    clients.append(forged)
    forged.rest.use_tokens("not-a-jwt", "not-a-refresh-token", expires_in=900)
    with pytest.raises(AuthError) as stopped:
        await forged.start()
    assert stopped.value.code == "refresh_token_invalid"
    # The server's `error` frame `unauthorized` precedes its 4401 (docs/protocol.md).
    unauthorized, disconnected = recorder.seen
    assert isinstance(unauthorized, events.ServerError)
    assert unauthorized.code == "unauthorized"
    assert disconnected == events.Disconnected(stopped.value)


async def read_until_closed(socket: FrameSocket) -> None:
    while True:
        await socket.recv()


async def test_the_bare_socket_reports_close_codes_as_types(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start()
    socket = await FrameSocket.open(server.ws_url)
    await socket.send({"type": "ping"})  # not an auth frame
    with pytest.raises(errors.ProtocolViolation) as closed:
        await read_until_closed(socket)
    assert closed.value.close_code == 4400
