"""Soak test: thousands of sockets with traffic for a long time; is anything growing?

Holds ``--users`` WebSockets (default 4,000, rooms of 10, 2 messages per user per minute) on
``--servers`` local chat server processes for ``--duration`` seconds (default 600) and prints,
every ``--sample`` seconds and per server: RSS, open file descriptors, event-loop lag (the
server's ``hypersend_event_loop_lag_seconds``: its largest timer delay over the last 10 s),
connections, and the messages delivered since the last sample. At the end it prints each
server's RSS growth after the warm-up (the first ``--warmup`` seconds) and its FD change; the
target is RSS growth under 5 % and no FD leak (connections held, FDs flat)::

    .venv/bin/python bench/soak.py --backend postgresql              # the full 10 minutes
    .venv/bin/python bench/soak.py --users 1000 --duration 120       # a short run

It starts its own Redis and FerretDB (``--backend sqlite|postgresql``; PostgreSQL is the one
to use for server figures, see ``bench/chat_load.py``) and servers on 127.0.0.1, and stops
everything by itself. Users are seeded through the store and connected by ``chat_load``'s client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tools")]

from bench.chat_load import (  # noqa: E402
    ServerProcess,
    Stats,
    User,
    raise_fd_limit,
    seed,
    spawn_servers,
    wait_ready,
)
from chatserver import auth  # noqa: E402
from chatserver.config import Settings  # noqa: E402

SAMPLED = (
    "process_resident_memory_bytes",
    "process_open_fds",
    "hypersend_event_loop_lag_seconds",
    "hypersend_websocket_connections",
    "hypersend_messages_delivered_total",
)


def process_sample(server: ServerProcess) -> dict[str, float]:
    """RSS and open FDs from /proc: read even when the server is too busy to answer."""
    assert server.process is not None
    proc = Path(f"/proc/{server.process.pid}")
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["process_resident_memory_bytes"] = float(line.split()[1]) * 1024
        out["process_open_fds"] = float(len(os.listdir(proc / "fd")))
    return out


async def sample(server: ServerProcess) -> dict[str, float]:
    """/proc's figures plus the server's own metrics; a scrape that fails (a busy loop past the
    timeout) leaves those out of this sample instead of ending the soak."""
    out = process_sample(server)
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            text = (await http.get(f"{server.url}/metrics", timeout=20)).text
    except httpx.HTTPError as exc:
        print(f"# scrape of {server.url}/metrics failed: {type(exc).__name__}", flush=True)
        return out
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in SAMPLED and name not in out:
            out[name] = float(value)
    return out


async def traffic(users: list[User], per_minute: float, until: float) -> None:
    """Each user sends at ``per_minute`` (exponential gaps) until ``until``; reconnects nothing:
    a socket the server closes counts as lost (the soak must lose none)."""
    await asyncio.gather(*(u.send_loop(per_minute, until, 100) for u in users))


async def run(args: argparse.Namespace) -> None:
    fd_limit = raise_fd_limit()
    jwt_secret = secrets.token_urlsafe(48)
    mongo_db = f"soak_{secrets.token_hex(4)}"
    stack = contextlib.ExitStack()
    servers: list[ServerProcess] = []
    log_dir = Path(args.log_dir)
    os.makedirs(log_dir, exist_ok=True)
    try:
        from hypersend_devenv.datastores import RedisServer, ferretdb_server

        redis_url = stack.enter_context(RedisServer()).url
        mongo_url = stack.enter_context(ferretdb_server(args.backend)).url
        env = {
            "HYPERSEND_REDIS_URL": redis_url,
            "HYPERSEND_MONGO_URL": mongo_url,
            "HYPERSEND_MONGO_DB": mongo_db,
            "HYPERSEND_JWT_SECRET": jwt_secret,
            "HYPERSEND_ACCESS_TOKEN_TTL_SECONDS": str(int(args.duration) + 3600),
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
            access_token_ttl_seconds=int(args.duration) + 3600,
        )
        print(
            f"# soak: {args.users} users, rooms of {args.room_size}, "
            f"{args.per_minute} msg/user/min, "
            f"{args.servers} server(s), {args.duration:.0f}s, FerretDB on {args.backend}, "
            f"fd limit {fd_limit}"
        )
        servers = list(spawn_servers(args.servers, env, log_dir))
        await asyncio.gather(*(wait_ready(s) for s in servers))
        user_ids, room_of = await seed(settings, args.users, args.room_size)
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
        gate = asyncio.Semaphore(100)
        started = time.monotonic()

        async def connect_one(user: User) -> None:
            async with gate:
                await user.connect()

        await asyncio.gather(*(connect_one(u) for u in users))
        print(f"connected {len(users)} sockets in {time.monotonic() - started:.1f}s")
        stats.measuring = True
        started = time.monotonic()
        until = started + args.duration
        sender = asyncio.create_task(traffic(users, args.per_minute, until))
        rows: list[tuple[float, list[dict[str, float]]]] = []
        delivered_before = [0.0] * len(servers)
        scraped_at = [started] * len(servers)
        print("   t(s)  server  RSS(MiB)  FDs  lag(ms)  sockets  delivered/s")
        next_sample = started
        while True:
            now = time.monotonic()
            scraped = await asyncio.gather(*(sample(s) for s in servers))
            rows.append((now - started, scraped))
            for index, metrics in enumerate(scraped):
                # Over the time since this server's last answered scrape.
                delivered = metrics.get("hypersend_messages_delivered_total")
                rate = 0.0
                if delivered is not None:
                    since = max(1e-9, now - scraped_at[index])
                    rate = (delivered - delivered_before[index]) / since
                    delivered_before[index], scraped_at[index] = delivered, now
                print(
                    f"{now - started:7.0f}  {index:6d}  "
                    f"{metrics.get('process_resident_memory_bytes', 0) / 2**20:8.1f}  "
                    f"{metrics.get('process_open_fds', 0):5.0f}  "
                    f"{metrics.get('hypersend_event_loop_lag_seconds', 0) * 1000:7.1f}  "
                    f"{metrics.get('hypersend_websocket_connections', 0):7.0f}  "
                    f"{rate if len(rows) > 1 else 0:11.0f}",
                    flush=True,
                )
            if now >= until:
                break
            next_sample += args.sample
            await asyncio.sleep(max(0.0, min(next_sample, until) - time.monotonic()))
        await sender
        print()
        held = sum(1 for u in users if u.client.live)
        print(
            f"sockets held {held}/{len(users)}; sent {stats.sent}, acked {stats.acked}, "
            f"errors {stats.errors or 'none'}, closed by server {stats.closed or 'none'}"
        )
        warm = [r for r in rows if r[0] >= args.warmup] or rows
        for index in range(len(servers)):
            first, last = warm[0][1][index], warm[-1][1][index]
            rss0 = first.get("process_resident_memory_bytes", 0.0)
            rss1 = last.get("process_resident_memory_bytes", 0.0)
            fds0, fds1 = first.get("process_open_fds", 0.0), last.get("process_open_fds", 0.0)
            lag = max(r[1][index].get("hypersend_event_loop_lag_seconds", 0.0) for r in rows)
            print(
                f"server {index}: RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB after warm-up "
                f"({(rss1 - rss0) / max(rss0, 1) * 100:+.1f} %), FDs {fds0:.0f} -> {fds1:.0f}, "
                f"max event-loop lag {lag * 1000:.0f} ms"
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--per-minute", type=float, default=2.0)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS counts")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--log-dir", default="/tmp/hypersend-soak", help="server logs")
    args = parser.parse_args(argv)
    random.seed()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
