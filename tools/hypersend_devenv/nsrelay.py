"""TCP relays between the host's loopback and the real node's network namespace.

The real node (kubelet, containerd, pods) lives in a network namespace of its own with no route
out; the control plane and the tests live on the host's loopback. Nothing routes between the two:
this process carries the few connections that must cross, each by a socket opened inside the
right namespace (a socket keeps the namespace it was created in).

- forwards: listen at (namespace, address), connect to a fixed (namespace, address). The node
  reaches the API server through one (node 0.0.0.0:P -> host 127.0.0.1:P); a test reaches a
  Service's ClusterIP through another (host 127.0.0.1:X -> node <cluster IP>:port).
- an HTTP CONNECT proxy on a Unix socket for the API server's egress selector ("cluster" traffic:
  kubelets, pods, services, aggregated APIs). Destinations outside `allowed` networks are refused,
  so the API server can dial only inside the node's namespace.

    python -m hypersend_devenv.nsrelay --netns /run/netns/NAME \
        --forward node:0.0.0.0:6443=host:127.0.0.1:6443 --connect-proxy /path/egress.sock \
        --allow 198.18.0.0/24 --allow 10.96.0.0/16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h11

CLONE_NEWNET = 0x40000000
HOST = "host"
NODE = "node"
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def entered(netns: Path | None) -> Iterator[None]:
    """Run the block with this thread in `netns` (None: stay where we are), then switch back.

    Python 3.11 has no os.setns; the block must not await (asyncio runs on this very thread).
    """
    if netns is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listening_socket(netns: Path | None, host: str, port: int) -> socket.socket:
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def open_in(
    netns: Path | None, host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy both ways until both directions have ended, then close both."""
    try:
        await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))
    finally:
        for _, writer in (a, b):
            writer.close()


@dataclass(frozen=True)
class Endpoint:
    """An address inside one namespace: `host` (this process's own) or `node`."""

    side: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        side, host, port = text.rsplit(":", 2)
        if side not in (HOST, NODE):
            raise ValueError(f"{text!r}: the side must be {HOST!r} or {NODE!r}")
        return cls(side, host, int(port))

    def netns(self, node_netns: Path) -> Path | None:
        return node_netns if self.side == NODE else None


@dataclass(frozen=True)
class Forward:
    listen: Endpoint
    connect: Endpoint

    @classmethod
    def parse(cls, text: str) -> Forward:
        listen, connect = text.split("=", 1)
        return cls(Endpoint.parse(listen), Endpoint.parse(connect))


async def serve_forward(forward: Forward, node_netns: Path) -> asyncio.Server:
    target = forward.connect

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await open_in(target.netns(node_netns), target.host, target.port)
        except OSError:
            writer.close()
            return
        await splice((reader, writer), upstream)

    sock = listening_socket(
        forward.listen.netns(node_netns), forward.listen.host, forward.listen.port
    )
    return await asyncio.start_server(handle, sock=sock)


def connect_target(request: h11.Request) -> tuple[str, int]:
    """host and port of a CONNECT request ("198.18.0.1:10250")."""
    if request.method != b"CONNECT":
        raise ValueError(f"only CONNECT is served, not {request.method.decode()}")
    host, _, port = request.target.decode().rpartition(":")
    return host.strip("[]"), int(port)


def is_allowed(host: str, allowed: Sequence[ipaddress.IPv4Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # names are not resolved here: the API server dials addresses
    return any(address in net for net in allowed)


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The client's request, or None when it sent something else or hung up first."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))  # b"" tells h11 the peer hung up
            continue
        return event if isinstance(event, h11.Request) else None


async def serve_connect_proxy(
    path: Path, node_netns: Path, allowed: Sequence[ipaddress.IPv4Network]
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)

        def answer(status: int, reason: bytes) -> None:
            writer.write(conn.send(h11.Response(status_code=status, headers=[], reason=reason)))

        try:
            request = await _read_request(conn, reader)
            if request is None:
                writer.close()
                return
            host, port = connect_target(request)
            if not is_allowed(host, allowed):
                answer(403, b"destination outside the node network")
                writer.close()
                return
            upstream = await open_in(node_netns, host, port)
        except (ValueError, h11.RemoteProtocolError):
            writer.close()
            return
        except OSError as exc:
            answer(502, str(exc).encode())
            writer.close()
            return
        answer(200, b"Connection established")
        # Bytes the client sent right after its request belong to the tunnel.
        leftover, _ = conn.trailing_data
        if leftover:
            upstream[1].write(leftover)
        await splice((reader, writer), upstream)

    # Only root (the API server) may use the proxy: the socket is made under a 0o077 umask.
    old_umask = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(handle, path=os.fspath(path))
    finally:
        os.umask(old_umask)
    return server


async def run(
    node_netns: Path,
    forwards: Sequence[Forward],
    proxy_path: Path | None,
    allowed: Sequence[ipaddress.IPv4Network],
) -> None:
    servers = [await serve_forward(f, node_netns) for f in forwards]
    if proxy_path is not None:
        servers.append(await serve_connect_proxy(proxy_path, node_netns, allowed))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("relay ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hypersend_devenv.nsrelay", description=__doc__)
    parser.add_argument("--netns", type=Path, required=True, help="the node's network namespace")
    parser.add_argument("--forward", type=Forward.parse, action="append", default=[])
    parser.add_argument("--connect-proxy", type=Path, help="Unix socket of the CONNECT proxy")
    parser.add_argument("--allow", type=ipaddress.IPv4Network, action="append", default=[])
    args = parser.parse_args(argv)
    asyncio.run(run(args.netns, args.forward, args.connect_proxy, args.allow))


if __name__ == "__main__":
    main()
