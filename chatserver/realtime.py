"""WebSocket sessions: authentication, fan-out from the bus, resume, bounded queues, pings, drain.

One :class:`Hub` per process owns every socket of the process. It keeps a local index
room -> sessions and user -> sessions, and holds the bus subscriptions that index needs: a room
channel is subscribed while at least one local socket follows the room (docs/protocol.md, "Inside
a server process").
Ordering, dedupe and queue policy are pure and live in :mod:`chatserver.resume`; client frames are
parsed by :mod:`chatserver.wsprotocol`. The protocol is documented in ``docs/protocol.md``.

Redis trouble never closes a socket (see ``chatserver.bus`` for how it is detected): sends are
still stored and acknowledged, live fan-out between processes pauses, and when pub/sub is back
:meth:`Hub._on_bus_resync` catches every local room up from MongoDB through the sockets' gap
fill, so each socket still sees every message once, in seq order. Sockets are closed only by
:meth:`Hub.shed` (jittered ``reconnect`` hint, batches) when a catch-up cannot be done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from chatserver import events, metrics
from chatserver.auth import AccessToken, AuthError, token_revoked, verify_access_token
from chatserver.bus import Bus, BusUnavailable, Delivery
from chatserver.clientip import client_address, limit_key
from chatserver.config import Settings, allowed_origins, trusted_networks
from chatserver.lean import Flag
from chatserver.models import Message, Room
from chatserver.resume import Outgoing, RoomCursor, SendQueue
from chatserver.store import RoomNotFound, SeqContention, Store
from chatserver.wsprotocol import (
    AuthFrame,
    ClientFrame,
    Close,
    FrameError,
    PingFrame,
    PongFrame,
    ReadFrame,
    ResumeFrame,
    SendFrame,
    TypingFrame,
    parse_client_frame,
)

log = logging.getLogger(__name__)

# After auth, live events are held until the client's next frame or this long, so a ``resume``
# sent right after ``auth`` never follows live events it must precede. Clients that do not
# resume send any frame (a ``ping``) to go live at once.
RESUME_WINDOW_SECONDS: Final = 1.0
# A message seq seen ahead of the next expected one: wait this long for the missing ones to
# arrive through pub/sub before reading them from MongoDB.
GAP_FILL_DELAY_SECONDS: Final = 0.5
HISTORY_PAGE: Final = 200
# Live events a cursor may buffer during one replay before the socket counts as a slow consumer.
MAX_REPLAY_BUFFER_FACTOR: Final = 8
CLOSE_TIMEOUT_SECONDS: Final = 2.0
FLUSH_TIMEOUT_SECONDS: Final = 5.0
TICK_SECONDS: Final = 1.0
PRESENCE_REFRESH_SECONDS: Final = 30.0
# The event-loop lag metric is the largest timer delay over this many ticks.
LAG_WINDOW_TICKS: Final = 10
# Reconnect hint on drain: clients spread their reconnects over this window.
RECONNECT_MIN_MS: Final = 250
RECONNECT_MAX_MS: Final = 5000
# After pub/sub comes back, each socket's catch-up starts after a random delay up to this, and at
# most CATCH_UP_CONCURRENCY history reads run at once, so a resync does not flood MongoDB.
CATCH_UP_SPREAD_SECONDS: Final = 1.0
CATCH_UP_CONCURRENCY: Final = 16
# Sockets shed (closed with a reconnect hint) per batch, and the pause between batches.
SHED_BATCH: Final = 100
SHED_PAUSE_SECONDS: Final = 0.2
# A removal is logged with its remover's clock (chatserver/store.py, `removals_since`), so a
# pass reads the log from this long before the previous pass began: clocks that disagree, and
# a log insert still on its way when that pass read.
REMOVAL_LOG_OVERLAP_SECONDS: Final = 30.0
# How long the removal log keeps an entry. A process whose last read of it is older than that
# (MongoDB out of reach so long) reads every membership its sockets follow instead.
REMOVAL_LOG_RETENTION_SECONDS: Final = 900.0
# The store may have failed after the insert went through: the retry (same client_id) is safe.
STORE_FAILED: Final = "the message may not have been stored; send it again with the same client_id"
REVOKED: Final = "this login was revoked (logout); log in again"
EXPIRED: Final = "the access token has expired; reconnect with a fresh one"
# The ASGI scope extension under which the server offers a DirectWrite (chatserver/__main__.py).
DIRECT_WRITE: Final = "hypersend.direct_write"


@dataclass(frozen=True, slots=True)
class DirectWrite:
    """How a socket's frames are written without a task switch (issue #16, CPU per delivery).

    ``frame`` builds a text frame's bytes (the same for every socket: a server does not mask);
    ``write`` writes them at once and returns True, or False when the socket cannot take them
    now (its transport is paused or closing): then the frame waits in the send queue for the
    writer task, as every frame did before. The server offers it as an ASGI scope extension
    only where a frame's bytes do not depend on the socket (no permessage-deflate).
    """

    frame: Callable[[str], bytes]
    write: Callable[[bytes], bool]


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def outgoing(frame: dict[str, Any], published_at: float | None = None) -> Outgoing:
    """Wrap a server frame for the send queue (serialised once)."""
    kind = str(frame.get("type", ""))
    room_id = frame.get("room_id")
    seq = frame.get("seq") if kind == "message" else None
    user_id = frame.get("user_id")
    online = frame.get("online")
    return Outgoing(
        type=kind,
        text=encode(frame),
        room_id=room_id if isinstance(room_id, str) else None,
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        published_at=published_at,
        ephemeral=kind in events.EPHEMERAL_TYPES or kind == "ping",
        user_id=user_id if isinstance(user_id, str) else None,
        online=online if isinstance(online, bool) else None,
    )


def removal_log_since(last_read: float, now: float) -> float | None:
    """Where the next read of the removal log starts (wall-clock seconds), given when the last
    successful read began; None when the log may have lost entries since then."""
    since = last_read - REMOVAL_LOG_OVERLAP_SECONDS
    # Other processes prune by their own clocks, which may run the overlap ahead of ours.
    if since < now - REMOVAL_LOG_RETENTION_SECONDS + REMOVAL_LOG_OVERLAP_SECONDS:
        return None
    return since


def handshake_header(scope: MutableMapping[str, Any], name: bytes) -> list[str]:
    """Every value of header ``name`` (lower case) in an ASGI scope, in order. Read from the raw
    list rather than through ``WebSocket.headers``, which would keep a parsed copy alive."""
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


def reconnect_after_ms(rng: random.Random) -> int:
    """Jittered reconnect delay so drained clients do not all reconnect at once."""
    return rng.randint(RECONNECT_MIN_MS, RECONNECT_MAX_MS)


class SessionClosed(Exception):
    """The socket closed while a coroutine was waiting to write to it."""


class Session:
    """One authenticated socket: its cursors per room, its send queue and its writer task."""

    # Slots: no per-instance dict (~1 KiB per socket; issue #16, idle memory).
    __slots__ = (
        "_catch_up",
        "_close_reason",
        "_direct",
        "_fills",
        "_flush_before_close",
        "_presence_seen",
        "_resume_timer",
        "_room_locks",
        "_space",
        "_tasks",
        "_wake",
        "_writer",
        "awaiting_resume",
        "close_code",
        "connection_id",
        "doubted",
        "drained",
        "expiry_warned",
        "handling",
        "hub",
        "id",
        "last_ping",
        "last_rx",
        "presence_at",
        "queue",
        "receive_cancelled",
        "receiving",
        "resume_started",
        "rooms",
        "token",
        "user_events",
        "user_id",
        "ws",
    )

    def __init__(self, hub: Hub, websocket: WebSocket, token: AccessToken) -> None:
        self.hub = hub
        self.ws = websocket
        self.user_id = token.user_id
        # The access token the socket runs on: replaced by an in-band ``auth``; at its expiry
        # the socket closes (4401), ``token_expiring`` first (docs/protocol.md).
        self.token = token
        self.expiry_warned = False
        self.id = secrets.token_hex(8)
        self.connection_id = f"{hub.settings.pod_name}:{self.id}"
        self.rooms: dict[str, RoomCursor] = {}
        self.queue = SendQueue(hub.settings.ws_send_queue_size)
        self.awaiting_resume = True
        # A resume frame arrived during the window: its replays end the window, not the timer.
        self.resume_started = False
        # When the server last waited for the client: the last frame received, or the end of
        # handling one. While a frame is handled (``handling``) the client cannot be idle: its
        # next frames (pongs too) wait in the socket until the server reads again.
        self.last_rx = time.monotonic()
        self.handling = False
        self.last_ping = time.monotonic()
        # When the socket's presence entry was last written (the connect's announcement, then
        # the ticker's refreshes, each socket on its own schedule: see Hub._tick).
        self.presence_at = self.last_ping
        self.close_code: int | None = None
        self._wake = Flag()
        self._space = Flag()
        # The session's task while it waits for the client's next frame: close() cancels that
        # wait (one task per socket reads, instead of a reader task and a waiter for close).
        self.receiving: asyncio.Task[Any] | None = None
        self.receive_cancelled = False
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._fills: dict[str, asyncio.Task[None]] = {}
        # Rooms to read from history even without a visible gap (live events were missed).
        self._catch_up: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._presence_seen: dict[str, bool] = {}
        # Closed by a drain: its presence is removed with everyone else's in one batch
        # (Hub.drain), and its subscriptions are left to the process's exit.
        self.drained = False
        self._close_reason = ""
        self._flush_before_close = False
        # Started by the first frame that has to wait (see ``push``): with direct writes most
        # sockets never need one (a task and its frame per socket: CPU per connect and idle
        # memory, issue #16).
        self._writer: asyncio.Task[None] | None = None
        self._resume_timer: asyncio.TimerHandle | None = None
        direct = (websocket.scope.get("extensions") or {}).get(DIRECT_WRITE)
        self._direct = direct if isinstance(direct, DirectWrite) else None
        # Membership events of this socket, checked against the store one at a time.
        self.user_events = asyncio.Lock()
        # Rooms with a removal announced and not yet checked against MongoDB: count per room
        # (None while there is none, the usual case: no dict per idle socket).
        self.doubted: dict[str, int] | None = None

    # -- membership ------------------------------------------------------------------------------

    def trusts(self, room_id: str) -> bool:
        """Whether a send to the room may skip the store's membership check (issue #16).

        ``rooms`` is filled only from MongoDB (connect, a checked ``room_added``, resume) and
        narrowed by removals; a room whose removal is announced (bus event or the hub's
        recheck) is doubted until MongoDB has been asked again. See Hub.recheck_memberships for
        the bound when a removal event is lost.
        """
        return room_id in self.rooms and not (self.doubted and room_id in self.doubted)

    def doubt(self, room_id: str) -> None:
        if self.doubted is None:
            self.doubted = {}
        self.doubted[room_id] = self.doubted.get(room_id, 0) + 1

    def undoubt(self, room_id: str) -> None:
        if self.doubted is None or room_id not in self.doubted:
            return
        self.doubted[room_id] -= 1
        if self.doubted[room_id] <= 0:
            del self.doubted[room_id]
        if not self.doubted:
            self.doubted = None

    # -- writing -------------------------------------------------------------------------------

    def push(self, item: Outgoing) -> None:
        """Write a frame, or queue it without waiting; ephemeral ones may be dropped, overflow
        closes. Written at once when nothing is ahead of it (the usual case), which spares a
        wake-up of the writer task and a pass through uvicorn's ``send`` per frame (issue #16)."""
        if self.close_code is not None:
            return
        if self.queue.idle and self._write_now(item):
            return
        result = self.queue.offer(item)
        if result == "overflow":
            metrics.SLOW_CONSUMER_DISCONNECTS.inc()
            log.info("slow consumer disconnected user=%s conn=%s", self.user_id, self.id)
            self.close(Close.SLOW_CONSUMER, "slow consumer: send queue full, resume", flush=False)
            return
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")
        else:
            self._wake.set()

    def send(self, frame: dict[str, Any]) -> None:
        self.push(outgoing(frame))

    async def push_wait(self, item: Outgoing) -> None:
        """Queue a history frame, waiting while the queue is over half full (back-pressure).

        The wait is bounded: a replay to a socket that stopped reading used to wait forever, and
        when no live event followed (pub/sub down, a quiet room) nothing else noticed it."""
        while self.queue.space <= self.queue.maxsize // 2:
            if self.close_code is not None:
                raise SessionClosed
            self._space.clear()
            try:
                async with asyncio.timeout(self.hub.settings.ws_send_stall_seconds):
                    await self._space.wait()
            except TimeoutError:
                metrics.SLOW_CONSUMER_DISCONNECTS.inc()
                log.info("slow consumer disconnected user=%s conn=%s", self.user_id, self.id)
                reason = "slow consumer: history replay stalled, resume"
                self.close(Close.SLOW_CONSUMER, reason, flush=False)
                raise SessionClosed from None
        if self.close_code is not None:
            raise SessionClosed
        self.push(item)

    async def _write_loop(self) -> None:
        try:
            while True:
                item = self.queue.pop()
                if item is None:
                    if self.close_code is not None:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self.queue.space > self.queue.maxsize // 2:
                    self._space.set()
                try:
                    if not self._write_now(item):
                        await self.ws.send_text(item.text)  # waits while the transport is paused
                        self._written(item)
                finally:
                    self.queue.written()
        except Exception as exc:  # the peer went away mid-write
            log.debug("writer stopped user=%s: %s", self.user_id, type(exc).__name__)
            if self.close_code is None:
                self.close_code = Close.NORMAL
        finally:
            self._space.set()

    def _write_now(self, item: Outgoing) -> bool:
        direct = self._direct
        if direct is None:
            return False
        frame = item.frame
        if frame is None:
            frame = item.frame = direct.frame(item.text)
        if not direct.write(frame):
            return False
        self._written(item)
        return True

    @staticmethod
    def _written(item: Outgoing) -> None:
        if item.type == "message":
            metrics.MESSAGES_DELIVERED.inc()
            if item.published_at is not None:
                metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - item.published_at))

    def close(self, code: int, reason: str, *, flush: bool) -> None:
        """Close the socket with ``code``; ``flush`` writes what is queued first (bounded)."""
        if self.close_code is not None:
            return
        self.close_code = code
        self._close_reason = reason
        self._flush_before_close = flush
        self._space.set()
        self._wake.set()
        if not flush and self._writer is not None:
            self._writer.cancel()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        if self.receiving is not None:
            self.receive_cancelled = True
            self.receiving.cancel()

    async def finish_close(self) -> None:
        """Wait for the writer (flushing if asked), then send the close frame."""
        if self._writer is not None:
            if self._flush_before_close:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    async with asyncio.timeout(FLUSH_TIMEOUT_SECONDS):
                        await asyncio.shield(self._writer)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        for task in [*self._tasks, *self._fills.values()]:
            task.cancel()
        if (
            self.ws.application_state == WebSocketState.CONNECTED
            and self.ws.client_state == WebSocketState.CONNECTED
        ):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.ws.close(self.close_code or Close.NORMAL, self._close_reason)

    def spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- live events ---------------------------------------------------------------------------

    def on_room_event(self, room_id: str, item: Outgoing) -> None:
        cursor = self.rooms.get(room_id)
        if cursor is None:
            return
        if item.type == "presence":
            if not self._presence_is_news(item):
                return
        elif item.type == "typing" and item.user_id == self.user_id:
            return  # nobody needs to see their own typing indicator
        step = cursor.live(item)
        if cursor.buffered > self.queue.maxsize * MAX_REPLAY_BUFFER_FACTOR:
            metrics.SLOW_CONSUMER_DISCONNECTS.inc()
            self.close(
                Close.SLOW_CONSUMER, "slow consumer: replay fell behind, resume", flush=False
            )
            return
        for out in step.deliver:
            self.push(out)
        if step.gap:
            self.schedule_fill(room_id)

    def _presence_is_news(self, item: Outgoing) -> bool:
        user_id, online = item.user_id, bool(item.online)
        if user_id is None or user_id == self.user_id:
            return False
        if self._presence_seen.get(user_id) is online:
            return False
        self._presence_seen[user_id] = online
        return True

    def schedule_fill(self, room_id: str, delay: float = GAP_FILL_DELAY_SECONDS) -> None:
        if room_id in self._fills or self.close_code is not None:
            return
        task = asyncio.create_task(self._fill_later(room_id, delay), name=f"ws-fill-{self.id}")
        self._fills[room_id] = task

    def catch_up(self, high_water: dict[str, int], rng: random.Random) -> int:
        """Read every room from history after what the socket has (live events were missed).

        A room still waiting for the client's opening ``resume`` is skipped: that resume reads
        history after the subscription anyway. A live room always has a seq
        (``Hub._set_baselines``); one without would start from ``high_water`` (the newest seq
        this process saw), or be skipped when there is none. Returns how many rooms were
        scheduled.
        """
        scheduled = 0
        for room_id, cursor in self.rooms.items():
            lock = self._room_locks.get(room_id)
            if cursor.replaying and (lock is None or not lock.locked()):
                continue
            if cursor.last_seq is None:
                if room_id not in high_water:
                    continue
                cursor.set_baseline(high_water[room_id])
            self._catch_up.add(room_id)
            self.schedule_fill(room_id, rng.uniform(0, CATCH_UP_SPREAD_SECONDS))
            scheduled += 1
        return scheduled

    async def _fill_later(self, room_id: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            while True:
                cursor = self.rooms.get(room_id)
                forced = room_id in self._catch_up
                self._catch_up.discard(room_id)
                if cursor is None or not (forced or cursor.has_gap):
                    return
                metrics.GAP_FILLS.inc()
                if forced:
                    async with self.hub.catch_up_slots:
                        await self.replay(room_id, None)
                else:
                    await self.replay(room_id, None)
                # A catch-up asked for while this read ran may need what it did not see.
                if room_id not in self._catch_up:
                    return
        except SessionClosed:
            pass
        except Exception:
            log.exception("gap fill failed user=%s room=%s", self.user_id, room_id)
            self.hub.shed(self, Close.INTERNAL_ERROR, "history unavailable, resume")
        finally:
            self._fills.pop(room_id, None)

    async def replay(self, room_id: str, after_seq: int | None) -> int | None:
        """Replay history of a room after ``after_seq`` (None: fill the cursor's current gap).

        The room channel is already subscribed, so nothing published after the read is missed.
        Returns the last seq delivered.
        """
        lock = self._room_locks.setdefault(room_id, asyncio.Lock())
        async with lock:
            cursor = self.rooms.get(room_id)
            if cursor is None:
                return None
            cursor.begin_replay(after_seq)
            try:
                position = cursor.next_fill_from
                while True:
                    page = await self.hub.store.messages_after(room_id, position, HISTORY_PAGE)
                    for msg in page:
                        for out in cursor.replayed(msg.seq, outgoing(events.message(msg))):
                            await self.push_wait(out)
                    if len(page) < HISTORY_PAGE:
                        break
                    position = page[-1].seq
            finally:
                step = cursor.end_replay()
                for out in step.deliver:
                    self.push(out)
                if step.gap:
                    self.schedule_fill(room_id)
            return cursor.last_seq

    def start_resume_window(self) -> None:
        """Rooms the client has not resumed within RESUME_WINDOW_SECONDS go live then."""
        self._resume_timer = asyncio.get_running_loop().call_later(
            RESUME_WINDOW_SECONDS, self._resume_window_over
        )

    def _resume_window_over(self) -> None:
        self._resume_timer = None
        if not self.resume_started:
            self.end_resume_window()

    def end_resume_window(self) -> None:
        """Rooms the client did not resume go live (events buffered meanwhile are admitted)."""
        if not self.awaiting_resume:
            return
        self.awaiting_resume = False
        for room_id, cursor in self.rooms.items():
            lock = self._room_locks.get(room_id)
            if cursor.replaying and (lock is None or not lock.locked()):
                step = cursor.end_replay()
                for out in step.deliver:
                    self.push(out)
                if step.gap:
                    self.schedule_fill(room_id)


class Hub:
    """Every WebSocket of this process, the local room index and its bus subscriptions."""

    def __init__(self, settings: Settings, store: Store, bus: Bus) -> None:
        self.settings = settings
        metrics.WEBSOCKET_MAX_CONNECTIONS.set(settings.ws_max_connections)
        self.store = store
        self.bus = bus
        self.sessions: set[Session] = set()
        self.draining = False
        self._open = 0  # authenticated sockets
        self._unauthenticated = 0  # accepted, not authenticated yet
        self._room_sessions: dict[str, set[Session]] = {}
        self._room_ready: dict[str, asyncio.Future[None]] = {}
        self._user_sessions: dict[str, set[Session]] = {}
        self._user_ready: dict[str, asyncio.Future[None]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._rng = random.Random()
        # Per followed room, a lower bound of its highest seq: the newest seen from pub/sub, or
        # where a socket's live delivery started (a baseline for catch-up and new sockets).
        self._room_seq: dict[str, int] = {}
        self.catch_up_slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)
        self._shed_queue: dict[Session, tuple[int, str]] = {}
        self._shedder: asyncio.Task[None] | None = None
        # Set while no authenticated socket is open (a drain waits for it).
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self._rechecker: asyncio.Task[None] | None = None
        self._recheck_now = asyncio.Event()
        self._recheck_full = False
        # No socket is older than the hub: the first pass reads the log from here.
        self._removals_read_at = time.time()

    @property
    def connection_count(self) -> int:
        return self._open

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start(self._on_delivery, self._on_bus_resync)
        self._ticker = asyncio.create_task(self._tick(), name="ws-ticker")
        self._rechecker = asyncio.create_task(self._recheck_loop(), name="ws-membership-recheck")

    async def drain(self) -> None:
        """Send every socket a jittered ``reconnect`` hint, close them in batches (1012), remove
        their presence in one pipelined batch, and return once every socket has closed.

        Nothing here waits on one peer or makes a Redis round trip per socket (issue #16: 19,500
        sockets overran the drain budget that way). Closing a batch only marks its sockets; each
        socket's own task writes what is queued and the close frame (the ASGI server writes it
        without waiting for the peer's answer), concurrently with every other socket.
        """
        self.draining = True
        sessions = list(self.sessions)
        for session in sessions:
            session.drained = True
            session.send(events.reconnect(reconnect_after_ms(self._rng)))
        batch = self.settings.drain_batch_size
        batches = max(1, -(-len(sessions) // batch))
        # Spread the batches over part of the drain budget, never more than a second apart, so
        # the clients' reconnects (jittered as well) do not hit the other pods at once.
        budget = max(0.0, self.settings.drain_seconds - self.settings.drain_delay_seconds) / 4
        pause = min(1.0, budget / batches)
        for start in range(0, len(sessions), batch):
            chunk = sessions[start : start + batch]
            for session in chunk:
                session.close(Close.SERVICE_RESTART, "server draining, reconnect", flush=True)
            metrics.SHED_SOCKETS.labels(str(int(Close.SERVICE_RESTART))).inc(len(chunk))
            if start + batch < len(sessions):
                await asyncio.sleep(pause)
        await self._drop_presence(sessions)
        await self._no_sessions.wait()

    async def _drop_presence(self, sessions: list[Session]) -> None:
        """Remove the presence of drained sockets in one batch; announce who went offline."""
        if not sessions:
            return
        try:
            offline = await self.bus.presence_disconnect_many(
                (s.user_id, s.connection_id) for s in sessions
            )
        except Exception as exc:  # degraded: the entries expire (bus.PRESENCE_TTL_MS)
            log.warning("presence removal at drain failed: %s", type(exc).__name__)
            return
        announced: set[str] = set()
        publishes: list[Awaitable[bool]] = []
        for session, gone in zip(sessions, offline, strict=True):
            if gone and session.user_id not in announced and session.rooms:
                announced.add(session.user_id)
                publishes.append(
                    self.bus.publish_rooms(
                        list(session.rooms), events.presence(session.user_id, False)
                    )
                )
        # Pipelined together by the bus: a few round trips for all of them.
        await asyncio.gather(*publishes, return_exceptions=True)

    def shed(self, session: Session, code: int, reason: str) -> None:
        """Close ``session`` with a jittered ``reconnect`` hint first, in batches of SHED_BATCH
        SHED_PAUSE_SECONDS apart, so shed clients do not all come back at the same moment."""
        if session.close_code is not None or session in self._shed_queue:
            return
        session.send(events.reconnect(reconnect_after_ms(self._rng)))
        self._shed_queue[session] = (code, reason)
        if self._shedder is None or self._shedder.done():
            self._shedder = asyncio.create_task(self._shed_batches(), name="ws-shedder")

    async def _shed_batches(self) -> None:
        while self._shed_queue:
            batch = list(self._shed_queue.items())[:SHED_BATCH]
            for session, (code, reason) in batch:
                del self._shed_queue[session]
                session.close(code, reason, flush=True)
                metrics.SHED_SOCKETS.labels(str(int(code))).inc()
            if self._shed_queue:
                await asyncio.sleep(SHED_PAUSE_SECONDS)

    async def stop(self) -> None:
        self.draining = True
        if self._shedder is not None:
            self._shedder.cancel()
        for task in (self._ticker, self._rechecker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        sessions = list(self.sessions)
        for session in sessions:
            session.close(Close.SERVICE_RESTART, "server stopping, reconnect", flush=False)
        await asyncio.gather(*(s.finish_close() for s in sessions), return_exceptions=True)

    # -- bus -----------------------------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        metrics.PUBSUB_LAG.observe(max(0.0, time.time() - delivery.published_at))
        if delivery.kind == "room":
            sessions = self._room_sessions.get(delivery.target)
            if not sessions:
                return
            if not _fits_room_channel(delivery.target, delivery.event):
                # Only room events of this very room travel on its channel: anything else was
                # forged by whoever can publish to Redis (issue #11), so it reaches nobody.
                metrics.BUS_EVENTS_REFUSED.labels("room").inc()
                return
            item = outgoing(delivery.event, delivery.published_at)
            if item.seq is not None and item.seq > self._room_seq.get(delivery.target, 0):
                self._room_seq[delivery.target] = item.seq
            for session in list(sessions):
                session.on_room_event(delivery.target, item)
        else:
            removed = delivery.event.get("room_id")
            if delivery.event.get("type") != "room_removed" or not isinstance(removed, str):
                removed = None
            for session in list(self._user_sessions.get(delivery.target, ())):
                if removed is not None:
                    # Narrowed at once, widened never: until MongoDB has answered, sends to the
                    # room are checked by the store (a forged removal costs a check, no more).
                    session.doubt(removed)
                session.spawn(
                    self._on_user_event(session, delivery.event), f"ws-user-event-{session.id}"
                )

    async def _on_user_event(
        self, session: Session, event: dict[str, Any], *, from_bus: bool = True
    ) -> None:
        """See `_check_membership`; a removal's doubt (`Session.doubt`) ends with the check."""
        room_id = event.get("room_id")
        try:
            await self._check_membership(session, event, from_bus=from_bus)
        finally:
            if event.get("type") == "room_removed" and isinstance(room_id, str):
                session.undoubt(room_id)

    async def _check_membership(
        self, session: Session, event: dict[str, Any], *, from_bus: bool
    ) -> None:
        """Follow or drop a room as MongoDB says, never as the event says.

        A user channel carries only ``room_added`` / ``room_removed``, and either is a hint:
        membership is read from the store before the socket follows a room, and the room sent
        to the client is the stored one. Whoever can publish to Redis can therefore not make a
        socket follow a room its user is not a member of (issue #11). Events of one session are
        handled one at a time, in the order they arrived, so a quick remove + add ends as the
        store says.
        """
        kind, room_id = event.get("type"), event.get("room_id")
        if kind == "sessions_revoked":
            await self._revoke(session, event.get("family_id"))
            return
        if kind not in ("room_added", "room_removed") or not isinstance(room_id, str):
            metrics.BUS_EVENTS_REFUSED.labels("user").inc()
            return
        async with session.user_events:
            if session.close_code is not None:
                return
            try:
                room = await self.store.get_room(room_id)
                member = room is not None and await self.store.is_member(room_id, session.user_id)
            except Exception:
                log.exception("membership check of room %s failed", room_id)
                session.close(Close.INTERNAL_ERROR, "membership check failed, resume", flush=True)
                return
            if member and room is not None:
                if kind == "room_removed" or room_id in session.rooms:
                    if kind == "room_removed" and from_bus:
                        metrics.BUS_EVENTS_REFUSED.labels("user").inc()
                    return
                await self._add_room(session, room, event)
            elif room_id in session.rooms or kind == "room_removed":
                # Whatever the event says: the user is no longer a member.
                session.send(events.room_removed(room_id))
                if session.rooms.pop(room_id, None) is not None:
                    await self._unfollow(session, [room_id])
            else:
                metrics.BUS_EVENTS_REFUSED.labels("user").inc()

    async def _recheck_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.membership_recheck_seconds):
                    await self._recheck_now.wait()
            self._recheck_now.clear()
            full, self._recheck_full = self._recheck_full, False
            try:
                await self.recheck_memberships(full=full)
            except Exception as exc:
                # The next pass tries again (a log pass then reads from the last one that
                # succeeded); meanwhile a lost removal goes unnoticed longer.
                self._recheck_full = self._recheck_full or full
                log.warning("membership recheck failed: %s", type(exc).__name__)

    async def recheck_memberships(self, *, full: bool = False) -> int:
        """Find the rooms local sockets follow whose membership was removed; drop them.

        Sockets send to (without a store check, `Session.trusts`) and receive from the rooms in
        ``Session.rooms``, which a ``room_removed`` on the bus narrows. When that event is lost
        (the remover could not reach Redis, or died before publishing), this pass finds the
        removal at the latest HYPERSEND_MEMBERSHIP_RECHECK_SECONDS later. It reads the removal
        log (chatserver/store.py, `removals_since`), so it costs what was removed, not what the
        sockets follow, and asks MongoDB again only for followed rooms the log names. ``full``
        (after pub/sub came back, or when the log may have lost entries since the last read)
        asks for every followed membership instead: one find per MEMBERSHIP_CHUNK pairs. A
        lapsed room is handled like a removal event: doubted at once, then dropped if MongoDB
        confirms it under the socket's membership lock (a concurrent re-add wins). Returns how
        many were found lapsed.
        """
        started = time.time()
        since = None if full else removal_log_since(self._removals_read_at, started)
        sessions = [s for s in self.sessions if s.close_code is None]
        pairs = {(room_id, s.user_id) for s in sessions for room_id in s.rooms}
        await self.store.prune_removals(_utc(started - REMOVAL_LOG_RETENTION_SECONDS))
        if since is None:
            metrics.MEMBERSHIP_FULL_RECHECKS.inc()
            suspects = pairs
        else:
            suspects = pairs & await self.store.removals_since(_utc(since)) if pairs else set()
        present = await self.store.existing_members(suspects) if suspects else set()
        self._removals_read_at = started
        metrics.MEMBERSHIP_RECHECKS.inc()
        lapsed = suspects - present
        found = 0
        for session in sessions:
            for room_id in [r for r in session.rooms if (r, session.user_id) in lapsed]:
                found += 1
                session.doubt(room_id)
                session.spawn(
                    self._on_user_event(
                        session, {"type": "room_removed", "room_id": room_id}, from_bus=False
                    ),
                    f"ws-recheck-{session.id}",
                )
        if found:
            metrics.MEMBERSHIP_LAPSED.inc(found)
            log.warning("membership recheck: %d socket rooms no longer a membership", found)
        return found

    async def _add_room(self, session: Session, room: Room, event: dict[str, Any]) -> None:
        """Follow a room the store says the user is a member of."""
        hinted = event.get("room")
        hinted_seq = hinted.get("last_seq") if isinstance(hinted, dict) else None
        # The baseline: the room's last seq when the user joined (the event's, which cannot be
        # beyond the stored one); anything newer that pub/sub missed is filled from history.
        # A member may read the whole history (GET /rooms/{id}/messages), so a low baseline
        # from a forged event shows nothing the user could not read anyway.
        baseline = room.last_seq
        if isinstance(hinted_seq, int) and not isinstance(hinted_seq, bool):
            baseline = max(0, min(hinted_seq, room.last_seq))
        session.rooms[room.id] = RoomCursor(baseline)
        session.send(events.room_added(room))
        try:
            await self._follow(session, [room.id])
            # Messages stored between the membership change and the subscription.
            await session.replay(room.id, None)
        except SessionClosed:
            return
        except Exception:
            log.exception("following room %s failed", room.id)
            session.close(Close.INTERNAL_ERROR, "subscription failed, resume", flush=True)

    async def _on_bus_resync(self) -> None:
        """Pub/sub is back after missing events: catch every local room up from MongoDB."""
        metrics.PUBSUB_RESYNCS.inc()
        # Removal events published meanwhile were lost for this process as well.
        self._recheck_full = True
        self._recheck_now.set()
        high_water = dict(self._room_seq)
        rooms = sum(session.catch_up(high_water, self._rng) for session in list(self.sessions))
        log.warning(
            "pub/sub resync: catching up %d socket rooms from history (%d sockets)",
            rooms,
            len(self.sessions),
        )

    async def _follow(self, session: Session, room_ids: Iterable[str]) -> None:
        """Add the session to rooms; return once every room channel is subscribed."""
        new: list[str] = []
        waits: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for room_id in room_ids:
            members = self._room_sessions.setdefault(room_id, set())
            if not members:
                self._room_ready[room_id] = loop.create_future()
                new.append(room_id)
            else:
                waits.append(self._room_ready[room_id])
            members.add(session)
        if new:
            try:
                await self.bus.subscribe("room", new)
            except BaseException as exc:
                for room_id in new:
                    fut = self._room_ready.pop(room_id, None)
                    if fut is not None and not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
                        fut.exception()  # mark retrieved: waiters may be gone
                    self._room_sessions.pop(room_id, None)
                raise
            for room_id in new:
                fut = self._room_ready.get(room_id)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        for fut in waits:
            await asyncio.shield(fut)

    async def _unfollow(self, session: Session, room_ids: Iterable[str]) -> None:
        gone: list[str] = []
        for room_id in room_ids:
            members = self._room_sessions.get(room_id)
            if members is None:
                continue
            members.discard(session)
            if not members:
                del self._room_sessions[room_id]
                self._room_ready.pop(room_id, None)
                self._room_seq.pop(room_id, None)
                gone.append(room_id)
        if gone:
            with contextlib.suppress(Exception):
                await self.bus.unsubscribe("room", gone)

    def _unfollow_locally(self, session: Session) -> None:
        """Drop the session from the local indexes without unsubscribing (a drain)."""
        for room_id in session.rooms:
            members = self._room_sessions.get(room_id)
            if members is not None:
                members.discard(session)
        users = self._user_sessions.get(session.user_id)
        if users is not None:
            users.discard(session)

    async def _follow_user(self, session: Session) -> None:
        sessions = self._user_sessions.setdefault(session.user_id, set())
        first = not sessions
        sessions.add(session)
        if first:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._user_ready[session.user_id] = fut
            try:
                await self.bus.subscribe("user", [session.user_id])
            except Exception as exc:
                fut.set_exception(exc)
                fut.exception()
                self._user_sessions.pop(session.user_id, None)
                self._user_ready.pop(session.user_id, None)
                raise
            fut.set_result(None)
        else:
            await asyncio.shield(self._user_ready[session.user_id])

    async def _unfollow_user(self, session: Session) -> None:
        sessions = self._user_sessions.get(session.user_id)
        if sessions is None:
            return
        sessions.discard(session)
        if not sessions:
            del self._user_sessions[session.user_id]
            self._user_ready.pop(session.user_id, None)
            with contextlib.suppress(Exception):
                await self.bus.unsubscribe("user", [session.user_id])

    # -- timers --------------------------------------------------------------------------------

    async def _tick(self) -> None:
        interval = self.settings.ws_ping_interval_seconds
        idle = self.settings.ws_idle_timeout_seconds
        lags: deque[float] = deque(maxlen=LAG_WINDOW_TICKS)
        while True:
            pause = min(TICK_SECONDS, interval)
            asked = time.monotonic()
            await asyncio.sleep(pause)
            now = time.monotonic()
            lags.append(max(0.0, now - asked - pause))
            metrics.EVENT_LOOP_LAG.set(max(lags))
            ping = outgoing(events.ping())
            wall = time.time()
            warning = self.settings.ws_token_warning_seconds
            # Each socket's presence is refreshed PRESENCE_REFRESH_SECONDS after its last write,
            # so refreshes follow the connects' spread: all of a process's at once cost ~1 s of
            # CPU in one go at 19,500 sockets every 30 s, and deliveries waited behind it.
            refresh: list[tuple[str, str]] = []
            for session in list(self.sessions):
                if now - session.presence_at >= PRESENCE_REFRESH_SECONDS:
                    session.presence_at = now
                    refresh.append((session.user_id, session.connection_id))
                expires_at = session.token.expires_at
                if wall >= expires_at:
                    session.send(events.error("unauthorized", EXPIRED))
                    session.close(Close.UNAUTHORIZED, "token expired", flush=True)
                    continue
                if not session.expiry_warned and wall >= expires_at - warning:
                    session.expiry_warned = True
                    session.send(events.token_expiring(expires_at, wall))
                if not session.handling and now - session.last_rx > idle:
                    session.close(Close.IDLE_TIMEOUT, "idle timeout", flush=False)
                elif now - session.last_ping >= interval:
                    session.last_ping = now
                    session.push(ping)
            if refresh:
                try:
                    await self.bus.presence_refresh(refresh)
                except Exception as exc:
                    log.warning("presence refresh failed: %s", type(exc).__name__)

    # -- one socket ----------------------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Run one WebSocket from accept to close.

        Until it authenticates a socket counts only in the unauthenticated gauge and cap
        (HYPERSEND_WS_MAX_UNAUTHENTICATED), never in ``hypersend_websocket_connections``, the
        autoscaling signal, nor against HYPERSEND_WS_MAX_CONNECTIONS; it is closed 4408 at
        HYPERSEND_WS_AUTH_TIMEOUT_SECONDS.
        """
        origin = next(iter(handshake_header(websocket.scope, b"origin")), None)
        allowed = allowed_origins(self.settings.ws_allowed_origins)
        if origin is not None and allowed is not None and origin.lower() not in allowed:
            # A page of another site (cross-site WebSocket hijacking): refused in the handshake
            # (HTTP 403), before anything of the socket runs.
            metrics.WEBSOCKET_OPENS_REFUSED.labels("origin").inc()
            await websocket.close(Close.POLICY_VIOLATION)
            return
        await websocket.accept()
        if self.draining:
            await websocket.close(Close.SERVICE_RESTART, "server draining, reconnect")
            return
        address = limit_key(
            client_address(
                websocket.client.host if websocket.client else None,
                handshake_header(websocket.scope, b"x-forwarded-for"),
                trusted_networks(self.settings.trusted_proxies),
            )
        )
        decision = await self.bus.check_rate(
            f"ip:ws:{address}", self.settings.ws_ip_opens_per_minute
        )
        if not decision.allowed:
            metrics.WEBSOCKET_OPENS_REFUSED.labels("client_rate").inc()
            retry = max(1, math.ceil(decision.retry_after))
            await websocket.close(
                Close.RATE_LIMITED, f"too many sockets opened from your address; retry in {retry}s"
            )
            return
        if self._unauthenticated >= self.settings.ws_max_unauthenticated:
            metrics.WEBSOCKET_OPENS_REFUSED.labels("unauthenticated").inc()
            await websocket.close(Close.TRY_AGAIN_LATER, "too many sockets authenticating")
            return
        self._unauthenticated += 1
        metrics.WEBSOCKET_UNAUTHENTICATED.inc()
        try:
            token = await self._authenticate(websocket)
        finally:
            self._unauthenticated -= 1
            metrics.WEBSOCKET_UNAUTHENTICATED.dec()
        if token is None:
            return
        # Everything the socket needed from its handshake headers is read (Origin, the client
        # address): the raw list would otherwise stay for the socket's life (issue #16, idle
        # socket memory).
        websocket.scope["headers"] = []
        if self.draining:
            # Authenticated after the drain took its list of sockets: it would outlive it.
            await websocket.close(Close.SERVICE_RESTART, "server draining, reconnect")
            return
        if self._open >= self.settings.ws_max_connections:
            await websocket.close(Close.TRY_AGAIN_LATER, "too many connections on this server")
            return
        self._open += 1
        metrics.WEBSOCKET_CONNECTIONS.inc()
        try:
            await self._run_session(websocket, token)
        finally:
            self._open -= 1
            metrics.WEBSOCKET_CONNECTIONS.dec()

    async def _authenticate(self, websocket: WebSocket) -> AccessToken | None:
        token = websocket.query_params.get("token")
        if token is None:
            try:
                async with asyncio.timeout(self.settings.ws_auth_timeout_seconds):
                    message = await websocket.receive()
            except TimeoutError:
                await self._refuse(websocket, Close.AUTH_TIMEOUT, "auth_timeout", "auth timeout")
                return None
            if message["type"] == "websocket.disconnect":
                return None
            raw = message.get("text") or message.get("bytes") or ""
            frame = parse_client_frame(raw, self.settings.max_message_bytes)
            if not isinstance(frame, AuthFrame):
                await self._refuse(
                    websocket,
                    Close.PROTOCOL_ERROR,
                    "protocol_error",
                    'the first frame must be {"type": "auth", "token": ...}',
                )
                return None
            token = frame.token
        try:
            return verify_access_token(token, self.settings)
        except AuthError as exc:
            await self._refuse(websocket, Close.UNAUTHORIZED, "unauthorized", exc.message)
            return None

    async def _refuse(self, websocket: WebSocket, code: int, error: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await websocket.send_text(encode(events.error(error, message)))
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await websocket.close(code, message[:120])

    async def _run_session(self, websocket: WebSocket, token: AccessToken) -> None:
        user_id = token.user_id
        session = Session(self, websocket, token)
        self.sessions.add(session)
        self._no_sessions.clear()
        try:
            # The user's events (room_added, room_removed) wait until the socket is set up,
            # then are checked against MongoDB as any other (`_check_membership`).
            async with session.user_events:
                room_ids = await self._set_up(session, token)
            if room_ids is None:
                return
            session.send(events.ready(user_id, room_ids, token.expires_at))
            session.start_resume_window()
            session.spawn(self._announce(session, True), f"ws-presence-{session.id}")
            await self._read_loop(session)
        except Exception:
            log.exception("session failed user=%s", user_id)
            session.close(Close.INTERNAL_ERROR, "internal error, reconnect", flush=True)
        finally:
            if session.close_code is None:
                session.close(Close.NORMAL, "", flush=False)
            await session.finish_close()
            self.sessions.discard(session)
            if not self.sessions:
                self._no_sessions.set()
            if session.drained:
                # The process is going: its subscriptions go with its pub/sub connection, and
                # the drain removed this socket's presence with everyone else's.
                self._unfollow_locally(session)
            else:
                await self._unfollow(session, list(session.rooms))
                await self._unfollow_user(session)
                with contextlib.suppress(Exception):
                    await self._announce(session, False)

    async def _set_up(self, session: Session, token: AccessToken) -> list[str] | None:
        """Subscribe a new socket's user channel, then read its rooms and its login's revocation
        (concurrently), then subscribe its rooms; its rooms, or None if the login was revoked.

        The reads come after the user channel is subscribed: a membership change or a logout
        committed before it is in what they read, one after it reaches the socket on the bus
        (tests/integration/chatserver/test_connect_races.py). Reading the rooms first would lose
        a room added between the read and the subscription until the next connect.
        """
        await self._follow_user(session)
        rooms_read = asyncio.create_task(
            self.store.room_ids_for_user(session.user_id), name=f"ws-rooms-{session.id}"
        )
        try:
            revoked = await token_revoked(self.store, token)
            room_ids = await rooms_read
        finally:
            _discard(rooms_read)
        if revoked:
            session.send(events.error("unauthorized", REVOKED))
            session.close(Close.UNAUTHORIZED, REVOKED, flush=True)
            return None
        for room_id in room_ids:
            cursor = RoomCursor()
            cursor.begin_replay()  # hold live events until the resume window ends
            session.rooms[room_id] = cursor
        # Where each room starts if the socket goes live without resuming it: rooms this process
        # follows already start at what it saw, the others at their highest seq, read
        # (Store.seq_floors) while the channels are subscribed (see _set_baselines).
        seen = {room: self._room_seq[room] for room in room_ids if room in self._room_seq}
        floors = asyncio.create_task(
            self.store.seq_floors([room for room in room_ids if room not in seen]),
            name=f"ws-seq-floors-{session.id}",
        )
        try:
            await self._follow(session, room_ids)
            self._set_baselines(session, room_ids, seen, await floors)
        finally:
            _discard(floors)
        return room_ids

    def _set_baselines(
        self,
        session: Session,
        room_ids: list[str],
        seen: Mapping[str, int],
        floors: Mapping[str, int],
    ) -> None:
        """Give each room of a new socket the seq its live delivery starts after.

        The first live message must not set it: two processes publish a room's seqs N and N+1
        independently, so N+1 may arrive first, and N would be dropped as delivered with no gap
        to fill (tests/integration/chatserver/test_live_first_message_order.py). A lower bound
        of the room's highest stored seq is enough, as seq N is stored only after N-1
        (chatserver/store.py): every message stored after the socket went live is above it,
        and one above it the socket does not get live is a gap, filled from history. The
        highest (``Store.seq_floors``) also spares the socket a fill of messages stored before it
        went live. A resume replaces the baseline with the client's seq
        (``RoomCursor.begin_replay``).
        """
        for room_id in room_ids:
            cursor = session.rooms.get(room_id)
            if cursor is None:
                continue  # removed meanwhile (room_removed)
            start = max(
                seen.get(room_id, 0), floors.get(room_id, 0), self._room_seq.get(room_id, 0)
            )
            cursor.set_baseline(start)
            # The next socket of this room on this process needs no read (entries go with the
            # room's subscription, Hub._unfollow).
            if room_id in self._room_sessions and start > self._room_seq.get(room_id, -1):
                self._room_seq[room_id] = start

    async def _announce(self, session: Session, online: bool) -> None:
        """Publish presence to the user's rooms when their first/last connection changes."""
        try:
            if online:
                changed = await self.bus.presence_connect(session.user_id, session.connection_id)
            else:
                changed = await self.bus.presence_disconnect(session.user_id, session.connection_id)
            if changed and session.rooms:
                await self.bus.publish_rooms(
                    list(session.rooms), events.presence(session.user_id, online)
                )
        except BusUnavailable:
            pass  # degraded: presence resumes with Redis (the refresh re-adds live connections)
        except Exception as exc:
            log.warning("presence update failed: %s", type(exc).__name__)

    async def _read_loop(self, session: Session) -> None:
        websocket = session.ws
        while session.close_code is None:
            session.receiving = asyncio.current_task()
            try:
                message = await websocket.receive()
            except asyncio.CancelledError:
                # Session.close() ends the wait; any other cancellation (the server stopping)
                # is passed on. uncancel() > 0: someone else cancelled as well.
                task = session.receiving
                if not session.receive_cancelled or task is None or task.uncancel() > 0:
                    raise
                return
            finally:
                session.receiving = None
            if message["type"] == "websocket.disconnect":
                return
            session.last_rx = time.monotonic()
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            frame = parse_client_frame(raw, self.settings.max_message_bytes)
            handshake = False
            if session.awaiting_resume:
                if isinstance(frame, ResumeFrame):
                    session.resume_started = handshake = True
                else:
                    session.end_resume_window()
            if isinstance(frame, FrameError):
                session.send(events.error(frame.code, frame.message, **frame.ids))
                continue
            session.handling = True
            try:
                await self._handle(session, frame, handshake=handshake)
            except SessionClosed:
                return
            except Exception:
                # One failed frame (e.g. MongoDB or Redis briefly unreachable) is reported to
                # the client; the socket stays usable.
                log.exception("handling a %s frame failed", type(frame).__name__)
                ids = (
                    {"room_id": frame.room_id, "client_id": frame.client_id}
                    if isinstance(frame, SendFrame)
                    else {}
                )
                session.send(
                    events.error("internal", "the frame could not be processed; retry", **ids)
                )
            finally:
                session.handling = False
                session.last_rx = time.monotonic()

    async def _handle(self, session: Session, frame: ClientFrame, *, handshake: bool) -> None:
        """Answer one client frame; ``handshake`` marks the resume that opens the connection."""
        if isinstance(frame, PingFrame):
            session.send(events.pong())
            return
        if isinstance(frame, PongFrame):
            return
        if handshake and isinstance(frame, ResumeFrame):
            # The resume that opens a connection counts but is never refused: refusing it would
            # take the rooms live with a gap, and a user who hit the limit just before their
            # server died must still get what they missed. One per connection. Nor may a Redis
            # hiccup stop it: the rooms would stay held back with nothing to release them.
            try:
                await self.bus.check_rate(session.user_id)
            except Exception as exc:
                log.warning("rate count of a resume failed: %s", type(exc).__name__)
            await self._resume(session, frame)
            return
        decision = await self.bus.check_rate(session.user_id)
        if not decision.allowed:
            metrics.RATE_LIMITED.inc()
            extra: dict[str, Any] = {"retry_after": decision.retry_after}
            if isinstance(frame, SendFrame):
                extra.update(room_id=frame.room_id, client_id=frame.client_id)
            session.send(events.error("rate_limited", "too many requests", **extra))
            return
        if isinstance(frame, AuthFrame):
            await self._reauthenticate(session, frame)
        elif isinstance(frame, SendFrame):
            await self._send(session, frame)
        elif isinstance(frame, ResumeFrame):
            await self._resume(session, frame)
        elif isinstance(frame, TypingFrame):
            if frame.room_id not in session.rooms:
                session.send(_not_member(frame.room_id))
                return
            await self.bus.publish_room(
                frame.room_id, events.typing(frame.room_id, session.user_id)
            )
        elif isinstance(frame, ReadFrame):
            # A membership implies its room exists (members are removed, rooms never).
            if not session.trusts(frame.room_id) and not await self.store.is_member(
                frame.room_id, session.user_id
            ):
                session.send(_not_member(frame.room_id))
                return
            last_seq = await self.store.highest_seq(frame.room_id)
            if frame.seq > last_seq:
                problem = f"seq {frame.seq} is beyond the room's last seq {last_seq}"
                session.send(events.error("invalid_seq", problem, room_id=frame.room_id))
                return
            await self.store.mark_read(frame.room_id, session.user_id, frame.seq)
            await self.bus.publish_room(
                frame.room_id, events.read(frame.room_id, session.user_id, frame.seq)
            )

    async def _reauthenticate(self, session: Session, frame: AuthFrame) -> None:
        """An ``auth`` frame on a live socket: run on the fresh token from now on. A token that
        does not verify, or is another user's, is refused and the old one stays (until it
        expires); a revoked login closes the socket."""
        try:
            token = verify_access_token(frame.token, self.settings)
        except AuthError as exc:
            session.send(events.error("unauthorized", exc.message))
            return
        if token.user_id != session.user_id:
            session.send(events.error("unauthorized", "the token is another user's"))
            return
        if await token_revoked(self.store, token):
            session.send(events.error("unauthorized", REVOKED))
            session.close(Close.UNAUTHORIZED, REVOKED, flush=True)
            return
        session.token = token
        session.expiry_warned = False
        session.send(events.reauthenticated(token.expires_at))

    async def _revoke(self, session: Session, family_id: object) -> None:
        """``sessions_revoked`` from Redis: close the socket if MongoDB says its login (or, for
        a token without a login id, the named one) is revoked."""
        family = session.token.family_id
        if family is None:
            if not isinstance(family_id, str):
                return
            family = family_id
        elif family != family_id:
            return
        try:
            revoked = await self.store.is_family_revoked(family)
        except Exception as exc:
            log.warning("revocation check failed: %s", type(exc).__name__)
            return  # the socket still closes when its token expires
        if revoked:
            session.send(events.error("unauthorized", REVOKED))
            session.close(Close.UNAUTHORIZED, REVOKED, flush=True)

    async def _send(self, session: Session, frame: SendFrame) -> None:
        ids = {"room_id": frame.room_id, "client_id": frame.client_id}
        try:
            # Published as soon as stored (a retry publishes again: receivers dedupe by seq).
            # A room the socket follows was checked in MongoDB when it was followed and is
            # dropped on removal (`Session.trusts`): no round trip per message (issue #16).
            # Any other room is checked by the store in the batch's one membership read.
            msg, created = await self.store.append_message(
                frame.room_id,
                session.user_id,
                frame.client_id,
                frame.text,
                on_stored=self._publish_message,
                check_member=not session.trusts(frame.room_id),
            )
        except RoomNotFound:  # NotMember too
            session.send(_not_member(frame.room_id, client_id=frame.client_id))
            return
        except SeqContention:
            log.warning("seq contention room=%s", frame.room_id)
            problem = "too many concurrent senders in this room; nothing stored, send again"
            session.send(events.error("try_again", problem, **ids))
            return
        except Exception:
            log.exception("storing a message failed room=%s", frame.room_id)
            session.send(events.error("store_failed", STORE_FAILED, **ids))
            return
        if created:
            metrics.MESSAGES_RECEIVED.inc()
        session.send(events.ack(msg.room_id, msg.client_id, msg.seq, msg))

    async def _publish_message(self, msg: Message) -> None:
        # Stored already: if Redis is unreachable the bus publishes it later; receivers get it
        # through gap fill, the resync's catch-up or resume.
        try:
            await self.bus.publish_room(msg.room_id, events.message(msg), seq=msg.seq)
        except Exception as exc:
            log.warning("publishing message failed room=%s: %s", msg.room_id, type(exc).__name__)

    async def _resume(self, session: Session, frame: ResumeFrame) -> None:
        try:
            done = await self._replay_rooms(session, frame)
        except SessionClosed:
            raise
        except Exception:
            # Going live now would leave a gap the client cannot see: it reconnects and resumes
            # from the last seq it got (what was written so far is in order). Closing first also
            # keeps the held live events below from being queued.
            log.exception("resume failed user=%s", session.user_id)
            session.close(Close.INTERNAL_ERROR, "history unavailable, resume", flush=False)
            return
        finally:
            session.end_resume_window()
        session.send(events.resumed(done))

    async def _replay_rooms(self, session: Session, frame: ResumeFrame) -> dict[str, int]:
        refused: list[str] = []
        wanted: dict[str, int] = {}
        for room_id, last_seq in frame.rooms.items():
            if room_id in session.rooms:
                wanted[room_id] = last_seq
            elif await self.store.is_member(room_id, session.user_id):
                # Joined after this socket connected and before its room_added arrived.
                cursor = RoomCursor()
                cursor.begin_replay()
                session.rooms[room_id] = cursor
                await self._follow(session, [room_id])
                wanted[room_id] = last_seq
            else:
                refused.append(room_id)
        if refused:
            session.send(
                events.error(
                    "not_member",
                    "not a member of these rooms; they were not resumed",
                    room_ids=refused,
                )
            )
        done: dict[str, int] = {}
        for room_id, last_seq in wanted.items():
            last = await session.replay(room_id, last_seq)
            done[room_id] = last if last is not None else last_seq
        return done


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _discard(task: asyncio.Task[Any]) -> None:
    """Stop ``task`` if it still runs; an error of it the caller never awaited is dropped (the
    caller is failing on its own already)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()


def _fits_room_channel(room_id: str, event: dict[str, Any]) -> bool:
    """Whether ``event`` is a room event of ``room_id``, as servers publish on its channel."""
    kind = event.get("type")
    if kind == "presence":
        return "room_id" not in event
    return kind in events.ROOM_CHANNEL_TYPES and event.get("room_id") == room_id


def _not_member(room_id: str, **extra: Any) -> dict[str, Any]:
    return events.error(
        "not_member", "not a member of this room (or it does not exist)", room_id=room_id, **extra
    )


router = APIRouter()


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """The real-time endpoint (protocol v1, ``docs/protocol.md``)."""
    hub: Hub = websocket.app.state.hub
    await hub.serve(websocket)
