"""Accounts over real HTTP against a real chat server process (real Redis and FerretDB)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.fixtures.chat import ChatServerFactory, SharedChatServer, register_user

pytestmark = pytest.mark.integration


def api(server: SharedChatServer, path: str) -> str:
    return f"{server.url}/api/v1{path}"


def error_code(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["error"]["code"])


def test_register_login_me(shared_chat_server: SharedChatServer) -> None:
    user = register_user(shared_chat_server.url)
    me = httpx.get(api(shared_chat_server, "/users/me"), headers=user.headers)
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    assert me.json()["username"] == user.username
    assert "password_hash" not in me.json()
    assert me.headers["cache-control"] == "private, no-store"

    login = httpx.post(
        api(shared_chat_server, "/auth/login"),
        json={"username": user.username.upper(), "password": user.password},
        timeout=30,
    )
    assert login.status_code == 200
    assert login.json()["user"]["id"] == user.id
    assert login.json()["token_type"] == "bearer"
    stored = shared_chat_server.db["users"].find_one({"_id": user.id})
    assert stored is not None
    assert stored["password_hash"].startswith("$argon2id$")


def test_duplicate_username_is_409(shared_chat_server: SharedChatServer) -> None:
    user = register_user(shared_chat_server.url)
    again = httpx.post(
        api(shared_chat_server, "/auth/register"),
        json={"username": user.username, "password": "another-password"},
        timeout=30,
    )
    assert again.status_code == 409
    assert error_code(again) == "username_taken"
    assert shared_chat_server.db["users"].count_documents({"username": user.username}) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": "long-enough"}, "username"),
        ({"username": "has space", "password": "long-enough"}, "username"),
        ({"username": "valid_name", "password": "short"}, "password"),
        ({"username": "valid_name"}, "password"),
        ({"username": "valid_name", "password": "long-enough", "admin": True}, "admin"),
        ({"username": 42, "password": "long-enough"}, "username"),
    ],
)
def test_register_rejects_invalid_bodies(
    shared_chat_server: SharedChatServer, body: dict[str, Any], field: str
) -> None:
    before = shared_chat_server.db["users"].count_documents({})
    response = httpx.post(api(shared_chat_server, "/auth/register"), json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["message"]
    assert shared_chat_server.db["users"].count_documents({}) == before


def test_malformed_json_is_422(shared_chat_server: SharedChatServer) -> None:
    response = httpx.post(
        api(shared_chat_server, "/auth/register"),
        content=b'{"username": "x",',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert error_code(response) == "invalid_request"
    assert "JSON" in response.json()["error"]["message"]


def test_wrong_password_and_unknown_user_look_the_same(
    shared_chat_server: SharedChatServer,
) -> None:
    user = register_user(shared_chat_server.url)
    wrong = httpx.post(
        api(shared_chat_server, "/auth/login"),
        json={"username": user.username, "password": "not-the-password"},
        timeout=30,
    )
    unknown = httpx.post(
        api(shared_chat_server, "/auth/login"),
        json={"username": "nobody_" + user.username, "password": "not-the-password"},
        timeout=30,
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert error_code(wrong) == "invalid_credentials"


def test_refresh_rotates_and_reuse_revokes_the_family(
    shared_chat_server: SharedChatServer,
) -> None:
    user = register_user(shared_chat_server.url)
    first = httpx.post(
        api(shared_chat_server, "/auth/refresh"), json={"refresh_token": user.refresh_token}
    )
    assert first.status_code == 200
    rotated = first.json()["refresh_token"]
    assert rotated != user.refresh_token
    me = httpx.get(
        api(shared_chat_server, "/users/me"),
        headers={"Authorization": f"Bearer {first.json()['access_token']}"},
    )
    assert me.status_code == 200

    # The old token again: it leaked, so the whole family (incl. the rotated one) is revoked.
    replay = httpx.post(
        api(shared_chat_server, "/auth/refresh"), json={"refresh_token": user.refresh_token}
    )
    assert replay.status_code == 401
    assert error_code(replay) == "refresh_token_reused"
    after = httpx.post(api(shared_chat_server, "/auth/refresh"), json={"refresh_token": rotated})
    assert after.status_code == 401
    assert error_code(after) == "refresh_token_revoked"
    # Only hashes are stored.
    assert shared_chat_server.db["refresh_tokens"].count_documents({"_id": rotated}) == 0


def test_refresh_rejects_unknown_token(shared_chat_server: SharedChatServer) -> None:
    response = httpx.post(
        api(shared_chat_server, "/auth/refresh"), json={"refresh_token": "made-up"}
    )
    assert response.status_code == 401
    assert error_code(response) == "refresh_token_invalid"


def test_logout_revokes_the_refresh_token(shared_chat_server: SharedChatServer) -> None:
    user = register_user(shared_chat_server.url)
    out = httpx.post(
        api(shared_chat_server, "/auth/logout"), json={"refresh_token": user.refresh_token}
    )
    assert out.status_code == 204
    again = httpx.post(
        api(shared_chat_server, "/auth/refresh"), json={"refresh_token": user.refresh_token}
    )
    assert again.status_code == 401
    assert error_code(again) == "refresh_token_revoked"


def _token(secret: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "someone", "typ": "access", "iat": now, "exp": now + 60, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_token"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    ],
)
def test_missing_or_malformed_tokens_are_401(
    shared_chat_server: SharedChatServer, headers: dict[str, str], code: str
) -> None:
    response = httpx.get(api(shared_chat_server, "/users/me"), headers=headers)
    assert response.status_code == 401
    assert error_code(response) == code
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["cache-control"] == "private, no-store"


def test_expired_forged_and_wrong_type_tokens_are_401(
    shared_chat_server: SharedChatServer,
) -> None:
    user = register_user(shared_chat_server.url)
    secret = shared_chat_server.jwt_secret
    past = int(time.time()) - 3600
    cases = {
        "expired_token": _token(secret, sub=user.id, iat=past - 60, exp=past),
        "invalid_token": _token("x" * 40, sub=user.id),  # signed with another key
    }
    for code, token in cases.items():
        response = httpx.get(
            api(shared_chat_server, "/users/me"), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, code
        assert error_code(response) == code
    wrong_type = _token(secret, sub=user.id, typ="refresh")
    response = httpx.get(
        api(shared_chat_server, "/users/me"), headers={"Authorization": f"Bearer {wrong_type}"}
    )
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"
    unsigned = jwt.encode({"sub": user.id, "typ": "access"}, key="", algorithm="none")
    response = httpx.get(
        api(shared_chat_server, "/users/me"), headers={"Authorization": f"Bearer {unsigned}"}
    )
    assert response.status_code == 401
    assert error_code(response) == "invalid_token"


def test_user_search(shared_chat_server: SharedChatServer) -> None:
    searcher = register_user(shared_chat_server.url)
    target = register_user(shared_chat_server.url)
    found = httpx.get(
        api(shared_chat_server, "/users"),
        params={"query": target.username[:8]},
        headers=searcher.headers,
    )
    assert found.status_code == 200
    assert target.id in [u["id"] for u in found.json()["users"]]
    missing = httpx.get(api(shared_chat_server, "/users"), headers=searcher.headers)
    assert missing.status_code == 422
    assert "query" in missing.json()["error"]["message"]
    # Regex metacharacters are matched literally, not as a pattern.
    literal = httpx.get(
        api(shared_chat_server, "/users"), params={"query": ".*"}, headers=searcher.headers
    )
    assert literal.status_code == 200
    assert literal.json()["users"] == []


def test_unknown_route_has_the_error_format(shared_chat_server: SharedChatServer) -> None:
    response = httpx.get(api(shared_chat_server, "/nope"))
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_tokens_expire_and_expired_refresh_tokens_are_refused(
    chat_server_factory: ChatServerFactory,
) -> None:
    # Polled, not slept: on a loaded machine the first request may already come after the
    # one-second lifetime. The error codes tell an expired token from an invalid one.
    server = chat_server_factory.start(access_token_ttl_seconds=1, refresh_token_ttl_seconds=2)
    user = register_user(server.url)
    me = f"{server.url}/api/v1/users/me"
    expired = _poll(lambda: httpx.get(me, headers=user.headers), lambda r: r.status_code != 200)
    assert expired.status_code == 401
    assert error_code(expired) == "expired_token"
    # The refresh token is opaque and a refresh that succeeds rotates it, so it is tried once,
    # after its expiry: issued with the access token, whose `iat` is the issue time truncated
    # to the second, so it expires before iat + 1 + the 2 s lifetime.
    issued_at = jwt.decode(user.access_token, options={"verify_signature": False})["iat"]
    while time.time() < issued_at + 1 + 2 + 0.2:
        time.sleep(0.1)
    refresh = httpx.post(
        f"{server.url}/api/v1/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert refresh.status_code == 401
    assert error_code(refresh) == "refresh_token_expired"


def _poll(
    request: Callable[[], httpx.Response],
    done: Callable[[httpx.Response], bool],
    within: float = 30.0,
) -> httpx.Response:
    deadline = time.monotonic() + within
    while not done(response := request()):
        assert time.monotonic() < deadline, f"still {response.status_code}: {response.text}"
        time.sleep(0.2)
    return response


def test_rate_limit_is_shared_by_processes(chat_server_factory: ChatServerFactory) -> None:
    first, second = chat_server_factory.start_many(2, rate_limit_per_minute=6)
    user = register_user(first.url)
    statuses = [
        httpx.get(f"{server.url}/api/v1/users/me", headers=user.headers).status_code
        for server in (first, second) * 4
    ]
    assert statuses == [200] * 6 + [429] * 2
