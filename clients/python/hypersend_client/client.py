"""The real-time client: one WebSocket per client that reconnects by itself and loses nothing.

What it promises (docs/protocol.md, "WebSocket" and "Delivery guarantees"):

- After a close it reconnects: after the ``after_ms`` of the server's ``reconnect`` frame when
  one came, else with jittered exponential backoff; a 4401 refreshes the access token first.
  Close codes that a retry cannot fix (1009, 4400) and a refresh the server refuses stop it.
- It keeps the last ``seq`` it delivered per room and opens every connection with a ``resume``
  from there, and it drops ``message`` frames at or below that seq, so each message comes out
  of ``events()`` exactly once across reconnects.
- ``send`` picks a ``client_id`` and repeats the same frame until the ``ack`` comes: on every
  reconnect, after the server's ``retry_after`` or a short pause for ``rate_limited``,
  ``try_again``, ``store_failed`` and ``internal``, and when no answer came within
  ``ack_timeout``. The server makes the repeats idempotent.
- The access token is refreshed before it expires, so a reconnect never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from hypersend_client import events as ev
from hypersend_client.errors import (
    ApiError,
    AuthError,
    ClientClosedError,
    CloseError,
    HypersendError,
    SendError,
    TransportError,
)
from hypersend_client.models import JSON, Message, Tokens
from hypersend_client.rest import RestClient, new_client_id
from hypersend_client.transport import FrameSocket

# Error codes of a refused send that a repeat of the same frame can fix (docs/protocol.md,
# "Errors on an open socket").
RETRYABLE_SEND_ERRORS = frozenset({"rate_limited", "try_again", "store_failed", "internal"})

# docs/protocol.md, "Idempotent sends".
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

E = TypeVar("E", bound=ev.Event)
State = Literal["idle", "connecting", "live", "reconnecting", "closed"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of
    ``min(cap, base * 2**n)`` seconds, so clients dropped together do not return together."""

    base: float = 0.5
    cap: float = 15.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 30))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass
class _PendingSend:
    room_id: str
    client_id: str
    text: str
    future: asyncio.Future[Message]
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def frame(self) -> JSON:
        return {
            "type": "send",
            "room_id": self.room_id,
            "client_id": self.client_id,
            "text": self.text,
        }


