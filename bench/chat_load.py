"""Load test of the real-time path: N WebSocket users in rooms, sending at a fixed rate.

Prints connections held, messages delivered per second, p50/p99 delivery latency (send -> frame
received by each member, end to end through MongoDB and Redis), and each server's RSS.

The study's workload (4,000 connected users, 2 messages per user per minute, rooms of 10) against
two local server processes on loopback, with Redis and FerretDB started for the run:

    .venv/bin/python bench/chat_load.py --users 4000 --per-minute 2 --room-size 10 --servers 2

Everything runs on 127.0.0.1 and stops by itself: the connection ramp is bounded by
``--connect-timeout``, the measurement by ``--duration``.

The default MongoDB-wire server is FerretDB v1 on SQLite, which filters in Go rather than in the
database: every query on a field other than ``_id`` scans its collection, so connects and sends
slow down as users and messages accumulate, and that, not the chat server, bounds this workload.
For server figures use ``--backend postgresql``: the run then starts Debian's PostgreSQL (its own
throwaway cluster on 127.0.0.1, fsync off; ``./dev setup`` installs it) and FerretDB on it, both
stopped at the end. ``--mongo-url`` points the run at an existing MongoDB or FerretDB instead.
The report separates the two: end-to-end latency (send -> member received) and the server-side
delivery histogram (publish -> socket write).
Each user is a ``hypersend_client.Client`` (clients/python), the same code an application uses;
a socket the server closes reconnects and resumes by itself, and the report counts the closes.
Users and rooms are seeded through the server's own store layer (registering 4,000 users over
REST would spend minutes in argon2), tokens are minted with the run's JWT secret.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
# The client package (clients/python), also when it is not installed in the venv.
sys.path.insert(0, str(REPO / "clients" / "python"))

from hypersend_client import Client, CloseError, HypersendError, events  # noqa: E402

from chatserver import auth  # noqa: E402
from chatserver.config import Settings  # noqa: E402
from chatserver.store import Store  # noqa: E402

LOOPBACK = "127.0.0.1"
TOKEN_TTL_SECONDS = 7200


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (inherited by spawned servers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else 1_048_576
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return int(target)
    return int(soft)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    closed: dict[int, int] = field(default_factory=dict)
    measuring: bool = False


def spawn_servers(count: int, env: dict[str, str], log_dir: Path) -> Iterator[ServerProcess]:
    for index in range(count):
        port = free_port()
        server_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HYPERSEND_")},
            **env,
            "HYPERSEND_HOST": LOOPBACK,
            "HYPERSEND_PORT": str(port),
            "HYPERSEND_POD_NAME": f"bench-{index}",
        }
        log = (log_dir / f"server-{index}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "chatserver"],
            cwd=REPO,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield ServerProcess(f"http://{LOOPBACK}:{port}", process)


async def wait_ready(server: ServerProcess, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(trust_env=False) as http:
        while time.monotonic() < deadline:
            if server.process is not None and server.process.poll() is not None:
                raise RuntimeError(f"server {server.url} exited with {server.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{server.url}/readyz", timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"server {server.url} not ready")


async def scrape(server: ServerProcess) -> dict[str, float]:
    wanted = {
        "process_resident_memory_bytes",
        "hypersend_websocket_connections",
        "hypersend_slow_consumer_disconnects_total",
        "hypersend_gap_fills_total",
        "hypersend_messages_delivered_total",
        "process_cpu_seconds_total",
    }
    out: dict[str, float] = {}
    async with httpx.AsyncClient(trust_env=False) as http:
        text = (await http.get(f"{server.url}/metrics", timeout=10)).text
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+) ([0-9.e+-]+)$", line)
        if match and match.group(1) in wanted:
            out[match.group(1)] = float(match.group(2))
        bucket = re.match(r'^([a-z_]+)_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$', line)
        if bucket and bucket.group(1) in HISTOGRAMS:
            out[f"{bucket.group(1)}|{bucket.group(2)}"] = float(bucket.group(3))
    return out


HISTOGRAMS = ("hypersend_message_delivery_latency_seconds", "hypersend_pubsub_lag_seconds")


def histogram_quantile(scraped: list[dict[str, float]], name: str, q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` over all servers (Prometheus-style)."""
    buckets: dict[float, float] = {}
    for metrics in scraped:
        for key, count in metrics.items():
            metric, _, le = key.partition("|")
            if metric == name and le:
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + count
    if not buckets:
        return float("nan")
    total = buckets[max(buckets)]
    for bound in sorted(buckets):
        if total and buckets[bound] >= q * total:
            return bound
    return float("inf")


