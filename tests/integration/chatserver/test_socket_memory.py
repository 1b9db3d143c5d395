"""What an open WebSocket keeps alive in the server process (issue #16, idle memory).

A real uvicorn server with the chat server's protocol classes (chatserver/__main__.py) on a
loopback port, real WebSocket clients, and the cyclic garbage collector switched off: whatever
the handshake left behind that only that collector could free is still listed by gc.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.asyncio.client import connect
from websockets.datastructures import Headers

from chatserver.__main__ import AcyclicHttpToolsProtocol, LeanSansIOProtocol

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


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    config = uvicorn.Config(
        echo_app,
        host="127.0.0.1",
        port=0,
        http=AcyclicHttpToolsProtocol,
        ws=LeanSansIOProtocol,
        ws_per_message_deflate=False,
        log_config=None,
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await serving


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
