"""Assembly of the chat server: lifespan (MongoDB, Redis, hub), health, readiness and drain.

Drain (started by SIGTERM, see `__main__`): readiness fails at once so endpoints stop routing new
clients here; after HYPERSEND_DRAIN_DELAY_SECONDS (endpoints converge, like a preStop pause) the
hub tells clients to reconnect and closes sockets in batches with 1012; then uvicorn stops. The
whole sequence stays inside HYPERSEND_DRAIN_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from chatserver import api, auth, metrics
from chatserver.bus import Bus
from chatserver.config import Settings
from chatserver.models import utcnow
from chatserver.realtime import Hub
from chatserver.realtime import router as realtime_router
from chatserver.store import Store

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("chatserver.app")
T = TypeVar("T")

# How long startup keeps retrying MongoDB before giving up (the pod then restarts).
STARTUP_RETRY_SECONDS: Final = 60.0
# Expired refresh tokens are swept this often (FerretDB v1 has no TTL indexes).
TOKEN_SWEEP_INTERVAL_SECONDS: Final = 3600.0
# Time kept back from the drain budget for uvicorn's own shutdown and closing clients.
SHUTDOWN_RESERVE_SECONDS: Final = 2.0
# A readiness probe that waits longer than this on MongoDB or Redis reports them unreachable.
PROBE_TIMEOUT_SECONDS: Final = 2.0


@dataclass
class Lifecycle:
    """Whether this process is draining; read by /readyz."""

    draining: bool = False
    drain_started: float | None = None


def readiness_problem(lifecycle: Lifecycle, mongo_error: str | None) -> str | None:
    """Why the process cannot serve (first reason wins), or None when it can.

    Redis is not part of it: without Redis a process still stores and acknowledges messages and
    keeps its sockets (degraded, see ``chatserver.bus``), and since every pod shares the one
    Redis, failing readiness for it would take every pod out of the Service at once.
    """
    if lifecycle.draining:
        return "draining"
    if mongo_error is not None:
        return f"mongodb unreachable: {mongo_error}"
    return None


async def _retry(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Retry a startup step for STARTUP_RETRY_SECONDS, so a dependency that comes up a little
    later (a rollout of everything at once) does not crash-loop the pod."""
    deadline = time.monotonic() + STARTUP_RETRY_SECONDS
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if time.monotonic() >= deadline:
                log.error("%s still unreachable after %.0fs", what, STARTUP_RETRY_SECONDS)
                raise
            log.warning("%s not ready, retrying: %s", what, type(exc).__name__)
            await asyncio.sleep(1.0)


async def _connect_store(settings: Settings) -> Store:
    store = Store(settings)
    await store.connect()
    try:
        await _retry("mongodb", store.ensure_indexes)
    except Exception:
        await store.close()
        raise
    return store


def settings_summary(settings: Settings) -> dict[str, Any]:
    """The settings worth logging at start: everything except secrets and connection strings."""
    return settings.model_dump(exclude={"jwt_secret", "jwt_keys", "mongo_url", "redis_url"})


# cgroup files that hold a memory limit: v2 (memory.max), v1 (memory.limit_in_bytes).
_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a number near 2^63.
_NO_LIMIT: Final = 2**60


def cgroup_memory_limit(proc_cgroup: str, root: Path = _CGROUP_ROOT) -> int | None:
    """The memory limit of this process's cgroup (v2 or v1) in bytes, None if none or unknown.

    ``proc_cgroup`` is /proc/self/cgroup's text; in a pod the cgroup namespace makes the
    container's own cgroup the root, so both the process's path and the root are tried.
    """
    candidates: list[Path] = []
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.lstrip("/")
        if hierarchy == "0" and controllers == "":
            candidates += [root / relative / "memory.max", root / "memory.max"]
        elif "memory" in controllers.split(","):
            v1 = root / "memory"
            candidates += [v1 / relative / "memory.limit_in_bytes", v1 / "memory.limit_in_bytes"]
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if 0 < value < _NO_LIMIT else None
    return None


