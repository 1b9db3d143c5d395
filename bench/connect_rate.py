"""A bounded WebSocket connect benchmark of one Hypersend server process (issue #16).

    nice -n 19 .venv/bin/python bench/connect_rate.py --sockets 2000 --rooms-per-user 5
    nice -n 19 .venv/bin/python bench/connect_rate.py --sockets 2000 --rooms-per-user 5 --resume

Starts Redis and FerretDB, seeds users (each in ``--rooms-per-user`` rooms of ten, every room
with ``--messages-per-room`` messages), starts one chat server (core 1; this driver on core 0),
and opens ``--sockets`` sockets, ``--concurrency`` at a time, each with its own user. A connect
is done when the socket is live: ``ready`` and the ``pong`` of the ping sent after ``auth``, or
with ``--resume`` the ``resumed`` that answers a resume from each room's second-to-last seq (one
message per room replayed). Sockets stay open until the last one is live. Prints connects per
second and the server's MongoDB commands and Redis round trips per connect (from /metrics), then
each process's CPU per connect (server, MongoDB store, Redis, driver) and the connect rate their
sum caps at on this machine's cores.
The server's CPU per connect follows this machine's speed, which varies by ±20 % between runs;
the driver does the same work for any server, so the ratio of the server's CPU to the driver's
(both until the last socket is live) compares two commits run alternately.
The access tokens carry a login id, so each connect also checks revocation, as real ones do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "tools", REPO / "clients" / "python"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import websockets  # noqa: E402
from hypersend_devenv.datastores import LOOPBACK, RedisServer, ferretdb_server  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bench import side_by_side as sbs  # noqa: E402
from bench import side_by_side_figures as figs  # noqa: E402
from chatserver import auth  # noqa: E402
from chatserver.config import Settings  # noqa: E402
from chatserver.store import Store  # noqa: E402

ROOM_SIZE = 10
COUNTERS = {
    "mongo": "hypersend_mongo_commands_total",
    "redis": "hypersend_redis_round_trips_total",
}


async def seed(
    settings: Settings, users: int, rooms_per_user: int, messages: int
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Users, each in ``rooms_per_user`` rooms of ROOM_SIZE; (user ids, each user's rooms with
    their last seq)."""
    store = Store(settings)
    await store.connect()
    await store.ensure_indexes()
    password_hash = await auth.Passwords(settings, slots=1).hash(secrets.token_urlsafe(16))
    gate = asyncio.Semaphore(32)
    run = secrets.token_hex(3)

    async def user(i: int) -> str:
        async with gate:
            return (await store.create_user(f"c{run}{i}", f"bench {i}", password_hash)).id

    user_ids = list(await asyncio.gather(*(user(i) for i in range(users))))
    rooms_of: dict[str, dict[str, int]] = {uid: {} for uid in user_ids}

    async def room(members: list[str]) -> None:
        async with gate:
            created = await store.create_group_room(members[0], "bench", members[1:])
            for n in range(messages):
                await store.append_message(created.id, members[0], f"seed-{n}", f"hello {n}")
        for uid in members:
            rooms_of[uid][created.id] = messages

    groups: list[list[str]] = []
    for layer in range(rooms_per_user):
        # Each layer partitions the users into rooms, shifted so rooms of layers differ.
        order = user_ids[layer * 3 :] + user_ids[: layer * 3]
        groups += [order[i : i + ROOM_SIZE] for i in range(0, len(order), ROOM_SIZE)]
    await asyncio.gather(*(room(g) for g in groups))
    await store.close()
    return user_ids, rooms_of


def machine_budget(
    done: int, cores: int, before: figs.Sample, live: figs.Sample, driver_cpu: float
) -> str:
    """What a connect cost each process (server, store, Redis, this driver), and the connect
    rate their sum caps at on the cores they share (issue #16's 1,000 connects/s)."""
    outcome = figs.Outcome(
        figs.Workload("connect", "idle", done, connect_timeout_s=30),
        samples={"start": before, "connected": replace(live, driver_cpu=driver_cpu)},
        cores=cores,
    )
    ms = figs.connect_costs(outcome, done)
    return (
        f"  CPU per connect: server {ms['server_ms_per_connect'] or 0:.2f} ms, MongoDB store "
        f"{ms['store_ms_per_connect'] or 0:.2f} ms, Redis {ms['redis_ms_per_connect'] or 0:.2f} "
        f"ms, driver {ms['driver_ms_per_connect'] or 0:.2f} ms; all "
        f"{ms['all_ms_per_connect'] or 0:.2f} ms = at most {ms['connect_rate_cap'] or 0:.0f} "
        f"connects/s on the {cores} cores they share"
    )


def counters(metrics_url: str) -> dict[str, float]:
    text = sbs.http_get(metrics_url, timeout=30)[1]
    return {name: figs.metric_sum(text, metric) or 0.0 for name, metric in COUNTERS.items()}


