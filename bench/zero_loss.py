"""Zero-loss checker: clients that send and receive through faults, then proof of delivery.

N members (``rooms`` x ``members``, each user in one room, spread over the given servers so every
room crosses processes) hold one WebSocket each and send continuously, every message with its own
``client_id``, retrying (same ``client_id``, on whichever server they are connected to) until it
is acknowledged. Sockets that close, or stop answering pings, reconnect to the next server and
``resume`` from the last seq they saw. At the end the checker stops sending, waits until every
member has every acknowledged message of its room (or the settle time ran out) and proves, per
member, that each acknowledged message was delivered exactly once and in seq order; it reads the
rooms' history over REST to prove that no ``client_id`` was stored twice.

Library use (the fault tests in ``tests/integration/chatserver/test_fault_matrix.py``)::

    checker = ZeroLossChecker(["http://127.0.0.1:8001", "http://127.0.0.1:8002"])
    await checker.setup()          # register users, create rooms (REST)
    await checker.start()          # connect and send
    ...                            # inject a fault, wait for something
    report = await checker.finish(settle=30)
    print(report.format()); assert report.ok, report.problems()

Command line, against running servers (their ``HYPERSEND_RATE_LIMIT_PER_MINUTE`` must allow the
send rate: each member sends about ``60 / interval`` frames per minute)::

    .venv/bin/python bench/zero_loss.py --server http://127.0.0.1:8080 --seconds 30

Everything it dials is the servers it is given (loopback in tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# The client package (clients/python), also when it is not installed in the venv.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from hypersend_client import CloseError, FrameSocket, RestClient, TransportError

# The client's own dead-server detection (a frozen server keeps its TCP connections open).
WS_PING_INTERVAL_SECONDS: Final = 1.0
WS_PING_TIMEOUT_SECONDS: Final = 3.0
OPEN_TIMEOUT_SECONDS: Final = 5.0
# From connect to ``resumed``: longer means the server is stuck; try the next one.
HANDSHAKE_TIMEOUT_SECONDS: Final = 15.0
# No ack within this long: the send is retried with the same client_id.
ACK_TIMEOUT_SECONDS: Final = 10.0
# Error codes after which a send is retried (same client_id); any other error is a failure.
RETRYABLE: Final = frozenset({"store_failed", "internal", "try_again", "rate_limited"})
RETRY_PAUSE_SECONDS: Final = 0.05
# A ``reconnect`` hint is honoured up to this many milliseconds.
MAX_RECONNECT_WAIT_MS: Final = 5000
RECONNECT_BACKOFF_SECONDS: Final = (0.05, 1.0)  # first retry, cap (doubling, jittered)


class SendFailed(Exception):
    """A send was refused for a reason retrying cannot fix (a checker or server bug)."""


@dataclass(frozen=True)
class Account:
    id: str
    username: str
    token: str


@dataclass
class Report:
    """What happened; ``ok`` only when nothing acknowledged was lost, duplicated or reordered."""

    members: int
    sent: int  # distinct messages (client ids) the members sent
    attempts: int  # send frames including retries
    acked: int
    expected_deliveries: int  # acked messages x members of their room
    delivered: int  # distinct acknowledged messages members received
    missing: int
    duplicates: int  # message frames of a seq a member had already received
    reorders: int  # message frames with a seq below one the member had already received
    stored_twice: int  # client ids stored under more than one seq
    unacked_stored: int  # stored messages no ack reported (must be 0: every send is retried)
    reconnects: int
    max_reconnect_seconds: float  # socket lost -> resumed on a server again
    max_ack_seconds: float  # first send attempt -> ack, retries included
    # Last frame on a socket that was lost -> resumed again: the whole blip as the member saw it,
    # including the time to notice a silent (frozen) server.
    max_dark_seconds: float
    closes: dict[str, int] = field(default_factory=dict)  # close code -> count
    # `reconnect` frames: a draining server sends one before it closes with 1012.
    reconnect_hints: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error code -> count (retried)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        found = []
        for name in ("missing", "duplicates", "reorders", "stored_twice", "unacked_stored"):
            if getattr(self, name):
                found.append(f"{name}={getattr(self, name)}")
        if self.acked != self.sent:
            found.append(f"acked {self.acked} of {self.sent} sent")
        return found + self.details[:10]

    def format(self) -> str:
        closes = ", ".join(f"{code}x{n}" for code, n in sorted(self.closes.items())) or "none"
        errors = ", ".join(f"{code}x{n}" for code, n in sorted(self.errors.items())) or "none"
        return (
            f"members={self.members} sent={self.sent} attempts={self.attempts} "
            f"acked={self.acked} delivered={self.delivered}/{self.expected_deliveries} "
            f"missing={self.missing} duplicates={self.duplicates} reorders={self.reorders} "
            f"stored_twice={self.stored_twice} unacked_stored={self.unacked_stored} "
            f"reconnects={self.reconnects} max_reconnect={self.max_reconnect_seconds:.2f}s "
            f"max_dark={self.max_dark_seconds:.2f}s max_ack={self.max_ack_seconds:.2f}s "
            f"reconnect_hints={self.reconnect_hints} closes=[{closes}] "
            f"retried_errors=[{errors}]"
        )


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws"


class Member:
    """One user with one socket in one room: sends, receives, reconnects, records."""

    def __init__(
        self,
        checker: ZeroLossChecker,
        account: Account,
        room_id: str,
        first_server: int,
        rng: random.Random,
    ) -> None:
        self.checker = checker
        self.account = account
        self.room_id = room_id
        self.server = first_server
        self.rng = rng
        self.received: list[int] = []  # every message seq of the room, in arrival order
        self.acked: dict[str, int] = {}  # client id -> seq
        self.sent = 0
        self.attempts = 0
        self.reconnect_times: list[float] = []
        self.dark_times: list[float] = []
        self._last_frame = time.monotonic()
        self._dark_since: float | None = None
        self.max_ack_seconds = 0.0
        self.closes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.reconnect_hints = 0
        self.stopping = False
        self.sending = True
        self._ws: FrameSocket | None = None
        self._live = asyncio.Event()
        # When the last live socket was lost (None: live now, or never live yet).
        self._lost_at: float | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """The server this member is connected (or connecting) to."""
        return self.checker.urls[self.server % len(self.checker.urls)]

    @property
    def live(self) -> bool:
        """Connected and resumed."""
        return self._live.is_set()

    @property
    def last_seq(self) -> int:
        return max(self.received, default=0)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name=f"zl-conn-{self.account.username}"),
            asyncio.create_task(self._send_loop(), name=f"zl-send-{self.account.username}"),
        ]

    async def wait_live(self) -> None:
        await self._live.wait()

    async def stop_sending(self) -> None:
        """Stop starting new messages; return once the one in flight is acknowledged."""
        self.sending = False
        await self._tasks[1]

    async def close(self) -> None:
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close(within=1.0)

    # -- connection ------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        # Not hypersend_client.Client: the checker must see the server's raw delivery (that
        # client drops duplicates), rotate servers itself and time each step, so it drives
        # the package's bare FrameSocket.
        backoff = RECONNECT_BACKOFF_SECONDS[0]
        while not self.stopping:
            url = ws_url(self.url)
            wait_ms = 0
            try:
                ws = await FrameSocket.open(
                    url,
                    open_timeout=OPEN_TIMEOUT_SECONDS,
                    keepalive=(WS_PING_INTERVAL_SECONDS, WS_PING_TIMEOUT_SECONDS),
                    close_timeout=1.0,
                )
                self._ws = ws
                try:
                    wait_ms = await self._session(ws)
                finally:
                    await ws.close(within=1.0)
                if self._live.is_set():
                    backoff = RECONNECT_BACKOFF_SECONDS[0]
            except TransportError as exc:
                self.closes[type(exc.__cause__ or exc).__name__] += 1
            except CloseError as exc:  # closed while authenticating
                self.closes[_close_key(exc)] += 1
            finally:
                self._ws = None
                if self._live.is_set():
                    self._lost_at = time.monotonic()
                    self._dark_since = self._last_frame
                self._live.clear()
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("socket lost"))
                        fut.exception()  # retrieved: its sender may have given up on it
                self._pending.clear()
            if self.stopping:
                return
            self.server += 1  # the next server (a dead one fails fast or times out)
            pause = max(wait_ms / 1000, self.rng.uniform(0, backoff))
            backoff = min(backoff * 2, RECONNECT_BACKOFF_SECONDS[1])
            await asyncio.sleep(pause)

    async def _session(self, ws: FrameSocket) -> int:
        """Authenticate, resume, then read until the socket closes; the reconnect hint (ms)."""
        await ws.send({"type": "auth", "token": self.account.token})
        await ws.send({"type": "resume", "rooms": {self.room_id: self.last_seq}})
        wait_ms = 0
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_SECONDS) as handshake:
                while True:
                    frame = await ws.recv()
                    self._last_frame = time.monotonic()
                    kind = frame.get("type")
                    if kind == "resumed":
                        handshake.reschedule(None)
                        now = time.monotonic()
                        if self._lost_at is not None:
                            self.reconnect_times.append(now - self._lost_at)
                            self._lost_at = None
                        if self._dark_since is not None:
                            self.dark_times.append(now - self._dark_since)
                            self._dark_since = None
                        self._live.set()
                    elif kind == "reconnect":
                        self.reconnect_hints += 1
                        wait_ms = min(int(frame.get("after_ms", 0)), MAX_RECONNECT_WAIT_MS)
                    else:
                        self._on_frame(ws, frame)
        except CloseError as exc:
            self.closes[_close_key(exc)] += 1
            return wait_ms
        except TimeoutError:
            self.closes["TimeoutError"] += 1
            return wait_ms

    def _on_frame(self, ws: FrameSocket, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message" and frame.get("room_id") == self.room_id:
            self.received.append(int(frame["seq"]))
        elif kind in ("ack", "error"):
            fut = self._pending.get(str(frame.get("client_id")))
            if fut is not None and not fut.done():
                fut.set_result(frame)
            elif kind == "error":
                self.errors[str(frame.get("code"))] += 1
        elif kind == "ping":
            task = asyncio.create_task(ws.send({"type": "pong"}))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- sending ---------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        n = 0
        while self.sending and not self.stopping:
            client_id = f"{self.account.username}-{n}"
            n += 1
            self.sent += 1
            started = time.monotonic()
            self.acked[client_id] = await self._send_until_acked(client_id, f"m{n}")
            self.max_ack_seconds = max(self.max_ack_seconds, time.monotonic() - started)
            self.checker.progress.set()
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.checker.interval)

    async def _send_until_acked(self, client_id: str, text: str) -> int:
        frame = {"type": "send", "room_id": self.room_id, "client_id": client_id, "text": text}
        while True:
            await self._live.wait()
            ws = self._ws
            if ws is None:
                continue
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending[client_id] = fut
            self.attempts += 1
            try:
                await ws.send(frame)
                async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
                    answer = await fut
            except (ConnectionError, CloseError, TimeoutError):
                # Let the connection loop notice the loss (and clear "live") before retrying.
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            finally:
                if self._pending.get(client_id) is fut:
                    del self._pending[client_id]
            if answer["type"] == "ack":
                return int(answer["seq"])
            code = str(answer.get("code"))
            self.errors[code] += 1
            if code not in RETRYABLE:
                raise SendFailed(f"{client_id}: {answer}")
            await asyncio.sleep(min(float(answer.get("retry_after", 0.1)), 1.0))


class ZeroLossChecker:
    """Members over ``urls`` (server roots, ``http://127.0.0.1:<port>``); see the module doc."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        rooms: int = 3,
        members: int = 3,
        interval: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL")
        self.urls = list(urls)
        self.rooms = rooms
        self.members_per_room = members
        self.interval = interval
        self.rng = random.Random(seed)
        self.members: list[Member] = []
        self.room_ids: list[str] = []
        self._admin: Account | None = None
        # Set on every acknowledgement (wait_acked waits on it).
        self.progress = asyncio.Event()

    async def setup(self) -> None:
        """Register ``rooms x members`` users and one group room per ``members`` of them."""
        index = 0
        for _ in range(self.rooms):
            accounts = [await _register(self.urls[0]) for _ in range(self.members_per_room)]
            owner = accounts[0]
            rest = _rest(self.urls[0], owner)
            try:
                room = await rest.create_group("zero-loss", [a.id for a in accounts])
            finally:
                await rest.aclose()
            self.room_ids.append(room.id)
            self._admin = self._admin or owner
            for account in accounts:
                rng = random.Random(self.rng.random())
                self.members.append(Member(self, account, room.id, index, rng))
                index += 1

    async def start(self, within: float = 60.0) -> None:
        """Connect every member and start sending; return once all are live."""
        for member in self.members:
            member.start()
        async with asyncio.timeout(within):
            await asyncio.gather(*(m.wait_live() for m in self.members))

    def acked_count(self) -> int:
        return sum(len(m.acked) for m in self.members)

    async def wait_acked(self, count: int, within: float = 60.0) -> None:
        """Wait until at least ``count`` messages are acknowledged in total."""
        async with asyncio.timeout(within):
            while self.acked_count() < count:
                self.progress.clear()
                await self.progress.wait()

    def acked_by_room(self) -> dict[str, set[int]]:
        by_room: dict[str, set[int]] = {room: set() for room in self.room_ids}
        for member in self.members:
            by_room[member.room_id].update(member.acked.values())
        return by_room

    async def finish(self, settle: float = 30.0, send_within: float = 60.0) -> Report:
        """Stop sending (in-flight sends still retried until acked), wait up to ``settle`` s
        for every member to receive every acknowledged message, check, and close."""
        try:
            async with asyncio.timeout(send_within):
                await asyncio.gather(*(m.stop_sending() for m in self.members))
            by_room = self.acked_by_room()
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline:
                if all(by_room[m.room_id] <= set(m.received) for m in self.members):
                    break
                await asyncio.sleep(0.1)
            stored = await self._stored()
        finally:
            await asyncio.gather(*(m.close() for m in self.members))
        return self.verdict(by_room, stored)

    async def close(self) -> None:
        await asyncio.gather(*(m.close() for m in self.members))

    async def _stored(self) -> dict[str, list[tuple[int, str, str]]]:
        """Every stored message per room: (seq, sender id, client id), read over REST."""
        stored: dict[str, list[tuple[int, str, str]]] = {}
        by_room = {m.room_id: m for m in self.members}
        for base in self.urls:  # the first server that answers
            try:
                for room_id, member in by_room.items():
                    stored[room_id] = await _history(base, member.account, room_id)
                return stored
            except TransportError:
                continue
        raise RuntimeError("no server answered the history read")

    def verdict(
        self, by_room: dict[str, set[int]], stored: dict[str, list[tuple[int, str, str]]]
    ) -> Report:
        """The report from what members received, ``by_room`` (acked seqs of each room) and
        ``stored`` (each room's (seq, sender id, client id) rows). Pure: no I/O."""
        details: list[str] = []
        missing = duplicates = reorders = delivered = expected = 0
        for member in self.members:
            want = by_room[member.room_id]
            expected += len(want)
            seen: set[int] = set()
            high = 0
            for seq in member.received:
                if seq in seen:
                    duplicates += 1
                elif seq < high:
                    reorders += 1
                seen.add(seq)
                high = max(high, seq)
            delivered += len(want & seen)
            lost = want - seen
            missing += len(lost)
            if lost:
                details.append(f"{member.account.username} missed {sorted(lost)[:10]}")
        stored_twice = unacked = 0
        acked_cids = {
            (m.account.id, cid): seq for m in self.members for cid, seq in m.acked.items()
        }
        for room_id, rows in stored.items():
            per_cid = Counter((sender, cid) for _, sender, cid in rows)
            stored_twice += sum(n - 1 for n in per_cid.values() if n > 1)
            for seq, sender, cid in rows:
                if acked_cids.get((sender, cid)) != seq:
                    unacked += 1
                    details.append(f"room {room_id}: seq {seq} ({cid}) stored but not acked")
            if [seq for seq, _, _ in rows] != list(range(1, len(rows) + 1)):
                details.append(f"room {room_id}: stored seqs are not 1..{len(rows)}")
        reconnect_times = [t for m in self.members for t in m.reconnect_times]
        closes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for member in self.members:
            closes.update(member.closes)
            errors.update(member.errors)
        return Report(
            members=len(self.members),
            sent=sum(m.sent for m in self.members),
            attempts=sum(m.attempts for m in self.members),
            acked=self.acked_count(),
            expected_deliveries=expected,
            delivered=delivered,
            missing=missing,
            duplicates=duplicates,
            reorders=reorders,
            stored_twice=stored_twice,
            unacked_stored=unacked,
            reconnects=len(reconnect_times),
            max_reconnect_seconds=max(reconnect_times, default=0.0),
            max_ack_seconds=max((m.max_ack_seconds for m in self.members), default=0.0),
            max_dark_seconds=max((t for m in self.members for t in m.dark_times), default=0.0),
            closes=dict(closes),
            reconnect_hints=sum(m.reconnect_hints for m in self.members),
            errors=dict(errors),
            details=details,
        )


def _close_key(error: CloseError) -> str:
    return "abnormal" if error.close_code == 1006 else str(error.close_code)


def _rest(base_url: str, account: Account) -> RestClient:
    rest = RestClient(base_url, timeout=30)
    rest.use_tokens(account.token, "", expires_in=3600)
    return rest


async def _register(base_url: str) -> Account:
    username = f"zl{secrets.token_hex(5)}"
    rest = RestClient(base_url, timeout=30)
    try:
        user = await rest.register(username, "zero loss pass")
        return Account(id=user.id, username=username, token=await rest.access_token())
    finally:
        await rest.aclose()


async def _history(base_url: str, account: Account, room_id: str) -> list[tuple[int, str, str]]:
    rest = _rest(base_url, account)
    try:
        return [(m.seq, m.sender_id, m.client_id) for m in await rest.all_messages(room_id)]
    finally:
        await rest.aclose()


async def run(args: argparse.Namespace) -> Report:
    checker = ZeroLossChecker(
        args.server, rooms=args.rooms, members=args.members, interval=args.interval
    )
    await checker.setup()
    await checker.start()
    await asyncio.sleep(args.seconds)  # the load runs for this long (a benchmark, not a test)
    return await checker.finish(settle=args.settle)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--server", action="append", required=True, help="server root URL")
    parser.add_argument("--rooms", type=int, default=3)
    parser.add_argument("--members", type=int, default=3, help="members per room")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between sends")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send")
    parser.add_argument("--settle", type=float, default=30.0)
    report = asyncio.run(run(parser.parse_args(argv)))
    print(report.format())
    if not report.ok:
        print("FAILED:", "; ".join(report.problems()))
        sys.exit(1)


if __name__ == "__main__":
    main()
