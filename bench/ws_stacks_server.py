"""The servers bench/ws_stacks.py compares: the same WebSocket behaviour on each stack.

Each accepts a socket, reads its first frame (JSON, like Hypersend's ``auth``), answers it with
one JSON frame (like ``ready``) and then holds the socket open until the client closes it. No
application work is done: what differs is only the stack's cost of the HTTP upgrade, the
handshake, the frames and the socket it holds.

    python bench/ws_stacks_server.py STACK PORT      (STACK: hypersend, uvicorn, picows)

granian serves ``asgi_app`` itself (``python -m granian ... bench.ws_stacks_server:asgi_app``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

READY = json.dumps({"type": "ready", "user_id": "u", "rooms": ["r1"], "expires_at": 0})
LOOPBACK = "127.0.0.1"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    first = await receive()
    if first["type"] != "websocket.receive":
        return
    json.loads(first.get("text") or first.get("bytes") or b"{}")
    await send({"type": "websocket.send", "text": READY})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def run_uvicorn(port: int, hypersend: bool) -> None:
    import uvicorn

    options: dict[str, Any] = {"http": "httptools", "ws": "websockets-sansio"}
    if hypersend:
        # The chat server's own protocol classes (chatserver/__main__.py).
        from chatserver.__main__ import AcyclicHttpToolsProtocol, LeanSansIOProtocol

        options = {"http": AcyclicHttpToolsProtocol, "ws": LeanSansIOProtocol}
    config = uvicorn.Config(
        asgi_app,
        host=LOOPBACK,
        port=port,
        loop="uvloop",
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        lifespan="on",
        log_config=None,
        access_log=False,
        **options,
    )
    uvicorn.Server(config).run()


def run_picows(port: int) -> None:
    import uvloop
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        ws_create_server,
    )

    ready = READY.encode()

    class Held(WSListener):  # type: ignore[misc]
        answered = False

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT and not self.answered:
                json.loads(frame.get_payload_as_bytes())
                transport.send(WSMsgType.TEXT, ready)
                self.answered = True
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def listener(request: WSUpgradeRequest) -> Held:
        return Held()

    async def serve() -> None:
        # A 1 KiB first read buffer (it grows when a frame needs more): with the default
        # 16 KiB a held socket cost 28.6 KiB of RSS, with this 14.6 KiB.
        server = await ws_create_server(listener, LOOPBACK, port, read_buffer_init_size=1024)
        await server.serve_forever()

    uvloop.run(serve())


def main() -> None:
    stack, port = sys.argv[1], int(sys.argv[2])
    if stack in ("hypersend", "uvicorn"):
        run_uvicorn(port, hypersend=stack == "hypersend")
    elif stack == "picows":
        run_picows(port)
    else:
        raise SystemExit(f"unknown stack {stack!r}")


if __name__ == "__main__":
    main()
