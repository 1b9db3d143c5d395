"""What each WebSocket stack costs per connect and per idle socket (issue #16's "a faster
WebSocket stack, measured").

    .venv/bin/python bench/ws_stacks.py --sockets 4000 --runs 2

Every stack serves the same behaviour (bench/ws_stacks_server.py: accept, read one JSON frame,
answer one, hold the socket), one process pinned to core 1; this driver, on core 0, opens
``--sockets`` sockets ``--concurrency`` at a time, each sending an auth-sized frame and waiting
for the answer, and closes them once the last is answered. Printed per stack: connects per
second, the server's CPU per connect (its process tree, until the last answer) and its RSS per
held socket. The stacks:

- ``hypersend``: uvicorn with the chat server's protocol classes (``LeanSansIOProtocol``,
  ``AcyclicHttpToolsProtocol``, chatserver/__main__.py), as the chat server runs;
- ``uvicorn``: uvicorn's own httptools + websockets-sansio;
- ``granian``: granian's Rust HTTP and WebSocket server calling the same ASGI app;
- ``picows``: picows (Cython), its own listener API, no ASGI.

granian and picows are installed when this bench runs (hash-pinned in
bench/ws_stacks-requirements.txt, into ~/.cache/hypersend), never by CI; ``--stacks
hypersend,uvicorn`` needs nothing beyond the project's environment. Runs alternate the stacks;
this machine's speed drifts by ~20 % between minutes, so compare within a run. Bounded by the
socket count; every server stops with its run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "tools"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import websockets  # noqa: E402
from hypersend_devenv.build import CACHE_ROOT  # noqa: E402
from hypersend_devenv.datastores import LOOPBACK  # noqa: E402

from bench import side_by_side as sbs  # noqa: E402
from bench import side_by_side_figures as figs  # noqa: E402

STACKS = ("hypersend", "uvicorn", "granian", "picows")
NEEDS_EXTRAS = {"granian", "picows"}
REQUIREMENTS = REPO / "bench" / "ws_stacks-requirements.txt"
SERVER = REPO / "bench" / "ws_stacks_server.py"
# An auth frame the size of the chat server's (a JWT of ~230 bytes).
AUTH = json.dumps({"type": "auth", "token": "x" * 230})


@dataclass(frozen=True)
class Result:
    stack: str
    connects_per_second: float
    cpu_ms_per_connect: float
    rss_kib_per_socket: float
    failures: int


def extras_dir() -> Path:
    """The bench-only wheels, installed once per content of the requirements file."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    target = CACHE_ROOT / "bench" / f"ws-stacks-{digest}"
    stamp = target / ".installed"
    if not stamp.exists():
        print(f"# installing {REQUIREMENTS.name} into {target}", flush=True)
        subprocess.run(
            [
                # --upgrade: a run stopped halfway left files that pip would otherwise keep.
                sys.executable, "-m", "pip", "install", "-q", "--upgrade", "--require-hashes",
                "--no-deps", "--only-binary", ":all:", "--target", str(target),
                "-r", str(REQUIREMENTS),
            ],
            check=True,
        )  # fmt: skip
        stamp.touch()
    return target


def server_command(stack: str, port: int) -> list[str]:
    if stack == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
            "--host", LOOPBACK, "--port", str(port), "--workers", "1",
            # Each held socket counts as a request in flight; the default (backlog) is 1,024.
            "--backpressure", "100000", "--ws",
            "--log-level", "warning", "bench.ws_stacks_server:asgi_app",
        ]  # fmt: skip
    return [sys.executable, str(SERVER), stack, str(port)]


