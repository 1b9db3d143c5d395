"""The chat server's WebSocket protocol classes (chatserver/__main__.py) under a real uvicorn
server on a loopback port, with real WebSocket clients (issue #16).

What an open WebSocket keeps alive in the server process, with the cyclic garbage collector
switched off: whatever the handshake left behind that only that collector could free is still
listed by gc. And the frames the protocol lets the app write directly (DirectWrite).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.asyncio.client import connect
from websockets.datastructures import Headers

from chatserver.__main__ import (
    AcyclicHttpToolsProtocol,
    CompressingSansIOProtocol,
    LeanSansIOProtocol,
)
from chatserver.realtime import DIRECT_WRITE, DirectWrite

pytestmark = pytest.mark.integration

SOCKETS = 20


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


async def direct_echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes each text through the DirectWrite the protocol offers, then sends ``sent`` the
    ASGI way; says so when none is offered."""
    if scope["type"] != "websocket":
        await echo_app(scope, receive, send)
        return
    await receive()
    await send({"type": "websocket.accept"})
    direct = scope["extensions"].get(DIRECT_WRITE)
    while (message := await receive())["type"] == "websocket.receive":
        if not isinstance(direct, DirectWrite):
            await send({"type": "websocket.send", "text": "no direct write"})
            continue
        assert direct.write(direct.frame(message["text"]))
        await send({"type": "websocket.send", "text": "sent"})


@contextlib.asynccontextmanager
async def serving(app: Any, ws: type) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=AcyclicHttpToolsProtocol,
        ws=ws,
        ws_per_message_deflate=False,
        log_config=None,
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    async with serving(echo_app, LeanSansIOProtocol) as url:
        yield url


def alive(kind: type) -> list[Any]:
    return [o for o in gc.get_objects() if isinstance(o, kind)]


async def test_open_sockets_keep_neither_the_http_protocol_nor_the_request_headers(
    server_url: str,
) -> None:
    gc.collect()
    gc.disable()
    try:
        clients = [await connect(server_url, compression=None) for _ in range(SOCKETS)]
        for i, client in enumerate(clients):
            await client.send(f"hello {i}")
            assert await client.recv() == f"hello {i}"
        # The HTTP protocol that parsed each upgrade is gone (not waiting for a collection).
        assert alive(HttpToolsProtocol) == []
        # websockets' parser keeps each request to the socket's end: its headers are emptied.
        # (The clients, in this process too, keep theirs.)
        own = {id(client.request.headers) for client in clients if client.request is not None}
        kept = [h for h in alive(Headers) if "sec-websocket-key" in h and id(h) not in own]
        assert kept == []
        for client in clients:
            await client.close()
    finally:
        gc.enable()


async def test_frames_written_directly_arrive_whole_and_in_order() -> None:
    """Lengths in each of the frame header's three forms (7 bits, 16 bits, 64 bits)."""
    async with (
        serving(direct_echo_app, LeanSansIOProtocol) as url,
        connect(url, compression=None, max_size=2**20) as client,
    ):
        for size in (5, 300, 70_000):
            text = "é" * size
            await client.send(text)
            assert await client.recv() == text
            assert await client.recv() == "sent"


async def test_no_direct_write_where_frames_are_compressed() -> None:
    async with (
        serving(direct_echo_app, CompressingSansIOProtocol) as url,
        connect(url, compression="deflate") as client,
    ):
        await client.send("hello")
        assert await client.recv() == "no direct write"
