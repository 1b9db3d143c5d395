"""Issue #11, JWT key rotation with real chat server processes: the stages of a rotation the
operator plans (operator/hypersend_operator/builders/jwtring.py), each a server started with that
stage's HYPERSEND_JWT_KEYS, all on one database. Nobody is logged out: a token from before the
rotation works on a pod that already signs with the new key, and refreshing there moves the user
to the new key; the old key's tokens stop only at its verifyUntil."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess, register_user

pytestmark = pytest.mark.integration

K1 = {"kid": "k1", "secret": "1" * 43}
K2 = {"kid": "k2", "secret": "2" * 43}


def server_with_ring(factory: ChatServerFactory, *keys: dict[str, Any]) -> ChatServerProcess:
    env = {k: v for k, v in factory.base_env.items() if k != "HYPERSEND_JWT_SECRET"}
    env["HYPERSEND_JWT_KEYS"] = json.dumps({"keys": list(keys)})
    server = ChatServerProcess(env, name=f"ring{len(factory.servers)}")
    factory.servers.append(server)  # stopped with the factory's
    return server.start()


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def me(server: ChatServerProcess, token: str) -> int:
    response = httpx.get(
        f"{server.url}/api/v1/users/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
        trust_env=False,
    )
    return response.status_code


def refresh(server: ChatServerProcess, refresh_token: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/api/v1/auth/refresh",
        json={"refresh_token": refresh_token},
        timeout=20,
        trust_env=False,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_a_rotation_logs_nobody_out(chat_server_factory: ChatServerFactory) -> None:
    now = time.time()
    before = server_with_ring(chat_server_factory, K1)
    user = register_user(before.url)
    assert kid(user.access_token) == "k1"

    # During the rollout: pods know k2 but it does not sign yet, so the pods that have not
    # rolled yet accept every token the rolled ones issue.
    pending = server_with_ring(
        chat_server_factory,
        {**K1, "verifyUntil": now + 2000},
        {**K2, "signFrom": now + 600},
    )
    during = refresh(pending, user.refresh_token)
    assert kid(during["access_token"]) == "k1"
    assert me(before, during["access_token"]) == 200
    assert me(pending, user.access_token) == 200

    # After the activation delay: k2 signs; the old token still works, a refresh moves to k2.
    active = server_with_ring(
        chat_server_factory,
        {**K1, "verifyUntil": now + 2000},
        {**K2, "signFrom": now - 1},
    )
    assert me(active, user.access_token) == 200
    moved = refresh(active, during["refresh_token"])
    assert kid(moved["access_token"]) == "k2"
    assert me(active, moved["access_token"]) == 200
    # A pod that never learnt k2 would refuse it: why k2 waits for the rollout before signing.
    assert me(before, moved["access_token"]) == 401

    # After k1's verifyUntil (every k1 token has expired by then): k1 tokens are refused.
    retired = server_with_ring(
        chat_server_factory,
        {**K1, "verifyUntil": now - 1},
        {**K2, "signFrom": now - 1000},
    )
    assert me(retired, user.access_token) == 401
    assert me(retired, moved["access_token"]) == 200