def wait_listening(port: int, process: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {within:.0f}s")


def tree_cpu_seconds(root: int) -> float:
    return figs.tree_ticks(sbs.read_proc(), [root]) / sbs.CLK_TCK


def tree_rss_kib(root: int) -> int:
    members = figs.descendants(sbs.read_proc(), [root])
    return sum(sbs.rss_kib(pid) or 0 for pid in members)


@contextlib.contextmanager
def running(stack: str, pin: bool, extras: Path | None) -> Iterator[tuple[int, int]]:
    """A server of `stack` on a free port: (its pid, the port)."""
    port = sbs.free_port()
    path = [str(REPO), *([str(extras)] if extras else []), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    process = subprocess.Popen(
        server_command(stack, port),
        cwd=REPO,
        env=env,
        preexec_fn=sbs.pinned(sbs.SERVER_CORE if pin else None),
    )
    try:
        wait_listening(port, process)
        yield process.pid, port
    finally:
        sbs.stop_process(process, grace=10)


async def connect_wave(
    url: str, sockets: int, concurrency: int
) -> tuple[float, int, list[websockets.ClientConnection]]:
    """Open every socket, `concurrency` at a time, each answered once: (seconds, failures, the
    open sockets)."""
    gate = asyncio.Semaphore(concurrency)
    opened: list[websockets.ClientConnection] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with gate:
            try:
                ws = await websockets.connect(url, compression=None, open_timeout=30)
                opened.append(ws)
                await ws.send(AUTH)
                async with asyncio.timeout(30):
                    json.loads(await ws.recv())
            except Exception as exc:
                failures += 1
                if failures <= 3:
                    print(f"    connect failed: {exc!r}", flush=True)

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(sockets)))
    return time.monotonic() - started, failures, list(opened)


async def measure(stack: str, args: argparse.Namespace, pin: bool, extras: Path | None) -> Result:
    with running(stack, pin, extras) as (pid, port):
        url = f"ws://{LOOPBACK}:{port}/ws"
        # One socket first: imports and lazy set-up are not a connect's cost.
        _, failed, warm = await connect_wave(url, 1, 1)
        if failed:
            raise RuntimeError(f"{stack}: the first socket failed")
        cpu0, rss0 = tree_cpu_seconds(pid), tree_rss_kib(pid)
        seconds, failures, opened = await connect_wave(url, args.sockets, args.concurrency)
        cpu1 = tree_cpu_seconds(pid)
        sbs.wait_rss_settled(pid)
        rss1 = tree_rss_kib(pid)
        live = args.sockets - failures
        await asyncio.gather(*(ws.close() for ws in [*warm, *opened]), return_exceptions=True)
    return Result(
        stack=stack,
        connects_per_second=live / seconds,
        cpu_ms_per_connect=1000 * (cpu1 - cpu0) / max(1, live),
        rss_kib_per_socket=(rss1 - rss0) / max(1, live),
        failures=failures,
    )


def render(results: list[Result]) -> str:
    lines = [
        "| stack | connects/s | server CPU per connect | RSS per held socket | failed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.stack} | {r.connects_per_second:,.0f} | {r.cpu_ms_per_connect:.3f} ms"
            f" | {r.rss_kib_per_socket:.1f} KiB | {r.failures} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1, help="rounds over all stacks")
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.stacks = [s for s in args.stacks.split(",") if s]
    unknown = sorted(set(args.stacks) - set(STACKS))
    if unknown:
        parser.error(f"unknown stacks {unknown}; known: {', '.join(STACKS)}")
    if not 1 <= args.sockets <= 15_000:
        parser.error("--sockets must be 1-15000 (this container's open-files limit is 20,000)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sbs.raise_fd_limit()
    pin = not args.no_pin and {0, 1} <= os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {sbs.DRIVER_CORE})
    extras = extras_dir() if NEEDS_EXTRAS & set(args.stacks) else None
    results: list[Result] = []
    for run in range(args.runs):
        print(f"# run {run + 1}/{args.runs}: {args.sockets} sockets, {args.concurrency} at a time")
        for stack in args.stacks:
            result = asyncio.run(measure(stack, args, pin, extras))
            results.append(result)
            print(
                f"  {stack}: {result.connects_per_second:,.0f} connects/s,"
                f" {result.cpu_ms_per_connect:.3f} ms CPU per connect,"
                f" {result.rss_kib_per_socket:.1f} KiB per socket",
                flush=True,
            )
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