class Client:
    """One user's connection. Sign in through ``rest`` (or ``register`` / ``login``), then
    ``await start()``; read ``events()`` (or pass ``on_event``), ``send``, and ``close``.

    ``start_from``: ``"latest"`` reads every room's last seq over REST before the first
    connection and resumes from there, so nothing after ``start()`` can be missed;
    ``"live"`` skips that call (a load test with thousands of users) and tracks a room from its
    first message, so a drop before a room's first message can miss what came meanwhile.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ws_url: str | None = None,
        rest: RestClient | None = None,
        start_from: Literal["latest", "live"] = "latest",
        backoff: Backoff | None = None,
        ack_timeout: float = 10.0,
        open_timeout: float = 10.0,
        silence_timeout: float = 75.0,
        on_event: Callable[[ev.Event], None] | None = None,
        trust_env: bool = False,
    ) -> None:
        self.rest = rest or RestClient(base_url, trust_env=trust_env)
        root = base_url.rstrip("/")
        self.ws_url = ws_url or ("ws" + root.removeprefix("http") + "/ws")
        self.start_from = start_from
        self.backoff = backoff or Backoff()
        self.ack_timeout = ack_timeout
        self.open_timeout = open_timeout
        # The server pings every HYPERSEND_WS_PING_INTERVAL_SECONDS (30 s by default): a socket
        # silent for longer than two and a half of those belongs to a server that froze (its TCP
        # connection stays open) or a path that died, and is dropped and reconnected.
        self.silence_timeout = silence_timeout
        self.state: State = "idle"
        self.user_id: str | None = None
        # room -> the last seq delivered (the resume point)
        self.positions: dict[str, int] = {}
        self.rooms: set[str] = set()
        self.connects = 0
        self.error: Exception | None = None
        self._on_event = on_event
        self._events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._pending: dict[str, _PendingSend] = {}
        self._socket: FrameSocket | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._live = asyncio.Event()
        self._stopped = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self.rest.on_tokens = self._tokens_changed
        # whether the current connection attempt reached live (resets the backoff)
        self._went_live = False

    # signing in (shortcuts to rest)

    async def register(self, username: str, password: str, display_name: str | None = None) -> str:
        user = await self.rest.register(username, password, display_name)
        self.user_id = user.id
        return user.id

    async def login(self, username: str, password: str) -> str:
        user = await self.rest.login(username, password)
        self.user_id = user.id
        return user.id

    # life cycle

    async def start(self, resume: Mapping[str, int] | None = None, *, wait: bool = True) -> None:
        """Connect. ``resume`` gives known positions (room -> last seq seen); they win over
        what ``start_from`` finds. With ``wait`` it returns once the socket is live (or raises
        what stopped the client)."""
        if self._runner is not None:
            raise HypersendError("already started")
        if self.start_from == "latest":
            for room in await self.rest.rooms():
                self.positions[room.id] = room.last_seq
        self.positions.update(resume or {})
        self.state = "connecting"
        self._runner = asyncio.create_task(self._run(), name="hypersend-client")
        self._refresher = asyncio.create_task(self._refresh_loop(), name="hypersend-refresh")
        if wait:
            await self.wait_live()

    async def wait_live(self) -> None:
        """Wait until the socket is live; raise the error that stopped the client instead."""
        live = asyncio.ensure_future(self._live.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((live, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            live.cancel()
            stopped.cancel()
        if not self._live.is_set():
            raise self.error or ClientClosedError("the client is closed")

    @property
    def live(self) -> bool:
        return self._live.is_set()

    async def close(self) -> None:
        """Close the socket (1000) and stop; pending sends fail with ``ClientClosedError``."""
        if self.state == "closed" and self._runner is None:
            return
        socket = self._socket
        self._stop(None)
        for task in (self._runner, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = self._refresher = None
        if socket is not None:
            await socket.close()
        await self.rest.aclose()

    def abort(self) -> None:
        """Drop the current connection without a close handshake (to test recovery): the
        client reconnects as after any other drop."""
        if self._socket is not None:
            self._socket.abort()

    # events

    async def events(self) -> AsyncIterator[ev.Event]:
        """Every event in order, until the client stops (ends with ``Disconnected``)."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, ev.Disconnected):
                return

    async def next_event(self, within: float | None = None) -> ev.Event:
        async with asyncio.timeout(within):
            return await self._events.get()

    async def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] = lambda _: True,
        within: float | None = None,
    ) -> E:
        """The next event of type ``kind`` matching ``predicate``; the events skipped are
        consumed (use ``on_event`` to see every event when waiting like this)."""
        async with asyncio.timeout(within):
            while True:
                event = await self._events.get()
                if isinstance(event, kind) and predicate(event):
                    return event
                if isinstance(event, ev.Disconnected) and kind is not ev.Disconnected:
                    raise event.error or ClientClosedError("the client is closed")

    def _emit(self, event: ev.Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        else:
            self._events.put_nowait(event)

    # client frames

    async def send(self, room_id: str, text: str, client_id: str | None = None) -> Message:
        """Send a message and return it as stored (with its seq) once acknowledged. Repeated
        with the same ``client_id`` until acknowledged; ``SendError`` when refused for good."""
        if self.state == "closed":
            raise self.error or ClientClosedError("the client is closed")
        cid = client_id or new_client_id()
        if not CLIENT_ID.fullmatch(cid):
            raise ValueError(f"client_id {cid!r} must be 1-64 of A-Z a-z 0-9 _ . : -")
        if cid in self._pending:
            raise HypersendError(f"a send with client_id {cid} is already pending")
        pending = _PendingSend(room_id, cid, text, asyncio.get_running_loop().create_future())
        self._pending[cid] = pending
        try:
            while not pending.future.done():
                pending.wake.clear()
                timeout: float | None = None
                if self._live.is_set():
                    await self._write(pending.frame)
                    timeout = self.ack_timeout
                waker = asyncio.ensure_future(pending.wake.wait())
                try:
                    await asyncio.wait(
                        (pending.future, waker),
                        timeout=timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waker.cancel()
            return pending.future.result()
        finally:
            self._pending.pop(cid, None)

    async def typing(self, room_id: str) -> None:
        """Tell the room's other members that this user types (dropped while disconnected)."""
        if self._live.is_set():
            await self._write({"type": "typing", "room_id": room_id})

    async def mark_read(self, room_id: str, seq: int) -> None:
        """Move this user's read marker (over REST, so it is never lost to a reconnect)."""
        await self.rest.mark_read(room_id, seq)

    async def _write(self, frame: JSON) -> None:
        socket = self._socket
        if socket is None:
            return
        # A write on a closing socket fails; the reader sees the close and reconnects, and
        # the pending sends are written again on the next connection.
        with contextlib.suppress(CloseError):
            await socket.send(frame)

    # the connection

    async def _run(self) -> None:
        attempt = 0
        while True:
            hint: list[float] = []
            try:
                await self._connect_and_read(hint)
                error: Exception = CloseError(1000, "closed")
            except (CloseError, TransportError) as exc:
                error = exc
            except AuthError as exc:
                # The refresh token is no good (expired, revoked, reused): only a new login
                # helps.
                self._stop(exc)
                return
            except HypersendError as exc:
                error = exc
            finally:
                self._live.clear()
                self._socket = None
            if isinstance(error, CloseError) and not error.retryable:
                self._stop(error)
                return
            if self._went_live:
                attempt = 0
            if isinstance(error, CloseError) and error.refresh:
                try:
                    await self.rest.refresh()
                except ApiError as exc:
                    # Refused (expired, revoked, reused, or no refresh token at all): only a new
                    # login helps.
                    self._stop(exc)
                    return
                except HypersendError:
                    pass  # the server is unreachable: the backoff below, then try again
            delay = hint[-1] if hint else self.backoff.delay(attempt, self._rng)
            attempt += 1
            self.state = "reconnecting"
            self._emit(ev.Reconnecting(error, delay, attempt))
            await asyncio.sleep(delay)

    async def _connect_and_read(self, hint: list[float]) -> None:
        self._went_live = False
        token = await self.rest.access_token()
        socket = await FrameSocket.open(self.ws_url, open_timeout=self.open_timeout)
        self._socket = socket
        await socket.send({"type": "auth", "token": token})
        resuming = bool(self.positions)
        # The first frame after auth ends the server's hold on live events: a resume with the
        # positions, or a ping when there is nothing to resume (docs/protocol.md, step 3).
        if resuming:
            await socket.send({"type": "resume", "rooms": dict(self.positions)})
        else:
            await socket.send({"type": "ping"})
        ready = False
        while True:
            try:
                async with asyncio.timeout(self.silence_timeout):
                    frame = await socket.recv()
            except TimeoutError:
                socket.abort()
                raise TransportError(f"no frame for {self.silence_timeout:g} s") from None
            kind = frame.get("type")
            if kind == "ready":
                ready = True
            await self._dispatch(frame, socket, hint)
            if ready and not self._live.is_set() and (not resuming or kind == "resumed"):
                self._go_live()

    def _go_live(self) -> None:
        self._live.set()
        self._went_live = True
        self.state = "live"
        self.connects += 1
        self._emit(ev.Connected(self.connects))
        for pending in self._pending.values():
            pending.wake.set()

    async def _dispatch(self, frame: JSON, socket: FrameSocket, hint: list[float]) -> None:
        kind = frame.get("type")
        if kind == "ping":
            with contextlib.suppress(CloseError):
                await socket.send({"type": "pong"})
            return
        if kind in ("pong", "reauthenticated"):
            return
        if kind == "token_expiring":
            # The refresh loop renews a fifth of the lifetime ahead; a server that warns
            # earlier than that gets a refresh now (which re-authenticates this socket).
            task = asyncio.get_running_loop().create_task(self._refresh_now())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        if kind == "reconnect":
            hint.append(max(0.0, float(frame.get("after_ms") or 0) / 1000))
            return
        if kind == "ack":
            self._acked(frame)
            return
        if kind == "error" and frame.get("client_id") in self._pending:
            self._send_refused(frame)
            return
        event = ev.parse_event(frame)
        if isinstance(event, ev.MessageEvent):
            last = self.positions.get(event.room_id)
            if last is not None and event.seq <= last:
                return  # seen before the reconnect (or a re-published retry)
            self.positions[event.room_id] = event.seq
        elif isinstance(event, ev.Ready):
            self.user_id = event.user_id
            self.rooms = set(event.rooms)
        elif isinstance(event, ev.Resumed):
            for room_id, seq in event.rooms.items():
                self.positions[room_id] = max(seq, self.positions.get(room_id, 0))
        elif isinstance(event, ev.RoomAdded):
            self.rooms.add(event.room_id)
            if event.room is not None and event.room_id not in self.positions:
                self.positions[event.room_id] = event.room.last_seq
        elif isinstance(event, ev.RoomRemoved):
            self.rooms.discard(event.room_id)
            self.positions.pop(event.room_id, None)
        elif isinstance(event, ev.ServerError) and event.code == "not_member" and event.room_ids:
            for room_id in event.room_ids:  # a resume named rooms this user has left
                self.positions.pop(room_id, None)
        self._emit(event)

    def _acked(self, frame: JSON) -> None:
        pending = self._pending.get(str(frame.get("client_id")))
        if pending is not None and not pending.future.done():
            pending.future.set_result(Message.from_json(frame["message"]))

    def _send_refused(self, frame: JSON) -> None:
        pending = self._pending[str(frame.get("client_id"))]
        code = str(frame.get("code"))
        if pending.future.done():
            return
        if code in RETRYABLE_SEND_ERRORS:
            retry_after = frame.get("retry_after")
            delay = (
                float(retry_after)
                if isinstance(retry_after, int | float)
                else self._rng.uniform(0.1, 0.5)
            )
            asyncio.get_running_loop().call_later(delay, pending.wake.set)
            return
        pending.future.set_exception(
            SendError(code, str(frame.get("message") or ""), pending.room_id, pending.client_id)
        )

    def _tokens_changed(self, tokens: Tokens) -> None:
        if self.state != "idle":  # signing in is not news
            self._emit(ev.TokensRefreshed(tokens))
        socket = self._socket
        if socket is not None and self._live.is_set():
            # The server closes a socket whose token expires (4401) unless it is given the new
            # one in-band (docs/protocol.md, "auth" on an open socket): no reconnect needed.
            task = asyncio.get_running_loop().create_task(
                self._reauthenticate(socket, tokens.access_token)
            )
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reauthenticate(self, socket: FrameSocket, token: str) -> None:
        with contextlib.suppress(CloseError):  # the socket went away: the reconnect uses it
            await socket.send({"type": "auth", "token": token})

    async def _refresh_now(self) -> None:
        with contextlib.suppress(HypersendError):  # refused or unreachable: 4401 then reconnect
            await self.rest.refresh()

    async def _refresh_loop(self) -> None:
        """Keep the access token fresh so a reconnect never starts with an expired one."""
        failures = 0
        while True:
            tokens = self.rest.tokens
            if tokens is None:
                return
            await asyncio.sleep(max(0.0, tokens.refresh_at() - time.monotonic()))
            try:
                await self.rest.access_token()
                failures = 0
            except TransportError:
                failures += 1
                await asyncio.sleep(self.backoff.delay(failures, self._rng))
            except HypersendError:
                return  # refused: the next reconnect reports it

    def _stop(self, error: Exception | None) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.error = error
        self._live.clear()
        self._stopped.set()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error or ClientClosedError("the client is closed"))
        self._emit(ev.Disconnected(error))
        current = asyncio.current_task()
        if self._refresher is not None and self._refresher is not current:
            self._refresher.cancel()
