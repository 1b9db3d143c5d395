"""Issue #11, sockets follow the token: a warning before the access token expires, in-band
re-authentication with a fresh token, otherwise close 4401; logout and a replayed refresh token
close the login's sockets on every server (across processes through Redis)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import (
    Account,
    Client,
    connect_user,
    open_socket,
)

pytestmark = pytest.mark.integration

PASSWORD = "correct horse 1"
# Short tokens, warned 2 s before they expire (the hub checks once a second).
SHORT = {"access_token_ttl_seconds": 5, "ws_token_warning_seconds": 2}


async def _register(url: str) -> tuple[Account, dict[str, Any]]:
    username = f"t{secrets.token_hex(5)}"
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as http:
        response = await http.post(
            "/api/v1/auth/register", json={"username": username, "password": PASSWORD}
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
    return Account(id=body["user"]["id"], username=username, token=body["access_token"]), body


async def _call(url: str, path: str, body: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=20) as http:
        return await http.post(f"/api/v1{path}", json=body)


async def _still_open(client: Client) -> None:
    await client.send({"type": "ping"})
    await client.until_type("pong")


async def test_expiring_token_is_warned_then_the_socket_closes_4401(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(**SHORT)
    user, _ = await _register(server.url)
    sock = await connect_user(server.ws_url, user)
    assert sock.ready is not None
    expires_at = sock.ready["expires_at"]
    warning = await sock.until_type("token_expiring", wait=20)
    assert warning["expires_at"] == expires_at
    assert 0 <= warning["expires_in"] <= 2
    code, reason = await sock.closed(wait=20)
    assert code == 4401
    assert reason == "token expired"
    assert time.time() >= expires_at - 1
    expired = [f for f in sock.frames if f.get("type") == "error"]
    assert expired[-1]["code"] == "unauthorized"


async def test_in_band_auth_keeps_the_socket_past_the_first_expiry(
    chat_server_factory: ChatServerFactory,
) -> None:
    server = chat_server_factory.start(**SHORT)
    user, body = await _register(server.url)
    other, _ = await _register(server.url)
    sock = await connect_user(server.ws_url, user)
    assert sock.ready is not None
    first_expiry = sock.ready["expires_at"]
    await sock.until_type("token_expiring", wait=20)

    # Refused, and the socket stays on its token: garbage, and another user's token.
    await sock.send({"type": "auth", "token": "not-a-token"})
    refused = await sock.until(lambda f: f.get("type") == "error")
    assert refused["code"] == "unauthorized"
    await sock.send({"type": "auth", "token": other.token})
    refused = await sock.until(lambda f: f.get("type") == "error")
    assert refused["message"] == "the token is another user's"

    fresh = await _call(server.url, "/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert fresh.status_code == 200
    await sock.send({"type": "auth", "token": fresh.json()["access_token"]})
    renewed = await sock.until_type("reauthenticated")
    assert renewed["expires_at"] >= first_expiry
    # The next warning is about the new token, and it comes after the first token expired.
    second = await sock.until_type("token_expiring", wait=20)
    assert second["expires_at"] == renewed["expires_at"]
    assert time.time() > first_expiry
    await _still_open(sock)
    await sock.close()


async def test_logout_closes_the_logins_sockets_on_every_server(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    user, body = await _register(a.url)
    on_a = await connect_user(a.ws_url, user)
    on_b = await connect_user(b.ws_url, user)
    # Another login of the same user (a second device) is not logged out.
    login = await _call(b.url, "/auth/login", {"username": user.username, "password": PASSWORD})
    assert login.status_code == 200
    second_device = Account(user.id, user.username, login.json()["access_token"])
    other_device = await connect_user(b.ws_url, second_device)

    logout = await _call(a.url, "/auth/logout", {"refresh_token": body["refresh_token"]})
    assert logout.status_code == 204
    for sock in (on_a, on_b):
        code, reason = await sock.closed(wait=20)
        assert code == 4401
        assert reason is not None
        assert "revoked" in reason
    await _still_open(other_device)

    # The logged-out login's access token, though unexpired, opens no socket either.
    again = await open_socket(b.ws_url, user.token)
    assert (await again.closed(wait=20))[0] == 4401
    assert not [f for f in again.frames if f.get("type") == "ready"]
    await other_device.close()


async def test_replayed_refresh_token_closes_the_logins_sockets(
    chat_server_factory: ChatServerFactory,
) -> None:
    a, b = chat_server_factory.start_many(2)
    user, body = await _register(a.url)
    sock = await connect_user(b.ws_url, user)
    first = await _call(a.url, "/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert first.status_code == 200
    replayed = await _call(a.url, "/auth/refresh", {"refresh_token": body["refresh_token"]})
    assert replayed.json()["error"]["code"] == "refresh_token_reused"
    code, _ = await sock.closed(wait=20)
    assert code == 4401
