"""Issue #11, abuse limits: per-client-address limits on register/login/refresh and socket
opens, unauthenticated sockets kept out of the connection gauge and closed at the auth timeout,
and a registration flood against one server under a memory limit.

The test client is on loopback; servers that should believe ``X-Forwarded-For`` list 127.0.0.1
as a trusted proxy, so one client can speak for many addresses.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess
from tests.integration.chatserver.realtime_client import (
    Client,
    connect_user,
    metric,
    open_socket,
    register,
    until_metric,
)

pytestmark = pytest.mark.integration

PASSWORD = "correct horse 1"


def _name() -> str:
    return f"u{secrets.token_hex(6)}"


async def _post(
    http: httpx.AsyncClient, path: str, body: dict[str, str], forwarded_for: str | None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await http.post(f"/api/v1{path}", json=body, headers=headers)


async def test_register_login_refresh_are_limited_per_client_address(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(trusted_proxies="127.0.0.1", auth_ip_rate_limit_per_minute=3)
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
        for _ in range(3):
            created = await _post(
                http, "/auth/register", {"username": _name(), "password": PASSWORD}, "198.51.100.7"
            )
            assert created.status_code == 201, created.text
        refused = await _post(
            http, "/auth/register", {"username": _name(), "password": PASSWORD}, "198.51.100.7"
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        # A client in front of the proxy cannot pick its address: what it writes is to the left.
        spoofed = await _post(
            http,
            "/auth/register",
            {"username": _name(), "password": PASSWORD},
            "203.0.113.1, 198.51.100.7",
        )
        assert spoofed.status_code == 429
        # Another client behind the same proxy is not affected.
        other = await _post(
            http, "/auth/register", {"username": _name(), "password": PASSWORD}, "198.51.100.8"
        )
        assert other.status_code == 201

        # Login: different usernames each time, so only the per-address limit can refuse.
        for _ in range(3):
            wrong = await _post(
                http, "/auth/login", {"username": _name(), "password": PASSWORD}, "198.51.100.9"
            )
            assert wrong.status_code == 401
        limited = await _post(
            http, "/auth/login", {"username": _name(), "password": PASSWORD}, "198.51.100.9"
        )
        assert limited.status_code == 429

        for _ in range(3):
            bad = await _post(
                http, "/auth/refresh", {"refresh_token": secrets.token_hex(8)}, "198.51.100.10"
            )
            assert bad.status_code == 401
        limited = await _post(
            http, "/auth/refresh", {"refresh_token": secrets.token_hex(8)}, "198.51.100.10"
        )
        assert limited.status_code == 429


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(auth_ip_rate_limit_per_minute=2)
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as http:
        codes = [
            (
                await _post(
                    http, "/auth/register", {"username": _name(), "password": PASSWORD}, address
                )
            ).status_code
            for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3")
        ]
    # All three count against 127.0.0.1, the peer.
    assert codes == [201, 201, 429]


async def test_socket_opens_are_limited_per_client_address(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(trusted_proxies="127.0.0.1", ws_ip_opens_per_minute=2)
    user = await register(server.url)
    opened: list[Client] = []
    for n in range(1, 3):
        opened.append(
            await open_socket(server.ws_url, headers={"X-Forwarded-For": "198.51.100.20"})
        )
        # Counted (the open is checked after the handshake): the next one is surely later.
        await _wait_metric(server.url, "hypersend_websocket_unauthenticated_connections", n)
    third = await open_socket(server.ws_url, headers={"X-Forwarded-For": "198.51.100.20"})
    code, reason = await third.closed()
    assert code == 4429
    assert reason is not None
    assert "too many sockets" in reason
    # Another address still gets in and authenticates.
    other = await open_socket(
        server.ws_url, user.token, headers={"X-Forwarded-For": "198.51.100.21"}
    )
    await other.until_type("ready")
    assert await metric(server.url, "hypersend_websocket_opens_refused_total") == 1
    for client in [*opened, other]:
        await client.close()


async def _wait_metric(url: str, name: str, value: float, wait: float = 20.0) -> None:
    await until_metric(url, name, lambda got: got == value, wait)


async def test_unauthenticated_sockets_do_not_count_and_do_not_survive_the_auth_timeout(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(ws_auth_timeout_seconds=2, ws_max_unauthenticated=2)
    user = await register(server.url)
    authed = await connect_user(server.ws_url, user)
    await _wait_metric(server.url, "hypersend_websocket_connections", 1)
    silent = [await open_socket(server.ws_url) for _ in range(2)]
    await _wait_metric(server.url, "hypersend_websocket_unauthenticated_connections", 2)
    # Only the authenticated socket counts in the autoscaling gauge.
    assert await metric(server.url, "hypersend_websocket_connections") == 1
    # The unauthenticated cap refuses a third; it is not the connection cap.
    refused = await open_socket(server.ws_url)
    assert (await refused.closed())[0] == 1013
    for sock in silent:
        code, _ = await sock.closed()
        assert code == 4408
    await _wait_metric(server.url, "hypersend_websocket_unauthenticated_connections", 0)
    # The authenticated socket is untouched by the others' timeout.
    await authed.send({"type": "ping"})
    await authed.until_type("pong")
    assert await metric(server.url, "hypersend_websocket_connections") == 1
    await authed.close()


# -- a registration flood under a memory limit ------------------------------------------------

# The limit the flooded server runs under. Unbounded, asyncio's default thread pool alone runs
# min(32, CPUs + 4) hashes of 64 MiB at once (6 on a 2-core machine, 384 MiB): more than this.
# Bounded, a quarter of it (one 64 MiB hash at a time) plus the server fits.
FLOOD_MEMORY_LIMIT = 320 * 2**20
FLOOD_REQUESTS = 24


class MemoryCgroup:
    """A memory cgroup (v2 or v1) made under this process's own, removed afterwards."""

    def __init__(self, limit: int) -> None:
        self.path, self.limit_file, self.events = self._make()
        self.limit_file.write_text(str(limit))

    @staticmethod
    def _make() -> tuple[Path, Path, Path]:
        name = f"hypersend-test-{secrets.token_hex(4)}"
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _, rest = line.partition(":")
            controllers, _, own = rest.partition(":")
            if hierarchy == "0" and controllers == "":
                base = Path("/sys/fs/cgroup") / own.lstrip("/")
                if (base / "cgroup.controllers").exists() and "memory" in (
                    base / "cgroup.controllers"
                ).read_text().split():
                    path = base / name
                    path.mkdir()
                    return path, path / "memory.max", path / "memory.events"
            elif "memory" in controllers.split(","):
                path = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / name
                path.mkdir()
                return path, path / "memory.limit_in_bytes", path / "memory.failcnt"
        raise OSError("no memory cgroup controller for this process")

    def join(self) -> None:
        """Move the calling process into the cgroup (run in the child before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # the killed process is still being reaped


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    try:
        group = MemoryCgroup(FLOOD_MEMORY_LIMIT)
    except OSError as exc:
        pytest.skip(f"cannot create a memory cgroup here: {exc}")
    yield group
    group.remove()


async def test_registration_flood_under_a_memory_limit_leaves_the_server_serving(
    chat_server_factory: ChatServerFactory, memory_cgroup: MemoryCgroup
) -> None:
    server = chat_server_factory.create(
        trusted_proxies="127.0.0.1", argon2_max_waiting=8, ws_ip_opens_per_minute=1000
    )
    server.preexec_fn = memory_cgroup.join
    try:
        await _flood(server)
    finally:
        server.stop()  # before the cgroup is removed


async def _flood(server: ChatServerProcess) -> None:
    server.start()
    assert f"memory limit {FLOOD_MEMORY_LIMIT} bytes" in server.logs()
    bystander = await register(server.url, "by")
    sock = await connect_user(server.ws_url, bystander)
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=120) as http:
        # Every request from its own address: the per-address limit cannot help, the hashing
        # bound must.
        flood = [
            asyncio.ensure_future(
                _post(
                    http,
                    "/auth/register",
                    {"username": _name(), "password": PASSWORD},
                    f"198.18.{i // 250}.{i % 250 + 1}",
                )
            )
            for i in range(FLOOD_REQUESTS)
        ]
        # While the flood is hashing, the bystander's socket and REST calls are served.
        room = await _own_room(http, bystander.token)
        for n in range(3):
            ack = await sock.send_message(room, f"during the flood {n}", wait=60)
            assert ack["type"] == "ack", ack
        me = await http.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {bystander.token}"}
        )
        assert me.status_code == 200
        answers = await asyncio.gather(*flood, return_exceptions=True)
    codes = sorted(a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers)
    assert server.returncode is None, server.log_tail()
    # Each flood request was either served or told to retry; none failed.
    assert set(codes) <= {201, 503}, codes
    assert codes.count(201) >= 1
    busy = [a for a in answers if isinstance(a, httpx.Response) and a.status_code == 503]
    assert all(a.json()["error"]["code"] == "try_again" for a in busy)
    # The bystander's socket was never dropped, and the server still registers.
    await sock.send({"type": "ping"})
    await sock.until_type("pong")
    await register(server.url, "after")
    await sock.close()


async def _own_room(http: httpx.AsyncClient, token: str) -> str:
    response = await http.post(
        "/api/v1/rooms",
        json={"kind": "group", "name": "mine", "members": []},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    return str(response.json()["id"])
