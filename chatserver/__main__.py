"""`hypersend-server` / `python -m chatserver`: the chat server under uvicorn (uvloop, httptools).

This module owns signal handling: the first SIGTERM starts the drain (see `chatserver.app.drain`)
instead of stopping uvicorn at once; SIGINT or a second SIGTERM stops without draining. A watchdog
ends the process if it is still alive at HYPERSEND_DRAIN_SECONDS.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import resource
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Final

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from chatserver.api import max_body_bytes
from chatserver.app import SHUTDOWN_RESERVE_SECONDS, create_app, drain, with_websocket_fast_path
from chatserver.config import Settings
from chatserver.lean import Flag, LeanQueue
from chatserver.realtime import DIRECT_WRITE, DirectWrite

log = logging.getLogger("chatserver")

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged too.
_RECORD_FIELDS: Final = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pod and any `extra` fields."""

    def __init__(self, pod: str) -> None:
        super().__init__()
        self.pod = pod

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pod": self.pod,
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# permessage-deflate when HYPERSEND_WS_COMPRESSION=on: no context takeover either way, so a socket
# holds no zlib state between messages (a compressor lives for one message); 1 KiB windows are
# plenty for chat frames of a few hundred bytes. uvicorn's own deflate keeps the context with
# 4 KiB windows: measured 84 KiB of RSS per idle socket against 45 KiB without (issue #16).
DEFLATE_WINDOW_BITS: Final = 10
DEFLATE_MEM_LEVEL: Final = 4


class AcyclicHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, freed as soon as it hands a socket on (issue #16).

    Its parser calls back into it, so the one left behind by each upgrade to a WebSocket is a
    reference cycle of ~25 objects (parser, bound methods, flow control) that only the cyclic
    collector frees (uvicorn breaks it on connection_lost, which an upgraded connection never
    reaches here). With the large young threshold of tune_garbage_collector they waited long
    enough to cost ~0.75 KiB of RSS per idle socket. The parser is done once it has been fed
    the upgrade request, so dropping it breaks the cycle.
    """

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]


def text_frame(text: str) -> bytes:
    """A whole text frame as a server sends it (unmasked, uncompressed)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class LeanSansIOProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, lighter per socket (issue #16, idle memory): its
    receive queue and writable flag without asyncio's deques (chatserver.lean), and without the
    parsed handshake request and response it kept for the socket's whole life (headers twice
    over), which nothing reads once the handshake is answered.

    It offers the app a DirectWrite (chatserver/realtime.py): finished frames written straight
    to the transport, without uvicorn's ``send`` and the writer task's wake-up per frame.
    """

    # Frames written directly are not compressed: off where permessage-deflate is negotiated.
    offers_direct_write = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same interface, without the deques asyncio.Queue and asyncio.Event allocate.
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "request", None) is not None:
            # websockets' parser keeps the request in its generator's frame for the socket's
            # life: emptied, its ~20 header strings go, 2.7 KiB of RSS per idle socket (the scope
            # has its own copy).
            self.request.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if self.offers_direct_write and scope is not None:
            scope["extensions"][DIRECT_WRITE] = DirectWrite(text_frame, self.write_frame_now)

    def write_frame_now(self, frame: bytes) -> bool:
        """Write a whole frame unless the socket is not open for it or its transport is paused
        (then the caller queues it and sends it later through ``send``)."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        scope = getattr(self, "scope", None)
        if scope is not None:
            # The extension refers back to this protocol: no cycle left for the collector.
            scope["extensions"].pop(DIRECT_WRITE, None)


class CompressingSansIOProtocol(LeanSansIOProtocol):
    """LeanSansIOProtocol negotiating permessage-deflate without context takeover (uvicorn only
    offers its own parameters, ``--ws-per-message-deflate``)."""

    offers_direct_write = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        deflate = ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=DEFLATE_WINDOW_BITS,
            client_max_window_bits=DEFLATE_WINDOW_BITS,
            compress_settings={"memLevel": DEFLATE_MEM_LEVEL},
        )
        self.conn = ServerProtocol(
            extensions=[deflate], max_size=self.config.ws_max_size, logger=self.conn.logger
        )


