"""Frame-level helpers for the real-time tests, built on hypersend_client (clients/python).

The server's protocol tests need the wire itself (bad first frames, exact error frames, close
codes), so ``Client`` here is a recorder around the package's bare ``FrameSocket``; REST setup
calls go through its ``RestClient``. Neither speaks the protocol by itself: that is the
package's job, and the tests use nothing else to reach a server.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypersend_client import CloseError, FrameSocket, RestClient

Frame = dict[str, Any]
PASSWORD = "correct horse 1"


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    token: str


async def register(base_url: str, prefix: str = "u") -> Account:
    username = f"{prefix}{secrets.token_hex(5)}"
    rest = RestClient(base_url, timeout=20)
    try:
        user = await rest.register(username, PASSWORD)
        return Account(id=user.id, username=username, token=await rest.access_token())
    finally:
        await rest.aclose()


def rest_as(base_url: str, account: Account) -> RestClient:
    """A RestClient signed in with ``account``'s access token (no refresh token)."""
    rest = RestClient(base_url, timeout=20)
    rest.use_tokens(account.token, "", expires_in=3600)
    return rest


async def create_group(base_url: str, owner: Account, members: list[Account]) -> str:
    rest = rest_as(base_url, owner)
    try:
        return (await rest.create_group("room", [m.id for m in members])).id
    finally:
        await rest.aclose()


async def history(base_url: str, account: Account, room_id: str) -> list[int]:
    """Every stored seq of a room, read over REST, ascending."""
    rest = rest_as(base_url, account)
    try:
        return [m.seq for m in await rest.all_messages(room_id)]
    finally:
        await rest.aclose()


async def metric(base_url: str, name: str) -> float:
    """The value of an unlabelled metric (or the sum over its label sets) on ``/metrics``."""
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=20) as http:
        text = (await http.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def until_true(condition: Callable[[], bool], what: str, wait: float = 30.0) -> None:
    """Poll ``condition`` (state other tasks of the test update) until it holds; TimeoutError
    naming ``what`` after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {wait}s: {what}")
        await asyncio.sleep(0.02)


async def until_metric(
    base_url: str, name: str, holds: Callable[[float], bool], wait: float = 20.0
) -> float:
    """Poll ``metric`` until its value satisfies ``holds`` (a condition wait, not a fixed
    sleep); the value, or TimeoutError naming the last one after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while not holds(value := await metric(base_url, name)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} stayed {value} for {wait}s")
        await asyncio.sleep(0.05)
    return value


@dataclass
class Client:
    """One WebSocket with every frame it received kept in ``frames``."""

    ws: FrameSocket
    frames: list[Frame] = field(default_factory=list)
    ready: Frame | None = None
    _taken: set[int] = field(default_factory=set)

    async def send(self, frame: Frame | str | bytes) -> None:
        await self.ws.send(frame)

    async def recv(self, wait: float = 10.0) -> Frame:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races with
        # the frame's arrival, and a cancelled sender then runs on.
        async with asyncio.timeout(wait):
            frame = await self.ws.recv()
        self.frames.append(frame)
        return frame

    async def until(self, predicate: Callable[[Frame], bool], wait: float = 10.0) -> Frame:
        """The first frame matching ``predicate`` not returned by an earlier ``until``.

        Frames skipped while waiting stay available to later calls, so waiting for an ack does
        not lose the message frame that arrived before it.
        """
        for index, frame in enumerate(self.frames):
            if index not in self._taken and predicate(frame):
                self._taken.add(index)
                return frame
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching frame in {wait}s; got {self.frames[-5:]}")
            frame = await self.recv(left)
            if predicate(frame):
                self._taken.add(len(self.frames) - 1)
                return frame

    async def until_type(self, kind: str, wait: float = 10.0) -> Frame:
        return await self.until(lambda f: f.get("type") == kind, wait)

    async def send_message(
        self, room_id: str, text: str, client_id: str | None = None, wait: float = 10.0
    ) -> Frame:
        """Send and wait for this send's ack or error."""
        cid = client_id or secrets.token_hex(8)
        await self.send({"type": "send", "room_id": room_id, "client_id": cid, "text": text})
        return await self.until(
            lambda f: f.get("type") in ("ack", "error") and f.get("client_id") == cid, wait
        )

    async def closed(self, wait: float = 10.0) -> tuple[int | None, str | None]:
        """Read until the server closes; (close code, reason)."""
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                await self.recv(deadline - time.monotonic())
        except CloseError as exc:
            return exc.close_code, exc.reason
        raise TimeoutError("the server did not close the socket")

    def message_seqs(self, room_id: str) -> list[int]:
        return [
            int(f["seq"])
            for f in self.frames
            if f.get("type") == "message" and f.get("room_id") == room_id
        ]

    async def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a client that vanished)."""
        self.ws.abort()
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.ws.close()


async def open_socket(
    ws_url: str,
    token: str | None = None,
    *,
    query: bool = False,
    max_queue: int | None = 16,
    max_size: int | None = 2**22,
    sock: socket.socket | None = None,
    headers: dict[str, str] | None = None,
) -> Client:
    """Connect; authenticate with a first ``auth`` frame (or ``?token=`` when ``query``)."""
    url = f"{ws_url}?token={token}" if query and token is not None else ws_url
    ws = await FrameSocket.open(
        url, max_queue=max_queue, max_size=max_size, sock=sock, headers=headers
    )
    client = Client(ws)
    if token is not None and not query:
        await client.send({"type": "auth", "token": token})
    return client


async def connect_user(
    ws_url: str, account: Account, resume: dict[str, int] | None = None
) -> Client:
    """An authenticated socket that has received ``ready`` (and ``resumed`` if resuming)."""
    client = await open_socket(ws_url, account.token)
    # The first frame after auth ends the server's wait for a resume: live events flow at once.
    first: Frame = {"type": "ping"} if resume is None else {"type": "resume", "rooms": resume}
    await client.send(first)
    client.ready = await client.until_type("ready")
    if resume is not None:
        await client.until_type("resumed", wait=30)
    return client
