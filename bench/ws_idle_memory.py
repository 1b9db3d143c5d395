"""Idle WebSocket memory: the chat server's RSS per open, authenticated, idle socket.

Starts Redis, FerretDB and one chat server on loopback, opens ``--sockets`` sockets (each a user
of its own with no rooms, a token minted with the run's JWT secret), waits until every one has
its ``ready`` and the server is quiet, and prints the server's RSS growth per socket. Clients
offer permessage-deflate or not (``--client-deflate``); the server's policy is
``HYPERSEND_WS_COMPRESSION`` (``--compression``). ``--messages`` sends each socket that many
frames first (a compressor that keeps its context holds it from the first message on).

    .venv/bin/python bench/ws_idle_memory.py --sockets 2000 --client-deflate --compression off

Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "clients" / "python"))

from hypersend_client import FrameSocket  # noqa: E402
from hypersend_devenv.datastores import RedisServer, ferretdb_server, free_port  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def token(secret: str, user_id: str) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "typ": "access", "iat": now - 60, "exp": now + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


async def settle(pid: int, seconds: float = 1.0) -> int:
    """RSS once two readings ``seconds`` apart agree within 1 %."""
    last = rss_kib(pid)
    for _ in range(20):
        await asyncio.sleep(seconds)
        now = rss_kib(pid)
        if abs(now - last) <= last / 100:
            return now
        last = now
    return last


def start_server(
    args: argparse.Namespace, stack: contextlib.ExitStack, secret: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Redis, FerretDB and one chat server on loopback, ready; (process, port)."""
    port = free_port()
    redis_url = stack.enter_context(RedisServer()).url
    mongo_url = stack.enter_context(ferretdb_server("sqlite")).url
    log = stack.enter_context(tempfile.NamedTemporaryFile(prefix="ws-idle-", suffix=".log"))  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERSEND_")}
    env.update(
        {
            "HYPERSEND_HOST": "127.0.0.1",
            "HYPERSEND_PORT": str(port),
            "HYPERSEND_REDIS_URL": redis_url,
            "HYPERSEND_MONGO_URL": mongo_url,
            "HYPERSEND_MONGO_DB": f"idle_{secrets.token_hex(4)}",
            "HYPERSEND_JWT_SECRET": secret,
            "HYPERSEND_LOG_LEVEL": "warning",
            "HYPERSEND_WS_IP_OPENS_PER_MINUTE": "1000000",
            "HYPERSEND_WS_MAX_UNAUTHENTICATED": "100000",
            "HYPERSEND_WS_MAX_CONNECTIONS": str(args.sockets + 100),
            "HYPERSEND_WS_COMPRESSION": args.compression,
            "HYPERSEND_DRAIN_DELAY_SECONDS": "0",
            "HYPERSEND_DRAIN_SECONDS": "10",
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "chatserver"], cwd=REPO, env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server, port
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError(Path(log.name).read_text()[-3000:])
        time.sleep(0.2)


async def measure(args: argparse.Namespace, pid: int, port: int, secret: str) -> None:
    ws_url = f"ws://127.0.0.1:{port}/ws"
    gate = asyncio.Semaphore(64)

    async def open_one(i: int) -> FrameSocket:
        async with gate:
            ws = await FrameSocket.open(
                ws_url, compression="deflate" if args.client_deflate else None
            )
            await ws.send({"type": "auth", "token": token(secret, f"idle-{i}")})
            await ws.send({"type": "ping"})
            while (await ws.recv()).get("type") != "ready":
                pass
            for _ in range(args.messages):
                await ws.send({"type": "ping"})
                while (await ws.recv()).get("type") != "pong":
                    pass
            return ws

    # Warm-up: the first sockets import and allocate what every later one shares.
    warm = [await open_one(-1 - i) for i in range(20)]
    before = await settle(pid)
    started = time.monotonic()
    sockets = await asyncio.gather(*(open_one(i) for i in range(args.sockets)))
    took = time.monotonic() - started
    after = await settle(pid)
    per = (after - before) / args.sockets
    print(
        f"sockets={args.sockets} client_deflate={args.client_deflate} "
        f"server_compression={args.compression} messages={args.messages} "
        f"rss_before={before}KiB rss_after={after}KiB per_socket={per:.1f}KiB "
        f"connect={took:.1f}s",
        flush=True,
    )
    for ws in [*sockets, *warm]:
        ws.abort()


def run(args: argparse.Namespace) -> None:
    secret = secrets.token_urlsafe(48)
    with contextlib.ExitStack() as stack:
        server, port = start_server(args, stack, secret)
        try:
            asyncio.run(measure(args, server.pid, port, secret))
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--client-deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--compression", choices=["off", "on"], default="off")
    parser.add_argument("--messages", type=int, default=1, help="ping/pong frames per socket")
    args = parser.parse_args()
    run(args)


if __name__ == "__main__":
    main()
