"""Redis: pub/sub fan-out between processes, the shared rate limiter and presence.

This is the only module that imports redis. One process holds two Redis connections pools:
``_client`` for commands (publish, rate limit, presence) and ONE pub/sub connection, subscribed
only to the channels of rooms and users that have sockets on this process.

Channels (all under the key prefix):
  ``room:<room_id>`` -- events of a room (messages, edits, reactions, read receipts, typing,
  presence of its members); ``user:<user_id>`` -- events for one user (room_added/room_removed).

Every published payload is an envelope ``{"ts": <publish time, unix seconds>, "event": {...}}``
so receivers can observe pub/sub lag and delivery latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "hypersend:"
RATE_WINDOW_MS: Final = 60_000
# A connection counts as online for this long unless its process refreshes it.
PRESENCE_TTL_MS: Final = 90_000
SUBSCRIBE_TIMEOUT_SECONDS: Final = 5.0
COMMAND_POOL_SIZE: Final = 64
COMMAND_POOL_WAIT_SECONDS: Final = 10.0
# A command (publish, rate check, presence) to a Redis that stopped answering fails after this
# instead of hanging: a publish runs inside a room's send turn (see Store.append_message).
COMMAND_SOCKET_TIMEOUT_SECONDS: Final = 5.0

ChannelKind = Literal["room", "user"]

# Sliding-window log: at most ARGV[1] entries in the last ARGV[2] ms, timed by the Redis clock so
# all processes agree. Returns {allowed (0/1), retry_after_ms}.
_RATE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = window
if oldest[2] then retry = tonumber(oldest[2]) + window - now end
if retry < 1 then retry = 1 end
return {0, retry}
"""

# Presence: a sorted set of connection ids scored by expiry (Redis clock). ARGV[1] = connection id,
# ARGV[2] = ttl ms. Returns the number of live connections after the change.
_PRESENCE_ADD_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""
_PRESENCE_REMOVE_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {removed, redis.call('ZCARD', KEYS[1])}
"""


class BusSettings(Protocol):
    """The part of ``chatserver.config.Settings`` the bus reads."""

    @property
    def redis_url(self) -> SecretStr: ...

    @property
    def redis_prefix(self) -> str: ...

    @property
    def rate_limit_per_minute(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one rate-limit check; ``retry_after`` in seconds when refused."""

    allowed: bool
    retry_after: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event received from pub/sub, already decoded."""

    kind: ChannelKind
    target: str  # room id or user id
    event: dict[str, Any]
    published_at: float  # unix seconds, stamped by the publisher


DeliveryHandler = Callable[[Delivery], None]
InterruptHandler = Callable[[], Awaitable[None]]


def envelope(event: dict[str, Any], now: float | None = None) -> str:
    """The JSON payload published for ``event``: the event plus its publish timestamp."""
    return json.dumps(
        {"ts": time.time() if now is None else now, "event": event}, separators=(",", ":")
    )


def parse_envelope(data: bytes | str) -> tuple[dict[str, Any], float] | None:
    """(event, published_at) from a payload, or None if it is not a well-formed envelope."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    event, ts = body.get("event"), body.get("ts")
    if not isinstance(event, dict) or not isinstance(ts, int | float):
        return None
    return event, float(ts)