def memory_limit(settings: Settings) -> int | None:
    """HYPERSEND_MEMORY_LIMIT_BYTES, else the cgroup's limit (the pod's), else None."""
    if settings.memory_limit_bytes:
        return settings.memory_limit_bytes
    try:
        return cgroup_memory_limit(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None


async def _sweep_refresh_tokens(store: Store) -> None:
    while True:
        try:
            removed = await store.delete_expired_refresh_tokens(utcnow())
            if removed:
                log.info("removed %d expired refresh tokens", removed)
        except Exception as exc:
            log.warning("refresh token sweep failed: %s", type(exc).__name__)
        await asyncio.sleep(TOKEN_SWEEP_INTERVAL_SECONDS)


WEB_CLIENT_DIR = Path(__file__).parent / "webclient"


def install_web_client(app: FastAPI) -> None:
    """The web client's files at /app/ (built from clients/typescript; see its README)."""
    app.mount("/app", StaticFiles(directory=WEB_CLIENT_DIR, html=True), name="web-client")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/app/")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("starting", extra={"settings": settings_summary(settings)})
        store = await _connect_store(settings)
        try:
            bus = await _retry("redis", lambda: Bus.connect(settings))
        except Exception:
            await store.close()
            raise
        limit = memory_limit(settings)
        slots = auth.argon2_slots(settings, limit)
        # The constructor hashes once (the dummy hash of unknown usernames): off the loop.
        app.state.passwords = await asyncio.to_thread(auth.Passwords, settings, slots)
        log.info(
            "password hashing: %d at once (memory limit %s bytes, %d KiB per hash)",
            slots,
            limit if limit is not None else "unknown",
            settings.argon2_memory_kib,
        )
        hub = Hub(settings, store, bus)
        await hub.start()
        app.state.store = store
        app.state.bus = bus
        app.state.hub = hub
        sweeper = asyncio.create_task(_sweep_refresh_tokens(store), name="token-sweeper")
        log.info("chat server ready", extra={"pod": settings.pod_name})
        try:
            yield
        finally:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            await hub.stop()
            await bus.close()
            await store.close()

    app = FastAPI(
        title="Hypersend chat server",
        version="1",
        summary="REST API of Hypersend (protocol v1); WebSocket at /ws (see docs/protocol.md).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    app.add_middleware(api.ApiHeadersMiddleware, max_body_bytes=api.max_body_bytes(settings))
    app.add_middleware(metrics.HttpMetricsMiddleware)
    api.install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(realtime_router)
    app.include_router(metrics.router)

    if settings.web_client:
        install_web_client(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the event loop answers. Dependencies are readiness's business."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: MongoDB answers and no drain. Redis health is reported, not required."""
        mongo_error = None
        if not lifecycle.draining:
            mongo_error = await _probe(request.app.state.store.ping())
        bus: Bus = request.app.state.bus
        redis = bus.health()
        problem = readiness_problem(lifecycle, mongo_error)
        if problem is None:
            status = "ready" if bus.healthy else "degraded"
            return JSONResponse({"status": status, "redis": redis})
        return JSONResponse(
            {"status": "not ready", "reason": problem, "redis": redis}, status_code=503
        )

    return app


# The real-time endpoint: the same path as chatserver.realtime's route.
WEBSOCKET_PATH: Final = "/ws"


def with_websocket_fast_path(app: FastAPI) -> ASGIApp:
    """The ASGI app the server runs: ``/ws`` sockets go straight to the hub, everything else
    (REST, lifespan, /metrics) to ``app``.

    A socket lives for hours, and whatever ASGI layers it passes through stay on its task's
    stack for all that time: FastAPI's routing, exception and dependency layers and the two HTTP
    middlewares held ~15 coroutine frames and 6 exit stacks per idle socket, about a third of its
    memory (measured with tracemalloc, issue #16). None of them does anything for a WebSocket.
    The route stays registered on ``app`` (the same endpoint, for route listings and tests).
    """

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == WEBSOCKET_PATH:
            hub: Hub = app.state.hub
            await hub.serve(WebSocket(scope, receive, send))
            return
        await app(scope, receive, send)

    return entry


async def _probe(check: Any) -> str | None:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await check
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        return type(exc).__name__
    return None


async def drain(app: FastAPI, deadline: float) -> None:
    """Fail readiness, wait for endpoints to converge, then close sockets via the hub.

    `deadline` is a `time.monotonic()` instant by which the process must be gone.
    """
    settings: Settings = app.state.settings
    lifecycle: Lifecycle = app.state.lifecycle
    lifecycle.draining = True
    lifecycle.drain_started = time.monotonic()
    log.info("drain started: readiness failing, waiting %.1fs", settings.drain_delay_seconds)
    budget = deadline - time.monotonic() - SHUTDOWN_RESERVE_SECONDS
    await asyncio.sleep(max(0.0, min(settings.drain_delay_seconds, budget)))
    hub: Hub | None = getattr(app.state, "hub", None)
    if hub is None:
        return
    remaining = deadline - time.monotonic() - SHUTDOWN_RESERVE_SECONDS
    try:
        async with asyncio.timeout(max(0.1, remaining)):
            await hub.drain()
    except TimeoutError:
        log.warning("socket drain did not finish within the drain budget")
    log.info("drain finished in %.1fs", time.monotonic() - lifecycle.drain_started)