# `token=<anything>` in a logged URL (uvicorn logs every WebSocket handshake's path with its
# query string, so `/ws?token=<access token>` would land in the logs).
_TOKEN_IN_URL: Final = re.compile(r"(?i)(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Replaces the value of every `token=` query parameter in a record with `[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = _TOKEN_IN_URL.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_URL.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(settings.pod_name))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # uvicorn's own loggers go through the root handler; its access log stays off because
    # request lines may carry a token in the query string (/ws?token=...).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# File descriptors a process needs besides its sockets: MongoDB and Redis pools, logs, listeners.
FD_HEADROOM: Final = 1024


def nofile_target(soft: int, hard: int, wanted: int) -> int:
    """The soft open-files limit to set: ``wanted``, within the hard limit, never lowered.

    Containers start with the runtime's soft limit (often 1,024) under a much higher hard one
    (containerd's, typically 524,288 or more); an unprivileged process may raise its soft limit
    up to the hard one, which is what HYPERSEND_WS_MAX_CONNECTIONS sockets need
    (docs/configuration.md, "Sockets per pod").
    """
    ceiling = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    return max(soft, min(wanted, ceiling))


def raise_nofile_limit(settings: Settings) -> None:
    wanted = settings.ws_max_connections + settings.ws_max_unauthenticated + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = nofile_target(soft, hard, wanted)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning(
            "open-files limit %d (hard %d) is below the %d that HYPERSEND_WS_MAX_CONNECTIONS "
            "needs: accepting sockets beyond it fails (EMFILE)",
            target,
            hard,
            wanted,
        )


def tune_garbage_collector(young_threshold: int) -> None:
    """Keep the cyclic garbage collector's pauses short with tens of thousands of sockets.

    CPython runs a full collection, which visits every tracked object (~100 per idle socket),
    once the objects promoted since the last one reach a quarter of the old generation. With
    its default young threshold of 700 allocations, objects that live a few milliseconds (a
    message on its way) are promoted, so full collections followed each other under load: 0.3-
    0.4 s pauses at 4,000 sockets, the seed load's p99 delivery of 0.27-0.38 s (issue #16). A
    larger threshold lets them die young; what is loaded at startup is frozen out of every
    collection, since it lives as long as the process.
    """
    gc.freeze()
    if young_threshold:
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, oldest)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains the app before shutting down."""

    def __init__(self, config: uvicorn.Config, settings: Settings, app: FastAPI) -> None:
        super().__init__(config)
        self.settings = settings
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_task is None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        # Not re-raised after shutdown: the process exits with status 0 by itself.
        self.should_exit = True
        if sig == signal.SIGINT and self._drain_task is not None:
            self.force_exit = True

    def _start_drain(self) -> None:
        if self._drain_task is not None:
            return
        deadline = time.monotonic() + self.settings.drain_seconds
        _start_watchdog(self.settings.drain_seconds)
        self._drain_task = asyncio.create_task(self._drain(deadline), name="drain")

    async def _drain(self, deadline: float) -> None:
        try:
            await drain(self.app, deadline)
        except Exception:
            log.exception("drain failed; shutting down")
        # What is left of the budget goes to uvicorn's graceful shutdown.
        left = deadline - time.monotonic() - SHUTDOWN_RESERVE_SECONDS / 2
        self.config.timeout_graceful_shutdown = max(1, int(left))
        self.should_exit = True


def _start_watchdog(seconds: float) -> None:
    """Last resort: never outlive the drain budget (the kubelet would SIGKILL us anyway)."""

    def expire() -> None:
        time.sleep(seconds)
        log.error("drain budget of %.0fs exhausted; exiting", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=expire, name="drain-watchdog", daemon=True).start()


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"HYPERSEND_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        print(f"hypersend-server: invalid configuration: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings)
    raise_nofile_limit(settings)
    app = create_app(settings)
    tune_garbage_collector(settings.gc_young_threshold)
    config = uvicorn.Config(
        with_websocket_fast_path(app),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=AcyclicHttpToolsProtocol,
        ws=CompressingSansIOProtocol if settings.ws_compression == "on" else LeanSansIOProtocol,
        # HYPERSEND_WS_COMPRESSION=off: uvicorn's deflate (on by default) would hold a zlib
        # context per socket; "on" negotiates it in CompressingSansIOProtocol instead.
        ws_per_message_deflate=False,
        # Frames larger than this are refused by the protocol layer (close 1009).
        ws_max_size=max_body_bytes(settings),
        lifespan="on",
        log_config=None,
        access_log=False,
        # The peer address stays the TCP peer: chatserver.clientip reads X-Forwarded-For, and
        # only from HYPERSEND_TRUSTED_PROXIES (uvicorn's default would trust any local peer).
        proxy_headers=False,
        server_header=False,
        # Pings and idle timeouts are the hub's (HYPERSEND_WS_PING_INTERVAL_SECONDS etc.).
        ws_ping_interval=None,
        ws_ping_timeout=None,
        timeout_graceful_shutdown=max(1, int(settings.drain_seconds)),
    )
    DrainingServer(config, settings, app).run()


if __name__ == "__main__":
    main()
