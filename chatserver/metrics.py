"""Every Prometheus metric of the chat server, the HTTP metrics middleware and `/metrics`.

All metrics are defined here so names stay consistent across modules; `realtime` and `api`
import the objects and only call `.inc()`, `.observe()`, `.set()`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Final

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets for delivery and pub/sub lag: sub-millisecond to tens of seconds.
_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class LoopCounter:
    """A counter changed only on the event loop's thread, for once-per-delivery counts: a plain
    number, no lock (prometheus_client's Counter.inc measured 0.8 µs, a tenth of the server's
    own per-delivery work; issue #16). Exposed exactly like a Counter (``<name>_total``)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.value = 0.0
        self.created = time.time()
        REGISTRY.register(self)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            self.name, self.documentation, value=self.value, created=self.created
        )


class LoopHistogram:
    """A histogram observed only on the event loop's thread, for once-per-delivery latencies:
    a list of bucket counts and a sum (prometheus_client's Histogram.observe measured 3.5 µs,
    over a third of the server's own per-delivery work; issue #16). Exposed exactly like a
    Histogram with the same buckets."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        REGISTRY.register(self)

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less or equal": the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            # The `le` values prometheus_client writes for these bounds: repr, and +Inf.
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=self.sum
        )


# The autoscaling signal: the HPA scales chat pods on this per-pod gauge.
WEBSOCKET_CONNECTIONS: Final = Gauge(
    "hypersend_websocket_connections",
    "WebSocket connections currently open on this process.",
)
# The limit the gauge above is refused at (HYPERSEND_WS_MAX_CONNECTIONS), so alerts can compare
# the two series of one pod without knowing each cluster's setting.
WEBSOCKET_MAX_CONNECTIONS: Final = Gauge(
    "hypersend_websocket_max_connections",
    "WebSocket connections this process accepts at most; new sockets are refused at it.",
)
MONGO_POOL_MAX_CONNECTIONS: Final = Gauge(
    "hypersend_mongo_pool_max_connections",
    "maxPoolSize of the MongoDB client: connections to one server that can be checked out at once.",
)
MONGO_POOL_CHECKED_OUT: Final = Gauge(
    "hypersend_mongo_pool_checked_out_connections",
    "MongoDB connections checked out of the pool (in use by an operation), by server address.",
    ["address"],
)
# Pub/sub events a server refused to act on: not what servers publish on that channel, or a
# membership change MongoDB does not confirm (forged, or stale). docs/configuration.md.
BUS_EVENTS_REFUSED: Final = Counter(
    "hypersend_bus_events_refused_total",
    "Pub/sub events refused: not a room event of the channel's room, or a membership change "
    "MongoDB does not confirm (by channel kind: room, user).",
    ["channel"],
)
PASSWORD_HASHING_BUSY: Final = Counter(
    "hypersend_password_hashing_busy_total",
    "Register/login calls refused with 503 because too many already waited for an argon2 slot.",
)
WEBSOCKET_UNAUTHENTICATED: Final = Gauge(
    "hypersend_websocket_unauthenticated_connections",
    "WebSockets accepted but not authenticated yet (not counted in the connections gauge).",
)
WEBSOCKET_OPENS_REFUSED: Final = Counter(
    "hypersend_websocket_opens_refused_total",
    "WebSocket opens refused before authentication, by reason (origin, client_rate, "
    "unauthenticated).",
    ["reason"],
)
MESSAGES_RECEIVED: Final = Counter(
    "hypersend_messages_received_total",
    "Chat messages stored from clients (REST and WebSocket; idempotent retries excluded).",
)
MESSAGES_DELIVERED: Final = LoopCounter(
    "hypersend_messages_delivered_total",
    "Message frames written to WebSocket clients of this process.",
)
DELIVERY_LATENCY: Final = LoopHistogram(
    "hypersend_message_delivery_latency_seconds",
    "Time from a message being stored to its frame being written to a recipient's socket.",
    _LATENCY_BUCKETS,
)
PUBSUB_LAG: Final = Histogram(
    "hypersend_pubsub_lag_seconds",
    "Time from publishing an event to Redis to this process receiving it.",
    buckets=_LATENCY_BUCKETS,
)
STORE_COMMIT_SECONDS: Final = Histogram(
    "hypersend_store_commit_seconds",
    "Duration of one group-commit insert (many rooms' messages in one command); a message's ack "
    "and publish wait for it.",
    buckets=_LATENCY_BUCKETS,
)
STORE_COMMIT_MESSAGES: Final = Histogram(
    "hypersend_store_commit_messages",
    "Messages sent in one group-commit insert.",
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
SLOW_CONSUMER_DISCONNECTS: Final = Counter(
    "hypersend_slow_consumer_disconnects_total",
    "WebSocket clients disconnected because their bounded send queue overflowed.",
)
GAP_FILLS: Final = Counter(
    "hypersend_gap_fills_total",
    "Sockets that read history because a message seq stayed missing after the hold-back delay "
    "(a lost or late publish, e.g. a process killed between storing and publishing).",
)
RATE_LIMITED: Final = Counter(
    "hypersend_rate_limited_total",
    "Requests and WebSocket frames refused by the per-user rate limit.",
)
EVENT_LOOP_LAG: Final = Gauge(
    "hypersend_event_loop_lag_seconds",
    "The largest delay of the event loop over the last 10 s: how much later than asked a 1 s "
    "timer of the hub fired.",
)
REDIS_UP: Final = Gauge(
    "hypersend_redis_up",
    "1 while this process's Redis connection answers its health check, 0 while degraded; "
    "by connection (commands, pubsub).",
    ["connection"],
)
# Backend-independent cost figures (issue #16): what the server asks of its datastores, whatever
# their speed. Commands per stored message = commands / hypersend_messages_received_total.
REDIS_COMMANDS: Final = Counter(
    "hypersend_redis_commands_total",
    "Redis commands this process sent, by command (each command of a pipeline counts).",
    ["command"],
)
REDIS_ROUND_TRIPS: Final = Counter(
    "hypersend_redis_round_trips_total",
    "Round trips to Redis: a pipeline of many commands is one (chatserver/bus.py, Pipeliner).",
)
MONGO_COMMANDS: Final = Counter(
    "hypersend_mongo_commands_total",
    "MongoDB commands this process started (PyMongo command monitoring), by command name; "
    "each is one round trip.",
    ["command"],
)
PUBSUB_RECONNECTS: Final = Counter(
    "hypersend_pubsub_reconnects_total",
    "New pub/sub connections opened to replace a lost or dead one.",
)
MEMBERSHIP_RECHECKS: Final = Counter(
    "hypersend_membership_rechecks_total",
    "Passes that looked for removed memberships of rooms a local socket follows "
    "(HYPERSEND_MEMBERSHIP_RECHECK_SECONDS, and after pub/sub came back).",
)
MEMBERSHIP_FULL_RECHECKS: Final = Counter(
    "hypersend_membership_full_rechecks_total",
    "Of those passes, the ones that re-read every followed membership instead of the removal "
    "log: after pub/sub came back, or when the last read of the log was too long ago.",
)
MEMBERSHIP_LAPSED: Final = Counter(
    "hypersend_membership_lapsed_total",
    "Rooms a socket followed whose membership a recheck no longer found in MongoDB (the "
    "removal event never reached the socket).",
)
PUBSUB_RESYNCS: Final = Counter(
    "hypersend_pubsub_resyncs_total",
    "Times every room with local members was caught up from MongoDB after pub/sub came back.",
)
RATE_LIMIT_FALLBACKS: Final = Counter(
    "hypersend_rate_limit_fallbacks_total",
    "Rate-limit checks decided by the per-process limiter because Redis was unreachable.",
)
SHED_SOCKETS: Final = Counter(
    "hypersend_shed_sockets_total",
    "Sockets this process closed with a jittered reconnect hint (drain or failed catch-up), "
    "by close code.",
    ["code"],
)
HTTP_REQUESTS: Final = Counter(
    "hypersend_http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION: Final = Histogram(
    "hypersend_http_request_duration_seconds",
    "HTTP request duration, by method and route template.",
    ["method", "route"],
)

# Requests matching no route share one label value so unknown paths cannot blow up cardinality.
UNMATCHED_ROUTE: Final = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The route template (`/api/v1/rooms/{room_id}`), never the raw path with ids in it."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class HttpMetricsMiddleware:
    """Pure ASGI middleware counting HTTP requests and their duration by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = route_template(scope)
            method = str(scope.get("method", "GET"))
            HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            HTTP_REQUEST_DURATION.labels(method=method, route=route).observe(
                time.perf_counter() - started
            )


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text exposition of the default registry (includes process RSS/CPU)."""
    return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)
