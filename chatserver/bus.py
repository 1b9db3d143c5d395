"""Redis: pub/sub fan-out between processes, the shared rate limiter and presence.

This is the only module that imports redis. One process holds two Redis connections pools:
``_client`` for commands (publish, rate limit, presence) and ONE pub/sub connection, subscribed
only to the channels of rooms and users that have sockets on this process.

Commands are pipelined (:class:`Pipeliner`): every command issued while a round trip is in flight
waits in a queue and goes out with the others in the next one, on a single connection, in the
order issued. Thousands of sockets therefore never compete for pool connections: before this,
each command took a connection of a 64-connection pool for its whole round trip, and under load
(event-loop lag in seconds) the pool ran dry -- "No connection available" after the pool's wait
-- which put the whole process into degraded mode (issue #16). A pipelined command waits for its
turn instead of failing; only an answer Redis does not give fails it.

Channels (all under the key prefix):
  ``room:<room_id>`` -- events of a room (messages, edits, reactions, read receipts, typing,
  presence of its members); ``user:<user_id>`` -- events for one user (room_added/room_removed,
  sessions_revoked).

Every published payload is an envelope ``{"ts": <publish time, unix seconds>, "event": {...}}``
so receivers can observe pub/sub lag and delivery latency.

Degraded mode (Redis unreachable or frozen). MongoDB is the source of truth, so losing Redis must
cost live fan-out for a while, never a socket or a message:

- Both connections have TCP keepalive (``TCP_KEEPALIVE``: a dead peer host is found by the kernel
  within about 11 s) and an application health check, because keepalive alone cannot see a Redis
  whose process is frozen (its kernel still answers the probes). The health monitor PINGs over the
  command pool every ``HEALTH_INTERVAL_SECONDS``; the pub/sub reader PINGs on its own connection
  once it has been silent that long. No answer within ``HEALTH_TIMEOUT_SECONDS`` means the
  connection is dead: a half-open connection is found within ``DEAD_CONNECTION_BOUND_SECONDS``
  and replaced (the command pool at the next command, pub/sub at once, with jittered backoff).
- While the command side is down, commands fail fast instead of each waiting for a timeout:
  publishes are skipped (``publish_room`` returns False; the newest skipped ``message`` of each
  room is published once Redis answers again, so other processes' sockets notice the gap and fill
  it from MongoDB), the rate limit falls back to a per-process window
  (``chatserver.ratelimit``) and presence calls raise :class:`BusUnavailable`.
- While pub/sub is down, ``subscribe`` records the channels and returns at once. When a new
  pub/sub connection has confirmed every channel, ``on_resync`` runs: the hub catches every room
  with local members up from MongoDB (anything published meanwhile was lost for this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from chatserver import metrics
from chatserver.ratelimit import LocalRateLimiter

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "hypersend:"
RATE_WINDOW_MS: Final = 60_000
# A connection counts as online for this long unless its process refreshes it.
PRESENCE_TTL_MS: Final = 90_000
# Presence refreshes queued at a time: each batch's commands are packed and their replies read
# in one go, so smaller batches let deliveries run in between (bench/presence_refresh.py).
PRESENCE_REFRESH_CHUNK: Final = 100
SUBSCRIBE_TIMEOUT_SECONDS: Final = 5.0
# The pipeliner holds one connection, the health monitor another; the rest is headroom.
COMMAND_POOL_SIZE: Final = 4
COMMAND_POOL_WAIT_SECONDS: Final = 10.0
# Commands sent in one pipeline at most (a longer queue goes out in several round trips).
PIPELINE_MAX_COMMANDS: Final = 1000
# A command (publish, rate check, presence) to a Redis that stopped answering fails after this
# instead of hanging: a publish runs inside a room's send turn (see Store.append_message).
COMMAND_SOCKET_TIMEOUT_SECONDS: Final = 5.0
# redis-py announces itself with CLIENT SETINFO on every connection; an ACL user limited to the
# commands the server uses (the operator's in-cluster Redis, operator/hypersend_operator/
# builders/secrets.py) would refuse it, and Redis before 7.2 does not know it at all.
NO_CLIENT_SETINFO: Final[dict[str, Any]] = {"driver_info": None}
# Application health check of both connections (see the module docstring).
HEALTH_INTERVAL_SECONDS: Final = 1.0
HEALTH_TIMEOUT_SECONDS: Final = 3.0
# The pub/sub watchdog wakes up this often to check the connection (and to ping when silent).
PUBSUB_READ_SLICE_SECONDS: Final = 0.5
# A connection that stopped answering is declared dead at most this long after its last answer.
DEAD_CONNECTION_BOUND_SECONDS: Final = (
    HEALTH_INTERVAL_SECONDS + HEALTH_TIMEOUT_SECONDS + PUBSUB_READ_SLICE_SECONDS
)
# Reconnect attempts of the pub/sub connection: full jitter, doubling from MIN up to MAX.
RECONNECT_MIN_SECONDS: Final = 0.1
RECONNECT_MAX_SECONDS: Final = 5.0
# TCP keepalive of every Redis connection: first probe after 5 s idle, then every 2 s, 3 misses.
TCP_KEEPALIVE: Final[dict[int, int]] = {
    option: value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}
# Rooms whose newest unpublished message a process remembers during an outage (oldest dropped).
MAX_UNPUBLISHED_ROOMS: Final = 100_000
# What a Redis call raises when Redis is unreachable, frozen or misbehaving.
REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)

ChannelKind = Literal["room", "user"]
PubSubCommand = Literal["subscribe", "unsubscribe"]

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


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script run by EVALSHA, loaded with EVAL when Redis does not know it (yet)."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> LuaScript:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())  # Redis names scripts by SHA1


class Pipeliner:
    """Sends commands in pipelines, one round trip at a time, in the order they were issued.

    ``call`` queues a command and waits for its reply. A single task drains the queue: it takes
    everything queued (up to PIPELINE_MAX_COMMANDS), sends it as one pipeline and hands each
    command its reply (or its own error). Commands issued meanwhile go out in the next round
    trip, so under load batches grow instead of connections being fought over, and a command's
    order relative to the ones issued before it is kept.
    """

    def __init__(self, client: aioredis.Redis, up: Callable[[], bool] = lambda: True) -> None:
        self._client = client
        # Commands queued behind a round trip that found Redis down fail at once (BusUnavailable)
        # instead of each batch waiting for the socket timeout again.
        self._up = up
        self._queue: deque[tuple[tuple[Any, ...], asyncio.Future[Any]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def call(self, *args: Any) -> Any:
        """Run one command (``"PUBLISH", channel, payload``) and return its reply."""
        return await self._enqueue(args)

    async def call_many(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """Run several commands; each one's reply, or the error Redis answered it with."""
        futures = [self._enqueue(args) for args in commands]
        # Futures, not coroutines: gather adds a callback to each, no task per command.
        return list(await asyncio.gather(*futures, return_exceptions=True))

    def _enqueue(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self._closed:
            raise BusUnavailable("the bus is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="bus-pipeliner")
        return fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [
                    self._queue.popleft()
                    for _ in range(min(len(self._queue), PIPELINE_MAX_COMMANDS))
                ]
                await self._send(batch)
        finally:
            self._task = None

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        live = [(args, fut) for args, fut in batch if not fut.done()]  # callers may be gone
        if not live:
            return
        if not self._up():
            for _, fut in live:
                fut.set_exception(BusUnavailable("redis is unreachable (degraded mode)"))
            return
        names: dict[str, int] = {}
        pipe = self._client.pipeline(transaction=False)
        for args, _ in live:
            pipe.execute_command(*args)
            name = str(args[0]).lower()
            names[name] = names.get(name, 0) + 1
        metrics.REDIS_ROUND_TRIPS.inc()
        for name, count in names.items():
            metrics.REDIS_COMMANDS.labels(name).inc(count)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else BusUnavailable("the bus is closing")
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), reply in zip(live, replies, strict=True):
            if fut.done():
                continue
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    async def close(self) -> None:
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(BusUnavailable("the bus is closed"))


class BusSettings(Protocol):
    """The part of ``chatserver.config.Settings`` the bus reads."""

    @property
    def redis_url(self) -> SecretStr: ...

    @property
    def redis_prefix(self) -> str: ...

    @property
    def rate_limit_per_minute(self) -> int: ...


class BusUnavailable(RedisError):
    """Redis is known to be unreachable right now; the call was not attempted."""


class PubSubDead(RedisError):
    """The pub/sub connection stopped answering (health check) or confirming subscriptions."""


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
ResyncHandler = Callable[[], Awaitable[None]]


def _raise_first(replies: list[Any]) -> list[Any]:
    """``replies`` unchanged, unless one of them is an error: then that error is raised."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


@dataclass(slots=True)
class _Outbox:
    """(UN)SUBSCRIBEs for pub/sub connection ``generation``, to be sent in one go."""

    generation: int
    sent: asyncio.Future[None]
    commands: list[tuple[PubSubCommand, list[str]]] = field(default_factory=list)


def merge_runs(
    commands: Iterable[tuple[PubSubCommand, list[str]]],
) -> list[tuple[PubSubCommand, list[str]]]:
    """Consecutive commands of one kind as one command with all their channels, order kept."""
    merged: list[tuple[PubSubCommand, list[str]]] = []
    for command, channels in commands:
        if merged and merged[-1][0] == command:
            merged[-1][1].extend(channels)
        else:
            merged.append((command, list(channels)))
    return merged


def _count_pubsub(command: str) -> None:
    """A command on the pub/sub connection: one command and one write (its confirmations come
    back on the reader's stream)."""
    metrics.REDIS_ROUND_TRIPS.inc()
    metrics.REDIS_COMMANDS.labels(command).inc()


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
        self._pipeliner = Pipeliner(client, lambda: self.commands_ok)
        self._rate_script = LuaScript.of(_RATE_LUA)
        self._presence_add = LuaScript.of(_PRESENCE_ADD_LUA)
        self._presence_remove = LuaScript.of(_PRESENCE_REMOVE_LUA)
        # One per-process window per limit (per user, per client address ...).
        self._local_rates = {
            rate_limit_per_minute: LocalRateLimiter(rate_limit_per_minute, RATE_WINDOW_MS / 1000)
        }
        self._pubsub: PubSub | None = None
        # Bumped for every pub/sub connection; a kill request names the one it means.
        self._generation = 0
        self._dead_generation = -1
        self._channels: set[str] = set()
        # Per channel, one entry per (un)subscribe command not yet confirmed, in command order;
        # Redis confirms per channel in that order, so the head is the command being confirmed.
        self._pending: dict[str, deque[asyncio.Future[None] | None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._confirmer: asyncio.Task[None] | None = None
        self._handler: DeliveryHandler | None = None
        self._on_resync: ResyncHandler | None = None
        self._closing = False
        self._rng = random.Random()
        self._backoff = RECONNECT_MIN_SECONDS
        # Health: the command side answers; the pub/sub connection has confirmed every channel.
        self.commands_ok = True
        self.pubsub_ok = False
        # room id -> (seq, payload) of the newest message whose publish was skipped or failed.
        self._unpublished: dict[str, tuple[int, str]] = {}
        # The (UN)SUBSCRIBEs queued in this turn of the loop (see ``_queue_pubsub``).
        self._outbox: _Outbox | None = None
        self._outbox_tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(
        cls,
        settings: BusSettings,
        *,
        pool_size: int = COMMAND_POOL_SIZE,
        pool_wait_seconds: float = COMMAND_POOL_WAIT_SECONDS,
    ) -> Bus:
        """Connect to ``settings.redis_url`` and check that Redis answers."""
        url = settings.redis_url.get_secret_value()
        # The pipeliner and the health monitor hold a connection each; anything else waits for
        # a free one instead of failing with "Too many connections" (redis-py's default pool).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=pool_wait_seconds,
            socket_timeout=COMMAND_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=COMMAND_SOCKET_TIMEOUT_SECONDS,
            socket_keepalive=True,
            socket_keepalive_options=TCP_KEEPALIVE,
            health_check_interval=30,
            **NO_CLIENT_SETINFO,
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
        # The pub/sub connection must never reconnect silently: redis-py would resubscribe, but
        # whatever was published in between would be lost without anyone noticing. Reads use
        # explicit timeouts (the reader's health check), writes the command timeout.
        pubsub_client = aioredis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=COMMAND_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=COMMAND_SOCKET_TIMEOUT_SECONDS,
            socket_keepalive=True,
            socket_keepalive_options=TCP_KEEPALIVE,
            **NO_CLIENT_SETINFO,
        )
        bus = cls(
            client,
            pubsub_client,
            prefix=settings.redis_prefix,
            rate_limit_per_minute=settings.rate_limit_per_minute,
        )
        try:
            await bus.ping()
            await bus.load_scripts()
        except BaseException:
            await pubsub_client.aclose()
            await client.aclose()
            raise
        return bus

    async def load_scripts(self) -> None:
        """Have Redis cache the Lua scripts, so EVALSHA finds them from the first socket on.

        Unloaded, every EVALSHA of the first burst of connects failed with NOSCRIPT and ran
        again as EVAL: a second round trip, and an exception with its traceback each, garbage
        that only the cyclic collector frees (253 in a burst of 2,000 connects, issue #16).
        """
        scripts = (self._rate_script, self._presence_add, self._presence_remove)
        await self._pipeliner.call_many(("SCRIPT", "LOAD", script.text) for script in scripts)

    @property
    def healthy(self) -> bool:
        """Both connections answer (False: degraded, see the module docstring)."""
        return self.commands_ok and self.pubsub_ok

    def health(self) -> dict[str, str]:
        """``{"commands": "ok"|"down", "pubsub": "ok"|"down"}`` for readiness and logs."""
        return {
            "commands": "ok" if self.commands_ok else "down",
            "pubsub": "ok" if self.pubsub_ok else "down",
        }

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

    # -- command health ------------------------------------------------------------------------

    def _commands_down(self, exc: BaseException) -> None:
        if self.commands_ok:
            log.warning("redis commands failing (%s): degraded mode", type(exc).__name__)
            self.commands_ok = False
            metrics.REDIS_UP.labels("commands").set(0)

    async def _commands_up(self) -> None:
        if not self.commands_ok:
            log.warning("redis answers again: leaving degraded mode")
            self.commands_ok = True
            metrics.REDIS_UP.labels("commands").set(1)
            with contextlib.suppress(RedisError, BusUnavailable):
                await self.load_scripts()  # a Redis that restarted knows none of them
        if self._unpublished:
            await self._flush_unpublished()

    async def _monitor_loop(self) -> None:
        """PING Redis over the command pool; the only way back out of degraded mode."""
        while not self._closing:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                    await self.ping()
            except REDIS_ERRORS as exc:
                self._commands_down(exc)
                continue
            try:
                await self._commands_up()
            except REDIS_ERRORS as exc:
                self._commands_down(exc)

    def _remember_unpublished(self, room_id: str, seq: int, payload: str) -> None:
        known = self._unpublished.get(room_id)
        if known is not None and known[0] >= seq:
            return
        self._unpublished.pop(room_id, None)
        self._unpublished[room_id] = (seq, payload)
        while len(self._unpublished) > MAX_UNPUBLISHED_ROOMS:
            del self._unpublished[next(iter(self._unpublished))]

    async def _flush_unpublished(self) -> None:
        """Publish the newest skipped message of each room: receivers fill the gap before it."""
        pending, self._unpublished = self._unpublished, {}
        log.info("publishing the newest unpublished message of %d rooms", len(pending))
        try:
            _raise_first(
                await self._pipeliner.call_many(
                    ("PUBLISH", self.channel("room", room_id), payload)
                    for room_id, (_, payload) in pending.items()
                )
            )
        except BaseException:
            for room_id, (seq, payload) in pending.items():
                self._remember_unpublished(room_id, seq, payload)
            raise

    # -- commands ------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise if Redis does not answer (on a connection of its own, not behind the queue)."""
        metrics.REDIS_ROUND_TRIPS.inc()
        metrics.REDIS_COMMANDS.labels("ping").inc()
        await self._client.ping()

    async def _eval(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._pipeliner.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A Redis that restarted (or never saw it): EVAL runs the script and caches it.
            return await self._pipeliner.call("EVAL", script.text, len(keys), *keys, *args)

    async def _eval_many(
        self, script: LuaScript, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per (keys, args) in one pipeline; raise the first error."""
        replies = await self._pipeliner.call_many(
            ("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls
        )
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # A Redis that restarted (or never saw it): EVAL runs the script and caches it.
            again = await self._pipeliner.call_many(
                ("EVAL", script.text, len(calls[i][0]), *calls[i][0], *calls[i][1]) for i in missing
            )
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return _raise_first(replies)

    async def publish_room(
        self, room_id: str, event: dict[str, Any], *, seq: int | None = None
    ) -> bool:
        """Publish ``event`` to every process with members of ``room_id`` connected.

        Returns False when Redis is unreachable (the event is not published, nothing raised).
        ``seq`` marks a new ``message`` event: the newest unpublished one of each room is
        published as soon as Redis answers again.
        """
        payload = envelope(event)
        if self.commands_ok:
            try:
                await self._pipeliner.call("PUBLISH", self.channel("room", room_id), payload)
                return True
            except REDIS_ERRORS as exc:
                self._commands_down(exc)
        if seq is not None:
            self._remember_unpublished(room_id, seq, payload)
        return False

    async def publish_rooms(self, room_ids: Iterable[str], event: dict[str, Any]) -> bool:
        """Publish one ``event`` to several rooms in one round trip (e.g. presence)."""
        if not self.commands_ok:
            return False
        payload = envelope(event)
        try:
            _raise_first(
                await self._pipeliner.call_many(
                    ("PUBLISH", self.channel("room", room_id), payload) for room_id in room_ids
                )
            )
        except REDIS_ERRORS as exc:
            self._commands_down(exc)
            return False
        return True

    async def publish_user(self, user_id: str, event: dict[str, Any]) -> bool:
        """Publish ``event`` to every socket of ``user_id``, on any process (False: not sent)."""
        if not self.commands_ok:
            return False
        try:
            await self._pipeliner.call("PUBLISH", self.channel("user", user_id), envelope(event))
        except REDIS_ERRORS as exc:
            self._commands_down(exc)
            return False
        return True

    async def check_rate(self, user_id: str, limit: int | None = None) -> RateDecision:
        """Count one request of ``user_id`` (any key: a user id, ``ip:register:<address>``)
        against the shared per-minute limit (atomic); ``limit`` overrides the per-user one.

        While Redis is unreachable the per-process window decides instead (never raises for it).
        """
        per_minute = self.rate_limit_per_minute if limit is None else limit
        if self.commands_ok:
            try:
                allowed, retry_ms = await self._eval(
                    self._rate_script,
                    [f"{self.prefix}rate:{user_id}"],
                    [per_minute, RATE_WINDOW_MS, secrets.token_hex(4)],
                )
            except REDIS_ERRORS as exc:
                self._commands_down(exc)
            else:
                if int(allowed):
                    return RateDecision(allowed=True, retry_after=0.0)
                return RateDecision(allowed=False, retry_after=int(retry_ms) / 1000)
        metrics.RATE_LIMIT_FALLBACKS.inc()
        local_rate = self._local_rates.get(per_minute)
        if local_rate is None:
            local_rate = LocalRateLimiter(per_minute, RATE_WINDOW_MS / 1000)
            self._local_rates[per_minute] = local_rate
        local = local_rate.check(user_id, time.monotonic())
        return RateDecision(allowed=local.allowed, retry_after=local.retry_after)

    async def _command(self, call: Callable[[], Awaitable[Any]]) -> Any:
        if not self.commands_ok:
            raise BusUnavailable("redis is unreachable (degraded mode)")
        try:
            return await call()
        except REDIS_ERRORS as exc:
            self._commands_down(exc)
            raise

    async def presence_connect(self, user_id: str, connection_id: str) -> bool:
        """Record a live connection; True if the user just came online (first connection)."""
        count = await self._command(
            lambda: self._eval(
                self._presence_add,
                [f"{self.prefix}presence:{user_id}"],
                [connection_id, PRESENCE_TTL_MS],
            )
        )
        return int(count) == 1

    async def presence_disconnect(self, user_id: str, connection_id: str) -> bool:
        """Forget a connection; True if the user just went offline (it was the last one)."""
        removed, count = await self._command(
            lambda: self._eval(
                self._presence_remove, [f"{self.prefix}presence:{user_id}"], [connection_id]
            )
        )
        return int(removed) == 1 and int(count) == 0

    async def presence_disconnect_many(self, connections: Iterable[tuple[str, str]]) -> list[bool]:
        """Forget many (user id, connection id) pairs at once (a drain); per pair, whether its
        user just went offline. Pipelined: the cost is a few round trips, not one per pair."""
        pairs = list(connections)

        async def remove() -> list[Any]:
            return await self._eval_many(
                self._presence_remove,
                [([f"{self.prefix}presence:{user}"], [connection]) for user, connection in pairs],
            )

        replies = await self._command(remove)
        return [int(removed) == 1 and int(count) == 0 for removed, count in replies]

    async def presence_refresh(self, connections: Iterable[tuple[str, str]]) -> None:
        """Extend the expiry of live (user id, connection id) pairs held by this process: one
        command per pair (the connect's script, timed by the Redis clock), pipelined
        PRESENCE_REFRESH_CHUNK at a time."""
        pairs = list(connections)

        async def refresh(chunk: list[tuple[str, str]]) -> list[Any]:
            return await self._eval_many(
                self._presence_add,
                [
                    ([f"{self.prefix}presence:{user}"], [connection, PRESENCE_TTL_MS])
                    for user, connection in chunk
                ],
            )

        for start in range(0, len(pairs), PRESENCE_REFRESH_CHUNK):
            chunk = pairs[start : start + PRESENCE_REFRESH_CHUNK]
            await self._command(functools.partial(refresh, chunk))

    async def online(self, user_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each user has at least one live connection on any process."""
        ids = list(user_ids)
        now_ms = time.time() * 1000

        async def count() -> list[Any]:
            return _raise_first(
                await self._pipeliner.call_many(
                    ("ZCOUNT", f"{self.prefix}presence:{user_id}", now_ms, "+inf")
                    for user_id in ids
                )
            )

        counts = await self._command(count)
        return {user_id: int(n) > 0 for user_id, n in zip(ids, counts, strict=True)}

    # -- pub/sub -------------------------------------------------------------------------------

    async def start(self, handler: DeliveryHandler, on_resync: ResyncHandler) -> None:
        """Open the process's pub/sub connection; ``handler`` gets every delivery (sync, fast).

        ``on_resync`` runs after a pub/sub connection replaced a lost one and every channel is
        confirmed again: events published in between were missed, so subscribers must catch up
        from MongoDB. If Redis does not answer now, the bus starts degraded and keeps trying.
        """
        self._handler = handler
        self._on_resync = on_resync
        metrics.REDIS_UP.labels("commands").set(1)
        metrics.REDIS_UP.labels("pubsub").set(0)
        self._monitor = asyncio.create_task(self._monitor_loop(), name="bus-monitor")
        try:
            confirmations = await self._open_pubsub()
        except REDIS_ERRORS as exc:
            log.warning("pub/sub not available at start (%s): degraded", type(exc).__name__)
            await self._drop_pubsub()
            confirmations = []
        generation = self._generation
        # The reader is what receives the confirmations.
        self._listener = asyncio.create_task(self._pubsub_loop(), name="bus-listener")
        if confirmations:
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                    await asyncio.gather(*confirmations)
            except REDIS_ERRORS as exc:
                log.warning("pub/sub not confirmed at start (%s): degraded", type(exc).__name__)
                self._kill_pubsub(generation)
            else:
                if generation == self._generation:
                    self._pubsub_up()

    def _register(self, channels: Iterable[str]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        for ch in channels:
            fut: asyncio.Future[None] = loop.create_future()
            self._pending.setdefault(ch, deque()).append(fut)
            waits.append(fut)
        return waits

    async def _open_pubsub(self) -> list[asyncio.Future[None]]:
        """A new pub/sub connection subscribing to every channel; the confirmations to await."""
        pubsub = self._pubsub_client.pubsub()
        # A placeholder channel keeps the connection in subscribed mode even with no rooms.
        channels = [f"{self.prefix}process:{id(self):x}", *self._channels]
        self._generation += 1
        self._pubsub = pubsub
        waits = self._register(channels)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS + COMMAND_SOCKET_TIMEOUT_SECONDS):
                _count_pubsub("subscribe")
                await pubsub.subscribe(*channels)
        except BaseException:
            for fut in waits:
                fut.cancel()
            raise
        return waits

    def _pubsub_up(self) -> None:
        self.pubsub_ok = True
        self._backoff = RECONNECT_MIN_SECONDS
        metrics.REDIS_UP.labels("pubsub").set(1)

    async def _confirm_then_resync(
        self, generation: int, confirmations: list[asyncio.Future[None]]
    ) -> None:
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                await asyncio.gather(*confirmations)
        except REDIS_ERRORS:
            self._kill_pubsub(generation)
            return
        if generation != self._generation or self._closing:
            return
        self._pubsub_up()
        log.warning("pub/sub resubscribed to %d channels: catching up", len(self._channels))
        if self._on_resync is not None:
            try:
                await self._on_resync()
            except Exception:
                log.exception("pub/sub resync handler failed")

    def _kill_pubsub(self, generation: int) -> None:
        """Make the reader drop pub/sub connection ``generation`` (it checks every slice)."""
        if generation == self._generation:
            self._dead_generation = generation

    async def _pubsub_loop(self) -> None:
        while not self._closing:
            pubsub = self._pubsub
            if pubsub is None:
                await asyncio.sleep(self._rng.uniform(0, self._backoff))
                self._backoff = min(self._backoff * 2, RECONNECT_MAX_SECONDS)
                try:
                    confirmations = await self._open_pubsub()
                except REDIS_ERRORS as exc:
                    log.debug("pub/sub reconnect failed: %s", type(exc).__name__)
                    await self._drop_pubsub()
                    continue
                metrics.PUBSUB_RECONNECTS.inc()
                self._confirmer = asyncio.create_task(
                    self._confirm_then_resync(self._generation, confirmations),
                    name="bus-resync",
                )
                continue
            try:
                await self._read(pubsub, self._generation)
            except REDIS_ERRORS as exc:
                if self._closing:
                    return
                log.warning("pub/sub connection lost: %s (%s)", type(exc).__name__, exc)
            await self._drop_pubsub()

    async def _read(self, pubsub: PubSub, generation: int) -> None:
        """Dispatch messages until the connection fails or stops answering its health check.

        The reads block (a read cut short by a timeout would restart a large message from its
        first byte); a watchdog beside them PINGs a silent connection and gives up on it.
        """
        loop = asyncio.get_running_loop()
        received = [loop.time()]  # when the last message (a pong too) arrived
        reader = asyncio.create_task(self._read_forever(pubsub, received), name="bus-reader")
        ping_sent: float | None = None
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=PUBSUB_READ_SLICE_SECONDS)
                if done:
                    reader.result()  # raises what ended the reads
                    raise PubSubDead("pub/sub reader stopped")
                if self._dead_generation == generation:
                    raise PubSubDead("subscriptions not confirmed in time")
                now = loop.time()
                if ping_sent is not None and received[0] >= ping_sent:
                    ping_sent = None  # answered (or other traffic arrived since)
                if ping_sent is not None:
                    if now - ping_sent > HEALTH_TIMEOUT_SECONDS:
                        raise PubSubDead(f"no answer to PING within {HEALTH_TIMEOUT_SECONDS}s")
                elif now - received[0] >= HEALTH_INTERVAL_SECONDS:
                    async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                        _count_pubsub("ping")
                        await pubsub.ping()
                    ping_sent = now
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _read_forever(self, pubsub: PubSub, received: list[float]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await pubsub.get_message(timeout=None)
            received[0] = loop.time()
            if msg is not None:
                self._dispatch(msg)

    async def _drop_pubsub(self) -> None:
        """Forget the current pub/sub connection: live events are missed until the resync."""
        old, self._pubsub = self._pubsub, None
        if self.pubsub_ok:
            metrics.REDIS_UP.labels("pubsub").set(0)
        self.pubsub_ok = False
        if self._confirmer is not None:
            self._confirmer.cancel()
            self._confirmer = None
        for queue in self._pending.values():
            for fut in queue:
                if fut is not None and not fut.done():
                    fut.set_exception(PubSubDead("pub/sub connection lost"))
                    fut.exception()  # retrieved: its waiter may be gone
        self._pending.clear()
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]

    async def subscribe(self, kind: ChannelKind, targets: Iterable[str]) -> None:
        """Subscribe to channels; return once Redis confirmed every one of them, or at once
        when pub/sub is down.

        After this returns, anything published to those channels reaches the handler, or else
        ``on_resync`` runs once pub/sub is back: callers rely on that to replay history without a
        gap (subscribe first, then read MongoDB). Never raises for an unreachable Redis.
        """
        channels = [self.channel(kind, t) for t in targets]
        self._channels.update(channels)
        if not channels or self._pubsub is None:
            return
        generation = self._generation
        waits = self._register(channels)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                await asyncio.shield(self._queue_pubsub("subscribe", channels))
                await asyncio.gather(*waits)
        except REDIS_ERRORS as exc:
            # This connection is no good: the reader replaces it and the resync after that
            # covers these channels.
            log.warning("subscribe not confirmed (%s): replacing pub/sub", type(exc).__name__)
            self._kill_pubsub(generation)
        finally:
            for fut in waits:
                fut.cancel()  # no-op when confirmed; a late confirmation then finds it done

    async def unsubscribe(self, kind: ChannelKind, targets: Iterable[str]) -> None:
        """Stop receiving the channels (no confirmation awaited)."""
        channels = [self.channel(kind, t) for t in targets]
        self._channels.difference_update(channels)
        if not channels or self._pubsub is None:
            return
        generation = self._generation
        for ch in channels:
            self._pending.setdefault(ch, deque()).append(None)
        try:
            async with asyncio.timeout(COMMAND_SOCKET_TIMEOUT_SECONDS):
                await asyncio.shield(self._queue_pubsub("unsubscribe", channels))
        except REDIS_ERRORS:
            self._kill_pubsub(generation)

    def _queue_pubsub(self, command: PubSubCommand, channels: list[str]) -> asyncio.Future[None]:
        """Queue a (UN)SUBSCRIBE for the pub/sub connection; the future of the writes that send
        it.

        The commands queued in one turn of the event loop go out together on the next, in the
        order they were queued (the confirmations' order, see ``_pending``), each run of one
        command as one command: a wave of connects subscribes with a few writes, not one each.
        """
        outbox = self._outbox
        if outbox is None or outbox.generation != self._generation:
            outbox = self._outbox = _Outbox(
                self._generation, asyncio.get_running_loop().create_future()
            )
            task = asyncio.create_task(self._send_outbox(outbox), name="bus-subscriber")
            self._outbox_tasks.add(task)
            task.add_done_callback(self._outbox_tasks.discard)
        outbox.commands.append((command, channels))
        return outbox.sent

    async def _send_outbox(self, outbox: _Outbox) -> None:
        if self._outbox is outbox:
            self._outbox = None  # what is queued from now on goes in the next write
        sent, pubsub = outbox.sent, self._pubsub
        if pubsub is None or outbox.generation != self._generation:
            # Queued for a connection that is gone: its successor subscribes to every channel
            # wanted now (``_open_pubsub``), and the confirmations awaited failed with it.
            sent.set_result(None)
            return
        try:
            for command, channels in merge_runs(outbox.commands):
                _count_pubsub(command)
                if command == "subscribe":
                    await pubsub.subscribe(*channels)
                else:
                    await pubsub.unsubscribe(*channels)
        except Exception as exc:
            sent.set_exception(exc)
            sent.exception()  # retrieved: its callers may all be gone
        except BaseException:
            sent.cancel()
            raise
        else:
            sent.set_result(None)

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

    async def close(self) -> None:
        """Stop listening and close both connections."""
        self._closing = True
        for task in (self._listener, self._monitor, self._confirmer, *self._outbox_tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._outbox is not None:
            self._outbox.sent.cancel()  # its task was cancelled before it ran
            self._outbox = None
        await self._pipeliner.close()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._pubsub_client.aclose()
        await self._client.aclose()
