"""One WebSocket carrying JSON frames: the only module of this package that imports
``websockets``. It adds no protocol logic, so tests of the server's protocol edge cases (bad
first frames, oversized frames, close codes) can drive the wire directly through it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from hypersend_client.errors import CloseError, HypersendError, TransportError, close_error

Frame = dict[str, Any]


class FrameSocket:
    """An open WebSocket; ``recv`` raises the ``CloseError`` of the close code once closed."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        open_timeout: float = 10.0,
        max_size: int | None = 2**22,
        max_queue: int | None = 16,
        sock: socket.socket | None = None,
        keepalive: tuple[float, float] | None = None,
        close_timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        compression: Literal["deflate"] | None = "deflate",
    ) -> FrameSocket:
        """Open ``url``. ``max_queue``: frames buffered unread (None: unbounded); ``sock``: an
        already connected socket to speak over (e.g. one with a tiny receive buffer);
        ``keepalive``: (interval, timeout) of WebSocket-level pings that close the socket when a
        server stops answering (a frozen process keeps its TCP connections open); ``headers``:
        extra handshake headers (an ``Origin``, or what a proxy in front would add);
        ``compression``: offer permessage-deflate (the server decides whether to use it,
        docs/configuration.md) or not."""
        extra: dict[str, Any] = {} if sock is None else {"sock": sock}
        if headers:
            extra["additional_headers"] = dict(headers)
        try:
            # No library-level ping unless asked for: the protocol has its own JSON ping/pong
            # (answered by the client). proxy=None: the servers are reached directly; an
            # environment proxy must not capture them.
            ws = await connect(
                url,
                proxy=None,
                open_timeout=open_timeout,
                ping_interval=None if keepalive is None else keepalive[0],
                ping_timeout=None if keepalive is None else keepalive[1],
                close_timeout=close_timeout,
                max_size=max_size,
                max_queue=max_queue,
                compression=compression,
                **extra,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise TransportError(f"{url}: {type(exc).__name__}: {exc}") from exc
        return cls(ws)

    async def send(self, frame: Frame | str | bytes) -> None:
        """Send a frame (a dict as JSON text; a str or bytes as is, for protocol tests)."""
        data = json.dumps(frame, separators=(",", ":")) if isinstance(frame, dict) else frame
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc

    async def recv(self) -> Frame:
        try:
            raw = await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from exc
        frame = json.loads(raw)
        if not isinstance(frame, dict):
            raise HypersendError(f"the server sent a frame that is not an object: {raw!r:.200}")
        return frame

    def _closed(self, exc: ConnectionClosed) -> CloseError:
        received = exc.rcvd
        if received is None:
            return close_error(None)
        return close_error(received.code, received.reason)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    @property
    def is_open(self) -> bool:
        return self._ws.close_code is None

    async def close(self, code: int = 1000, reason: str = "", within: float = 5.0) -> None:
        try:
            async with asyncio.timeout(within):
                await self._ws.close(code, reason)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a client that vanished)."""
        self._ws.transport.abort()