def wait_closed(metrics_url: str, within: float = 60) -> None:
    """Wait until the server has closed every socket (the next round starts from none)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        # A server busy closing thousands of sockets may answer late: ask again.
        with contextlib.suppress(OSError):
            text = sbs.http_get(metrics_url, timeout=30)[1]
            if not figs.metric_sum(text, "hypersend_websocket_connections"):
                return
        time.sleep(0.2)
    raise TimeoutError(f"sockets still open after {within:.0f}s")


async def connect_all(
    url: str,
    tokens: list[str],
    rooms: list[dict[str, int]],
    resume: bool,
    concurrency: int,
    at_live: Callable[[], Any],
) -> tuple[float, int, Any]:
    """Open every socket (``concurrency`` at a time); (seconds until the last is live, failures,
    what ``at_live`` returned then: before the sockets close)."""
    gate = asyncio.Semaphore(concurrency)
    opened: list[Any] = []
    failures = 0

    async def one(token: str, last: dict[str, int]) -> None:
        nonlocal failures
        async with gate:
            try:
                ws = await websockets.connect(url, compression=None, open_timeout=30)
                opened.append(ws)
                await ws.send(json.dumps({"type": "auth", "token": token}))
                if resume:
                    since = {room: max(0, seq - 1) for room, seq in last.items()}
                    await ws.send(json.dumps({"type": "resume", "rooms": since}))
                    wanted = "resumed"
                else:
                    await ws.send('{"type":"ping"}')
                    wanted = "pong"
                async with asyncio.timeout(30):
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame.get("type") == "error":
                            raise RuntimeError(str(frame))
                        if frame.get("type") == wanted:
                            return
            except Exception as exc:
                failures += 1
                if failures <= 3:
                    print(f"    connect failed: {exc!r}", flush=True)

    started = time.monotonic()
    await asyncio.gather(*(one(t, r) for t, r in zip(tokens, rooms, strict=True)))
    seconds = time.monotonic() - started
    live = at_live()
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    return seconds, failures, live


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--rooms-per-user", type=int, default=1)
    parser.add_argument("--messages-per-room", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="resume every room on connect")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="connect waves (one server)")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    # Stopped from outside: unwind, so the datastores stop and their directories go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sbs.raise_fd_limit()
    pin = not args.no_pin and {0, 1} <= os.sched_getaffinity(0)
    cores = len(os.sched_getaffinity(0))  # the driver, server and datastores share these
    if pin:
        os.sched_setaffinity(0, {sbs.DRIVER_CORE})
    secret = secrets.token_urlsafe(48)
    mongo_db = f"cr_{secrets.token_hex(4)}"
    with (
        tempfile.TemporaryDirectory(prefix="connect-rate-") as workdir,
        RedisServer() as redis,
        ferretdb_server(args.backend) as mongo,
    ):
        settings = Settings(
            jwt_secret=SecretStr(secret),
            mongo_url=SecretStr(mongo.url),
            mongo_db=mongo_db,
            access_token_ttl_seconds=sbs.TOKEN_TTL_SECONDS,
        )
        started = time.monotonic()
        user_ids, rooms_of = asyncio.run(
            seed(settings, args.sockets, args.rooms_per_user, args.messages_per_room)
        )
        print(
            f"# seeded {len(user_ids)} users, {args.rooms_per_user} rooms each, "
            f"{args.messages_per_room} messages per room, in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        tokens = [
            auth.issue_access_token(uid, settings, family_id=secrets.token_hex(8))
            for uid in user_ids
        ]
        port = sbs.free_port()
        env = sbs.hypersend_env(redis.url, mongo.url, mongo_db, secret)
        with (Path(workdir) / "server.log").open("ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "chatserver"],
                cwd=REPO,
                env={**env, "HYPERSEND_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=sbs.pinned(sbs.SERVER_CORE if pin else None),
            )
        try:
            base = f"http://{LOOPBACK}:{port}"
            sbs.wait_http_ok(f"{base}/readyz", server)
            print(f"# server pid {server.pid}; pinned: {pin}", flush=True)
            rooms = [rooms_of[uid] for uid in user_ids]
            store_pids = [p.process.pid for p in (mongo, mongo.postgres) if p and p.process]
            watched = sbs.Watched(
                server=server.pid,
                store=store_pids,
                redis=redis.process.pid if redis.process else None,
            )
            for n in range(args.rounds):
                before = counters(f"{base}/metrics")
                cpu_before = time.process_time()
                sample_before = watched.sample()

                def at_live() -> tuple[figs.Sample, float, dict[str, float]]:
                    return watched.sample(), time.process_time(), counters(f"{base}/metrics")

                seconds, failures, (sample_live, driver_live, after) = asyncio.run(
                    connect_all(f"ws://{LOOPBACK}:{port}/ws", tokens, rooms, args.resume,
                                args.concurrency, at_live)
                )  # fmt: skip
                server_cpu = (sample_live.server_cpu or 0.0) - (sample_before.server_cpu or 0.0)
                driver_cpu = driver_live - cpu_before
                wait_closed(f"{base}/metrics")
                done = len(tokens) - failures
                per = {k: (after[k] - before[k]) / max(done, 1) for k in COUNTERS}
                print(
                    f"round {n + 1}: {done}/{len(tokens)} live in {seconds:.2f}s = "
                    f"{done / seconds:.0f} connects/s ({'resume' if args.resume else 'no resume'},"
                    f" {args.rooms_per_user} rooms/user); MongoDB commands/connect "
                    f"{per['mongo']:.2f}, Redis round trips/connect {per['redis']:.2f}; "
                    f"server CPU {server_cpu * 1000 / max(done, 1):.2f} ms/connect "
                    f"(= {max(done, 1) / max(server_cpu, 1e-9):.0f} connects per CPU second); "
                    f"driver CPU {driver_cpu:.1f}s; server/driver CPU "
                    f"{server_cpu / max(driver_cpu, 1e-9):.3f}",
                    flush=True,
                )
                budget = machine_budget(done, cores, sample_before, sample_live, driver_cpu)
                print(budget, flush=True)
        finally:
            sbs.stop_process(server)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