class Bus:
    """Redis access for one server process. Create with :meth:`connect`."""

    def __init__(
        self,
        client: aioredis.Redis,
        pubsub_client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        rate_limit_per_minute: int = 100,
    ) -> None:
        self._client = client
        self._pubsub_client = pubsub_client
        self.prefix = prefix
        self.rate_limit_per_minute = rate_limit_per_minute
        self._rate_script = client.register_script(_RATE_LUA)
        self._presence_add = client.register_script(_PRESENCE_ADD_LUA)
        self._presence_remove = client.register_script(_PRESENCE_REMOVE_LUA)
        self._pubsub: PubSub | None = None
        self._channels: set[str] = set()
        # Per channel, one entry per (un)subscribe command not yet confirmed, in command order;
        # Redis confirms per channel in that order, so the head is the command being confirmed.
        self._pending: dict[str, deque[asyncio.Future[None] | None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._handler: DeliveryHandler | None = None
        self._on_interrupt: InterruptHandler | None = None
        self._closing = False

    @classmethod
    async def connect(cls, settings: BusSettings) -> Bus:
        """Connect to ``settings.redis_url`` and check that Redis answers."""
        url = settings.redis_url.get_secret_value()
        # Thousands of sockets share a few connections: a command waits for a free one instead
        # of failing with "Too many connections" (redis-py's default pool raises at 100).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=COMMAND_POOL_SIZE,
            timeout=COMMAND_POOL_WAIT_SECONDS,
            socket_timeout=COMMAND_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=COMMAND_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        # The pub/sub connection must never reconnect silently: redis-py would resubscribe, but
        # whatever was published in between would be lost without anyone noticing.
        pubsub_client = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
        bus = cls(
            client,
            pubsub_client,
            prefix=settings.redis_prefix,
            rate_limit_per_minute=settings.rate_limit_per_minute,
        )
        await bus.ping()
        return bus

    # -- names ---------------------------------------------------------------------------------

    def channel(self, kind: ChannelKind, target: str) -> str:
        return f"{self.prefix}{kind}:{target}"

    def _parse_channel(self, channel: str) -> tuple[ChannelKind, str] | None:
        if not channel.startswith(self.prefix):
            return None
        kind, _, target = channel[len(self.prefix) :].partition(":")
        if kind == "room":
            return "room", target
        if kind == "user":
            return "user", target
        return None

    # -- commands ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise if Redis does not answer (used by ``/readyz``)."""
        await self._client.ping()

    async def publish_room(self, room_id: str, event: dict[str, Any]) -> None:
        """Publish ``event`` to every process with members of ``room_id`` connected."""
        await self._client.publish(self.channel("room", room_id), envelope(event))

    async def publish_rooms(self, room_ids: Iterable[str], event: dict[str, Any]) -> None:
        """Publish one ``event`` to several rooms in one round trip (e.g. presence)."""
        payload = envelope(event)
        async with self._client.pipeline(transaction=False) as pipe:
            for room_id in room_ids:
                pipe.publish(self.channel("room", room_id), payload)
            await pipe.execute()

    async def publish_user(self, user_id: str, event: dict[str, Any]) -> None:
        """Publish ``event`` to every socket of ``user_id``, on any process."""
        await self._client.publish(self.channel("user", user_id), envelope(event))

    async def check_rate(self, user_id: str) -> RateDecision:
        """Count one request of ``user_id`` against the shared per-minute limit (atomic)."""
        allowed, retry_ms = await self._rate_script(
            keys=[f"{self.prefix}rate:{user_id}"],
            args=[self.rate_limit_per_minute, RATE_WINDOW_MS, secrets.token_hex(4)],
        )
        if int(allowed):
            return RateDecision(allowed=True, retry_after=0.0)
        return RateDecision(allowed=False, retry_after=int(retry_ms) / 1000)

    async def presence_connect(self, user_id: str, connection_id: str) -> bool:
        """Record a live connection; True if the user just came online (first connection)."""
        count = await self._presence_add(
            keys=[f"{self.prefix}presence:{user_id}"], args=[connection_id, PRESENCE_TTL_MS]
        )
        return int(count) == 1

    async def presence_disconnect(self, user_id: str, connection_id: str) -> bool:
        """Forget a connection; True if the user just went offline (it was the last one)."""
        removed, count = await self._presence_remove(
            keys=[f"{self.prefix}presence:{user_id}"], args=[connection_id]
        )
        return int(removed) == 1 and int(count) == 0

    async def presence_refresh(self, connections: Iterable[tuple[str, str]]) -> None:
        """Extend the expiry of live (user id, connection id) pairs held by this process."""
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, connection_id in connections:
                pipe.zadd(
                    f"{self.prefix}presence:{user_id}",
                    {connection_id: time.time() * 1000 + PRESENCE_TTL_MS},
                )
                pipe.pexpire(f"{self.prefix}presence:{user_id}", PRESENCE_TTL_MS)
            await pipe.execute()

    async def online(self, user_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each user has at least one live connection on any process."""
        ids = list(user_ids)
        now_ms = time.time() * 1000
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.zcount(f"{self.prefix}presence:{user_id}", now_ms, "+inf")
            counts = await pipe.execute()
        return {user_id: int(n) > 0 for user_id, n in zip(ids, counts, strict=True)}

    # -- pub/sub -------------------------------------------------------------------------------

    async def start(self, handler: DeliveryHandler, on_interrupt: InterruptHandler) -> None:
        """Open the process's pub/sub connection; ``handler`` gets every delivery (sync, fast).

        ``on_interrupt`` runs when the pub/sub connection was lost: events may have been missed,
        so subscribers must resynchronise from MongoDB. The bus reconnects and resubscribes.
        """
        self._handler = handler
        self._on_interrupt = on_interrupt
        await self._open_pubsub()
        self._listener = asyncio.create_task(self._listen(), name="bus-listener")

    async def _open_pubsub(self) -> None:
        pubsub = self._pubsub_client.pubsub()
        # A placeholder channel keeps the connection in subscribed mode even with no rooms.
        await pubsub.subscribe(f"{self.prefix}process:{id(self):x}")
        self._pubsub = pubsub
        if self._channels:
            await pubsub.subscribe(*self._channels)

    async def subscribe(self, kind: ChannelKind, targets: Iterable[str]) -> None:
        """Subscribe to channels and return once Redis confirmed every one of them.

        After this returns, anything published to those channels reaches the handler: callers
        rely on that to replay history without a gap (subscribe first, then read MongoDB).
        """
        channels = [self.channel(kind, t) for t in targets]
        if not channels or self._pubsub is None:
            return
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        for ch in channels:
            fut: asyncio.Future[None] = loop.create_future()
            self._pending.setdefault(ch, deque()).append(fut)
            waits.append(fut)
        self._channels.update(channels)
        try:
            await self._pubsub.subscribe(*channels)
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                await asyncio.gather(*waits)
        finally:
            for fut in waits:
                fut.cancel()  # no-op when confirmed; a late confirmation then finds it done

    async def unsubscribe(self, kind: ChannelKind, targets: Iterable[str]) -> None:
        """Stop receiving the channels (no confirmation awaited)."""
        channels = [self.channel(kind, t) for t in targets]
        if not channels or self._pubsub is None:
            return
        for ch in channels:
            self._pending.setdefault(ch, deque()).append(None)
        self._channels.difference_update(channels)
        await self._pubsub.unsubscribe(*channels)

    @property
    def subscribed_channels(self) -> int:
        return len(self._channels)

    def _confirm(self, channel: str) -> None:
        queue = self._pending.get(channel)
        if not queue:
            return
        fut = queue.popleft()
        if not queue:
            del self._pending[channel]
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _listen(self) -> None:
        while not self._closing:
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    raise RedisError("pub/sub connection not open")
                msg = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                log.warning("pub/sub connection lost: %s; resubscribing", type(exc).__name__)
                await self._recover()
                continue
            if msg is not None:
                self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, raw_channel = msg.get("type"), msg.get("channel")
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind in ("subscribe", "unsubscribe"):
            self._confirm(channel)
            return
        if kind != "message" or self._handler is None:
            return
        parsed_channel = self._parse_channel(channel)
        parsed = parse_envelope(msg.get("data", b""))
        if parsed_channel is None or parsed is None:
            log.warning("ignoring malformed pub/sub payload")
            return
        event, published_at = parsed
        try:
            self._handler(Delivery(parsed_channel[0], parsed_channel[1], event, published_at))
        except Exception:  # one bad delivery must not stop the listener
            log.exception("pub/sub delivery handler failed")

    async def _recover(self) -> None:
        old, self._pubsub = self._pubsub, None
        for queue in self._pending.values():
            for fut in queue:
                if fut is not None and not fut.done():
                    fut.set_exception(RedisError("pub/sub connection lost"))
        self._pending.clear()
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]
        delay = 0.1
        while not self._closing:
            try:
                await self._open_pubsub()
                break
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._on_interrupt is not None and not self._closing:
            try:
                await self._on_interrupt()
            except Exception:
                log.exception("pub/sub interrupt handler failed")

    async def close(self) -> None:
        """Stop listening and close both connections."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._pubsub_client.aclose()
        await self._client.aclose()
