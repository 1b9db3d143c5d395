"""The relay between the host's loopback and a network namespace, with a real namespace.

A namespace of the test's own (`unshare --net`, no route anywhere) holds an echo server on an
address of the node network; the relay process must reach it from the host's loopback, proxy
CONNECT requests into it, and refuse every destination outside the allowed networks without
dialling it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypersend_devenv import nsrelay

from tests.fixtures.chat import free_port

pytestmark = pytest.mark.integration

ECHO_IP = "198.18.0.1"


@pytest.fixture
def netns() -> Iterator[Path]:
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
    try:
        deadline = time.monotonic() + 10
        own = os.stat("/proc/self/ns/net").st_ino
        while os.stat(f"/proc/{holder.pid}/ns/net").st_ino == own:
            assert time.monotonic() < deadline, "unshare did not make a network namespace"
            time.sleep(0.01)
        enter = ["nsenter", f"--target={holder.pid}", "--net", "--", "ip"]
        subprocess.run([*enter, "link", "set", "lo", "up"], check=True)
        subprocess.run([*enter, "addr", "add", f"{ECHO_IP}/32", "dev", "lo"], check=True)
        yield Path(f"/proc/{holder.pid}/ns/net")
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
async def echo_port(netns: Path) -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    sock = nsrelay.listening_socket(netns, ECHO_IP, 0)
    server = await asyncio.start_server(echo, sock=sock)
    yield int(sock.getsockname()[1])
    server.close()


@pytest.fixture
async def relay(netns: Path, echo_port: int, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    port = free_port()
    proxy = tmp_path / "egress.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hypersend_devenv.nsrelay", f"--netns={netns}",
        f"--forward=host:127.0.0.1:{port}=node:{ECHO_IP}:{echo_port}",
        f"--connect-proxy={proxy}", "--allow=198.18.0.0/24",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        assert b"relay ready" in await proc.stdout.readline()
    yield port, proxy
    proc.terminate()
    await proc.wait()


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"hello through the relay")
    await writer.drain()
    async with asyncio.timeout(10):
        return await reader.readexactly(len(b"hello through the relay"))


async def test_a_loopback_port_reaches_a_server_inside_the_namespace(
    relay: tuple[int, Path],
) -> None:
    port, _ = relay
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _roundtrip(reader, writer) == b"hello through the relay"
    writer.close()


Tunnel = tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(proxy: Path, target: str) -> Tunnel:
    reader, writer = await asyncio.open_unix_connection(os.fspath(proxy))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], reader, writer


async def test_the_connect_proxy_tunnels_into_the_namespace(
    relay: tuple[int, Path], echo_port: int
) -> None:
    _, proxy = relay
    status, reader, writer = await _connect(proxy, f"{ECHO_IP}:{echo_port}")
    assert status.startswith(b"HTTP/1.1 200")
    assert await _roundtrip(reader, writer) == b"hello through the relay"
    writer.close()


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:22",  # the namespace's (or anybody's) loopback
        "192.0.2.1:80",  # outside the allowed networks
        "example.org:443",  # names are never resolved
    ],
)
async def test_the_connect_proxy_refuses_every_other_destination(
    relay: tuple[int, Path], target: str
) -> None:
    _, proxy = relay
    status, _, writer = await _connect(proxy, target)
    assert status.startswith(b"HTTP/1.1 403"), status
    writer.close()


async def test_an_allowed_destination_with_no_listener_is_a_bad_gateway(
    relay: tuple[int, Path],
) -> None:
    _, proxy = relay
    status, _, writer = await _connect(proxy, f"{ECHO_IP}:{free_port()}")
    assert status.startswith(b"HTTP/1.1 502"), status
    writer.close()
