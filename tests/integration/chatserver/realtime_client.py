"""A small protocol-v1 client for the real-time tests: REST setup calls and a WebSocket wrapper.

It speaks to real server processes over loopback (``httpx`` and the ``websockets`` 17 client).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Frame = dict[str, Any]


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    token: str


async def register(base_url: str, prefix: str = "u") -> Account:
    username = f"{prefix}{secrets.token_hex(5)}"
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=20) as http:
        response = await http.post(
            "/api/v1/auth/register", json={"username": username, "password": "correct horse 1"}
        )
        response.raise_for_status()
        body = response.json()
    return Account(id=body["user"]["id"], username=username, token=body["access_token"])


async def create_group(base_url: str, owner: Account, members: list[Account]) -> str:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=20) as http:
        response = await http.post(
            "/api/v1/rooms",
            json={"kind": "group", "name": "room", "members": [m.id for m in members]},
            headers={"Authorization": f"Bearer {owner.token}"},
        )
        response.raise_for_status()
        return str(response.json()["id"])


async def history(base_url: str, account: Account, room_id: str) -> list[int]:
    """Every stored seq of a room, read over REST, ascending."""
    seqs: list[int] = []
    after = 0
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=20) as http:
        while True:
            response = await http.get(
                f"/api/v1/rooms/{room_id}/messages",
                params={"after_seq": after, "limit": 200},
                headers={"Authorization": f"Bearer {account.token}"},
            )
            response.raise_for_status()
            page = [int(m["seq"]) for m in response.json()["messages"]]
            seqs.extend(page)
            if len(page) < 200:
                return seqs
            after = page[-1]


async def metric(base_url: str, name: str) -> float:
    """The value of an unlabelled metric (or the sum over its label sets) on ``/metrics``."""
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=20) as http:
        text = (await http.get("/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Client:
    """One WebSocket with every frame it received kept in ``frames``."""

    ws: ClientConnection
    frames: list[Frame] = field(default_factory=list)
    ready: Frame | None = None
    _taken: set[int] = field(default_factory=set)

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, wait: float = 10.0) -> Frame:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races with
        # the frame's arrival, and a cancelled sender then runs on.
        async with asyncio.timeout(wait):
            raw = await self.ws.recv()
        frame: Frame = json.loads(raw)
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
        except ConnectionClosed:
            return self.ws.close_code, self.ws.close_reason
        raise TimeoutError("the server did not close the socket")

    def message_seqs(self, room_id: str) -> list[int]:
        return [
            int(f["seq"])
            for f in self.frames
            if f.get("type") == "message" and f.get("room_id") == room_id
        ]

    async def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a client that vanished)."""
        transport = self.ws.transport
        transport.abort()
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.ws.close()


async def open_socket(ws_url: str, token: str | None = None, *, query: bool = False) -> Client:
    """Connect; authenticate with a first ``auth`` frame (or ``?token=`` when ``query``)."""
    url = f"{ws_url}?token={token}" if query and token is not None else ws_url
    ws = await connect(url, proxy=None, open_timeout=10, max_size=2**22)
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