async def seed(settings: Settings, users: int, room_size: int) -> tuple[list[str], dict[str, str]]:
    """Create users and rooms through the store layer; (user ids, room of each user)."""
    store = Store(settings)
    await store.connect()
    await store.ensure_indexes()
    password_hash = await auth.Passwords(settings, slots=1).hash(secrets.token_urlsafe(16))
    gate = asyncio.Semaphore(32)
    run = secrets.token_hex(3)

    async def user(i: int) -> str:
        async with gate:
            created = await store.create_user(f"b{run}{i}", f"bench {i}", password_hash)
            return created.id

    user_ids = list(await asyncio.gather(*(user(i) for i in range(users))))
    room_of: dict[str, str] = {}

    async def room(members: list[str]) -> None:
        async with gate:
            created = await store.create_group_room(members[0], "bench", members[1:])
        for uid in members:
            room_of[uid] = created.id

    await asyncio.gather(
        *(room(user_ids[i : i + room_size]) for i in range(0, len(user_ids), room_size))
    )
    await store.close()
    return user_ids, room_of


class User:
    """One connected user: a hypersend_client ``Client`` whose events feed the run's stats."""

    def __init__(self, user_id: str, room_id: str, token: str, url: str, stats: Stats) -> None:
        self.user_id = user_id
        self.room_id = room_id
        self.stats = stats
        self.client = Client(
            url,
            # No REST call per user before connecting (4,000 of them would crowd the store); the
            # one room is followed from the first frame on.
            start_from="live",
            open_timeout=30,
            on_event=self.on_event,
        )
        self.client.rest.use_tokens(token, "", expires_in=TOKEN_TTL_SECONDS)
        self.sends: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        await self.client.start()

    @property
    def connected(self) -> bool:
        return self.client.connects > 0

    def on_event(self, event: events.Event) -> None:
        stats = self.stats
        if isinstance(event, events.MessageEvent):
            if stats.measuring:
                sent_at = float(event.message.text.split(" ", 1)[0])
                stats.delivered += 1
                stats.latencies.append(time.time() - sent_at)
        elif isinstance(event, events.ServerError):
            stats.errors[event.code] = stats.errors.get(event.code, 0) + 1
        elif isinstance(event, events.Reconnecting | events.Disconnected):
            error = event.error
            code = error.close_code if isinstance(error, CloseError) else 1006
            if error is not None:
                stats.closed[code] = stats.closed.get(code, 0) + 1

    async def send_one(self, text: str) -> None:
        started = time.time()
        try:
            await self.client.send(self.room_id, text)
        except HypersendError as exc:
            code = getattr(exc, "code", type(exc).__name__)
            self.stats.errors[str(code)] = self.stats.errors.get(str(code), 0) + 1
            return
        if self.stats.measuring:
            self.stats.acked += 1
            self.stats.ack_latencies.append(time.time() - started)

    async def send_loop(self, per_minute: float, until: float, text_bytes: int) -> None:
        rate = per_minute / 60.0
        padding = "x" * max(0, text_bytes - 20)
        # Random phase so the users do not send in lockstep.
        await asyncio.sleep(min(random.uniform(0, 1 / rate), max(0.0, until - time.monotonic())))
        while time.monotonic() < until and self.client.state != "closed":
            # The send runs on while the next waits: acks are measured, not waited for.
            task = asyncio.create_task(self.send_one(f"{time.time()!r} {padding}"))
            self.sends.add(task)
            task.add_done_callback(self.sends.discard)
            self.stats.sent += 1
            left = until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, random.expovariate(rate)))

    async def close(self) -> None:
        for task in list(self.sends):
            task.cancel()
        await asyncio.gather(*self.sends, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 5)


