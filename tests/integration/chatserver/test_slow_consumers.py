"""Slow consumers (docs/protocol.md, close 4413) against a real server: a client that stops
reading is disconnected, whether live frames pile up or a history replay waits for room.

The stalled client speaks WebSocket through websockets' sans-I/O protocol over a plain socket
with a small receive buffer, and reads nothing after the handshake until the test asks. (A
library client keeps reading into its own buffers: 15 MB of frames went into one before the
server's writes blocked, so a test bounded by a frame count passed or failed by chance.)
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import create_group, metric, register

pytestmark = pytest.mark.integration

TEXT = "x" * 150_000


class StalledReader:
    """A WebSocket client that authenticates, resumes, and then does not read."""

    def __init__(self, ws_url: str, port: int) -> None:
        self.protocol = ClientProtocol(parse_uri(ws_url), max_size=2**24)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self._feed()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self._flush()

    def resume(self, token: str, rooms: dict[str, int]) -> None:
        """Authenticate and resume ``rooms`` from their seqs (the server's answers are not read)."""
        self.send({"type": "auth", "token": token})
        self.send({"type": "resume", "rooms": rooms})

    def read_until_closed(self) -> int | None:
        """Read everything the server sent, then its close frame: the close code."""
        while self.protocol.state is not State.CLOSED:
            self._read()
        return self.protocol.close_code

    def read_until(self, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Read (this client is a normal one now) until `done(frames)`."""
        while not done(self.frames):
            assert self.protocol.state is State.OPEN, self.protocol.close_code
            self._read()

    def message_seqs(self, room_id: str) -> list[int]:
        return [
            int(f["seq"])
            for f in self.frames
            if f.get("type") == "message" and f.get("room_id") == room_id
        ]

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> None:
        self._feed()
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.frames.append(json.loads(bytes(event.data)))
        self._flush()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _feed(self) -> None:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()


async def _room_of_two(url: str) -> tuple[str, dict[str, str], str]:
    """A group room: (room id, its owner's auth header, the other member's token)."""
    alice, bob = await register(url, "slow"), await register(url, "slow")
    room = await create_group(url, alice, [bob])
    return room, {"Authorization": f"Bearer {alice.token}"}, bob.token


async def _post(
    http: httpx.AsyncClient, room: str, auth: dict[str, str], client_id: str, text: str = TEXT
) -> None:
    sent = await http.post(
        f"/api/v1/rooms/{room}/messages", json={"client_id": client_id, "text": text}, headers=auth
    )
    assert sent.status_code == 201, sent.text


async def _disconnects(url: str) -> float:
    return await metric(url, "hypersend_slow_consumer_disconnects_total")


async def _wait_for_disconnects(url: str, count: float, within: float) -> None:
    deadline = time.monotonic() + within
    while await _disconnects(url) < count:
        assert time.monotonic() < deadline, "the server never found the consumer slow"
        await asyncio.sleep(0.2)


async def test_a_history_replay_to_a_socket_that_stopped_reading_ends_it_as_slow(
    chat_server_factory: ChatServerFactory,
) -> None:
    """No live event follows (the room is quiet), so only the replay itself can notice: it waits
    for room in the send queue at most ws_send_stall_seconds, then closes with 4413."""
    server = chat_server_factory.start(
        ws_send_queue_size=8,
        ws_send_stall_seconds=1,
        rate_limit_per_minute=100_000,
        max_message_bytes=200_000,
    )
    stored = 60  # 9 MB of history: more than the kernel's buffers on both ends hold
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
        room, alice, bob = await _room_of_two(server.url)
        for n in range(stored):
            await _post(http, room, alice, f"h{n}")
        reader = StalledReader(server.ws_url, server.port)
        try:
            reader.resume(bob, {room: 0})
            await _wait_for_disconnects(server.url, 1, within=30)
            code = await asyncio.to_thread(reader.read_until_closed)
        finally:
            reader.close()
    assert code == 4413
    seqs = reader.message_seqs(room)
    assert seqs == list(range(1, len(seqs) + 1))  # in order, up to where it stalled
    assert len(seqs) < stored


async def test_live_frames_a_socket_does_not_read_overflow_its_queue_and_it_resumes_whole(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(
        ws_send_queue_size=8, rate_limit_per_minute=100_000, max_message_bytes=200_000
    )
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
        room, alice, bob = await _room_of_two(server.url)
        reader = StalledReader(server.ws_url, server.port)
        try:
            reader.resume(bob, {room: 0})
            total = 0
            # Bounded: 100 frames of 150 kB are more than the kernel's buffers on both ends
            # (about 4 MB) and the queue's 8 frames hold.
            while await _disconnects(server.url) < 1:
                assert total < 100, "the server never found the consumer slow"
                await _post(http, room, alice, f"s{total}")
                total += 1
            code = await asyncio.to_thread(reader.read_until_closed)
        finally:
            reader.close()
        assert code == 4413
        seen = reader.message_seqs(room)
        assert seen == list(range(1, len(seen) + 1))
        assert len(seen) < total
        again = StalledReader(server.ws_url, server.port)
        try:
            again.resume(bob, {room: seen[-1] if seen else 0})
            await asyncio.to_thread(
                again.read_until, lambda _: again.message_seqs(room)[-1:] == [total]
            )
        finally:
            again.close()
    assert seen + again.message_seqs(room) == list(range(1, total + 1))


async def test_a_socket_that_pauses_reading_gets_every_live_frame_in_order_once_it_reads(
    chat_server_factory: ChatServerFactory,
) -> None:
    """Frames are written straight to a socket while nothing waits ahead of them, else queued
    (chatserver/realtime.py, Session.push): the ones queued while its transport was paused must
    not be overtaken by later ones once it drains, and none may be lost."""
    server = chat_server_factory.start(
        ws_send_queue_size=64, rate_limit_per_minute=100_000, max_message_bytes=200_000
    )
    big, small = 40, 20  # 6 MB: more than the kernel's buffers on both ends hold (about 4 MB)
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
        room, alice, bob = await _room_of_two(server.url)
        reader = StalledReader(server.ws_url, server.port)
        try:
            reader.resume(bob, {room: 0})
            await asyncio.to_thread(
                reader.read_until, lambda frames: any(f["type"] == "resumed" for f in frames)
            )
            for n in range(big):
                await _post(http, room, alice, f"b{n}")
            reading = asyncio.create_task(
                asyncio.to_thread(
                    reader.read_until, lambda _: reader.message_seqs(room)[-1:] == [big + small]
                )
            )
            for n in range(small):  # while the queued frames drain
                await _post(http, room, alice, f"s{n}", text="small")
            await asyncio.wait_for(reading, timeout=60)
        finally:
            reader.close()
        assert await _disconnects(server.url) == 0
    assert reader.message_seqs(room) == list(range(1, big + small + 1))