async def run(args: argparse.Namespace) -> None:
    fd_limit = raise_fd_limit()
    jwt_secret = secrets.token_urlsafe(48)
    mongo_db = f"bench_{secrets.token_hex(4)}"
    stack = contextlib.ExitStack()
    servers: list[ServerProcess] = []
    log_dir = Path(args.log_dir)
    os.makedirs(log_dir, exist_ok=True)
    try:
        redis_url, mongo_url = args.redis_url, args.mongo_url
        mongo_what = "--mongo-url"
        if redis_url is None or mongo_url is None:
            from hypersend_devenv.datastores import RedisServer, ferretdb_server

            if redis_url is None:
                redis_url = stack.enter_context(RedisServer()).url
            if mongo_url is None:
                mongo_url = stack.enter_context(ferretdb_server(args.backend)).url
                mongo_what = f"FerretDB on {args.backend}"
        env = {
            "HYPERSEND_REDIS_URL": redis_url,
            "HYPERSEND_MONGO_URL": mongo_url,
            "HYPERSEND_MONGO_DB": mongo_db,
            "HYPERSEND_JWT_SECRET": jwt_secret,
            "HYPERSEND_ACCESS_TOKEN_TTL_SECONDS": str(TOKEN_TTL_SECONDS),
            "HYPERSEND_DRAIN_DELAY_SECONDS": "0",
            "HYPERSEND_DRAIN_SECONDS": "10",
            "HYPERSEND_LOG_LEVEL": "warning",
            # One load generator on loopback stands for many clients: lift the per-address
            # abuse limits (docs/configuration.md, "Abuse limits").
            "HYPERSEND_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
            "HYPERSEND_WS_IP_OPENS_PER_MINUTE": "1000000",
            "HYPERSEND_WS_MAX_UNAUTHENTICATED": "100000",
        }
        settings = Settings(
            jwt_secret=SecretStr(jwt_secret),
            mongo_url=SecretStr(mongo_url),
            mongo_db=mongo_db,
            access_token_ttl_seconds=TOKEN_TTL_SECONDS,
        )
        print(
            f"# {args.users} users, rooms of {args.room_size}, {args.per_minute} msg/user/min, "
            f"{args.servers} server(s), {args.duration:.0f}s measured, fd limit {fd_limit}, "
            f"store {mongo_what}"
        )
        servers = list(spawn_servers(args.servers, env, log_dir))
        await asyncio.gather(*(wait_ready(s) for s in servers))

        started = time.monotonic()
        user_ids, room_of = await seed(settings, args.users, args.room_size)
        print(
            f"seeded {len(user_ids)} users, {len(set(room_of.values()))} rooms "
            f"in {time.monotonic() - started:.1f}s"
        )

        stats = Stats()
        users = [
            User(
                uid,
                room_of[uid],
                auth.issue_access_token(uid, settings),
                servers[i % len(servers)].url,
                stats,
            )
            for i, uid in enumerate(user_ids)
        ]
        started = time.monotonic()
        failures: dict[str, int] = {}
        gate = asyncio.Semaphore(args.connect_concurrency)

        async def connect_one(user: User) -> None:
            async with gate:
                try:
                    await user.connect()
                except Exception as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

        tasks = [asyncio.create_task(connect_one(u)) for u in users]
        _, late = await asyncio.wait(tasks, timeout=args.connect_timeout)
        for task in late:  # the ramp is bounded too: measure with whoever got in
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            failures["connect timeout"] = len(late)
        ramp = time.monotonic() - started
        connected = [u for u in users if u.connected]
        print(
            f"connected {len(connected)}/{len(users)} in {ramp:.1f}s "
            f"({len(connected) / ramp:.0f}/s); failures: {failures or 'none'}"
        )
        await asyncio.sleep(3)  # resume windows end, presence settles

        stats.measuring = True
        start_usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_at_start = start_usage.ru_utime + start_usage.ru_stime
        measure_started = time.monotonic()
        until = measure_started + args.duration
        senders = [
            asyncio.create_task(u.send_loop(args.per_minute, until, args.text_bytes))
            for u in connected
        ]
        await asyncio.gather(*senders)
        await asyncio.sleep(args.settle)  # in-flight messages land
        elapsed = time.monotonic() - measure_started
        stats.measuring = False

        held = sum(1 for u in connected if u.client.live)
        scraped = await asyncio.gather(*(scrape(s) for s in servers))
        expected = stats.acked * args.room_size
        print()
        print(
            f"connections held          {held}/{args.users}  "
            f"(per server: {[int(m.get('hypersend_websocket_connections', 0)) for m in scraped]})"
        )
        print(
            f"messages sent / acked     {stats.sent} / {stats.acked}  "
            f"({stats.acked / elapsed:.1f} acked/s; errors {stats.errors or 'none'})"
        )
        print(
            f"messages delivered        {stats.delivered}  "
            f"({stats.delivered / elapsed:.0f}/s; expected ~{expected} = acked x room size)"
        )
        print(
            f"delivery latency          p50 {percentile(stats.latencies, 50) * 1000:.1f} ms  "
            f"p99 {percentile(stats.latencies, 99) * 1000:.1f} ms  "
            f"max {max(stats.latencies, default=float('nan')) * 1000:.1f} ms"
        )
        print(
            f"ack latency               p50 {percentile(stats.ack_latencies, 50) * 1000:.1f} ms  "
            f"p99 {percentile(stats.ack_latencies, 99) * 1000:.1f} ms"
        )
        delivery = "hypersend_message_delivery_latency_seconds"
        lag = "hypersend_pubsub_lag_seconds"
        print(
            "server side, whole run   delivery (publish -> socket write) "
            f"p50 <= {histogram_quantile(scraped, delivery, 0.5) * 1000:.0f} ms, "
            f"p99 <= {histogram_quantile(scraped, delivery, 0.99) * 1000:.0f} ms; pub/sub lag "
            f"p50 <= {histogram_quantile(scraped, lag, 0.5) * 1000:.1f} ms, "
            f"p99 <= {histogram_quantile(scraped, lag, 0.99) * 1000:.0f} ms (histogram bounds)"
        )
        for server, metrics in zip(servers, scraped, strict=True):
            print(
                f"server {server.url}  RSS "
                f"{metrics.get('process_resident_memory_bytes', 0) / 2**20:.0f} MiB  "
                f"CPU {metrics.get('process_cpu_seconds_total', 0):.0f}s  "
                f"slow-consumer disconnects "
                f"{int(metrics.get('hypersend_slow_consumer_disconnects_total', 0))}  "
                f"gap fills {int(metrics.get('hypersend_gap_fills_total', 0))}"
            )
        if stats.closed:
            print(f"sockets closed by server  {stats.closed}")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = usage.ru_utime + usage.ru_stime - cpu_at_start
        print(
            f"load client               peak RSS {usage.ru_maxrss / 1024:.0f} MiB, "
            f"CPU {client_cpu:.0f}s over {elapsed:.0f}s measured (mean latency "
            f"{statistics.fmean(stats.latencies) * 1000 if stats.latencies else 0:.1f} ms)"
        )
        await asyncio.gather(*(u.close() for u in users))
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in servers:
            if server.process is not None:
                try:
                    server.process.wait(15)
                except subprocess.TimeoutExpired:
                    server.process.kill()
        stack.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4000, help="connected users (one socket each)")
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument(
        "--per-minute", type=float, default=2.0, help="messages per user per minute"
    )
    parser.add_argument("--servers", type=int, default=2, help="local server processes to start")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured sending")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait after sending")
    parser.add_argument("--text-bytes", type=int, default=100)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument(
        "--connect-timeout", type=float, default=300.0, help="bound on the connection ramp"
    )
    parser.add_argument("--redis-url", help="an existing Redis (default: start one)")
    parser.add_argument("--mongo-url", help="an existing MongoDB/FerretDB (default: start one)")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default=None,
        help="storage of the FerretDB the run starts when there is no --mongo-url: SQLite files, "
        "or PostgreSQL started alongside (default sqlite)",
    )
    parser.add_argument("--log-dir", default="/tmp/hypersend-bench", help="server logs")
    args = parser.parse_args(argv)
    if args.backend is not None and args.mongo_url is not None:
        parser.error(
            "--backend picks the FerretDB the run starts; with --mongo-url none is started"
        )
    args.backend = args.backend or "sqlite"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
