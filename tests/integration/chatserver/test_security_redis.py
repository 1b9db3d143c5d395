"""Issue #11: the in-cluster Redis as the operator renders it (its ACL file and arguments, from
the builders) run by a real redis-server: nobody gets in without a password, the chat user only
reaches its own commands, keys and channels, and a chat server works through it without a
single command refused (Redis's ACL LOG stays empty)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from hypersend_devenv.datastores import free_port
from hypersend_operator.api import HypersendClusterSpec
from hypersend_operator.builders import BuildContext, GeneratedSecrets, build_all

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import connect_user, create_group, register

pytestmark = pytest.mark.integration

# The test's own inspector (ACL LOG); not part of what the operator renders.
ADMIN = "test-admin"
ADMIN_PASSWORD = secrets.token_urlsafe(16)


def _run(client: redis.Redis, *command: str) -> Any:
    """One raw command (redis-py leaves execute_command untyped)."""
    return client.execute_command(*command)  # type: ignore[no-untyped-call]


class RenderedRedis:
    """redis-server started with the Deployment's arguments and the Secret's ACL file."""

    def __init__(self, tmp: Path) -> None:
        self.password = secrets.token_urlsafe(32)
        ctx = BuildContext(
            name="demo",
            namespace="team-a",
            uid="u-1",
            generation=1,
            spec=HypersendClusterSpec.model_validate({"chat": {"image": "chat:1"}}),
            secrets=GeneratedSecrets(
                jwt_keys="k" * 43,
                mongo_root_password="p",
                mongo_app_password="a",
                redis_password=self.password,
            ),
        )
        manifests = build_all(ctx)
        secret = next(m for m in manifests if m["metadata"]["name"] == "demo-redis-credentials")
        acl = base64.b64decode(secret["data"]["users.acl"]).decode()
        self.acl = acl
        deployment = next(
            m
            for m in manifests
            if m["kind"] == "Deployment" and m["metadata"]["name"] == "demo-redis"
        )
        args = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        acl_file = tmp / "users.acl"
        acl_file.write_text(acl + f"user {ADMIN} on >{ADMIN_PASSWORD} ~* &* +@all\n")
        self.port = free_port()
        args[args.index("--port") + 1] = str(self.port)
        args[args.index("--aclfile") + 1] = str(acl_file)
        self.process = subprocess.Popen(
            ["redis-server", *args, "--bind", "127.0.0.1", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.admin = redis.Redis(port=self.port, username=ADMIN, password=ADMIN_PASSWORD)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.admin.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def chat_url(self) -> str:
        return f"redis://hypersend-chat:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.admin.close()
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def rendered_redis(tmp_path: Path) -> Iterator[RenderedRedis]:
    server = RenderedRedis(tmp_path)
    yield server
    server.close()


def test_nobody_gets_in_without_the_password(rendered_redis: RenderedRedis) -> None:
    anonymous = redis.Redis(port=rendered_redis.port)
    for command in (("PING",), ("PUBLISH", "hypersend:room:r1", "x"), ("KEYS", "*")):
        with pytest.raises(redis.AuthenticationError):
            _run(anonymous, *command)
    anonymous.close()
    wrong = redis.Redis(port=rendered_redis.port, username="hypersend-chat", password="guess")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    assert rendered_redis.admin.config_get("protected-mode") == {"protected-mode": "yes"}
    assert rendered_redis.password not in rendered_redis.acl


def test_the_chat_user_reaches_only_its_commands_keys_and_channels(
    rendered_redis: RenderedRedis,
) -> None:
    chat = redis.Redis.from_url(rendered_redis.chat_url())
    assert chat.ping()
    assert chat.zadd("hypersend:presence:u1", {"c1": 1}) == 1
    refused = [
        ("GET", "hypersend:presence:u1"),  # a command it does not use
        ("ZADD", "other:presence:u1", "1", "c1"),  # a key outside its prefix
        ("PUBLISH", "other:room:r1", "x"),  # a channel outside its prefix
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("KEYS", "*"),
        ("ACL", "LIST"),
    ]
    for command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            _run(chat, *command)
    # SUBSCRIBE too is refused outside the prefix (answered like a command on RESP2).
    with pytest.raises(redis.exceptions.NoPermissionError):
        _run(chat, "SUBSCRIBE", "other:room:r1")
    chat.close()


async def test_a_chat_server_works_through_it_without_a_refused_command(
    rendered_redis: RenderedRedis, mongo_url: str, mongo_db_name: str
) -> None:
    factory = ChatServerFactory(
        rendered_redis.chat_url(), mongo_url, mongo_db_name, redis_prefix="hypersend:"
    )
    try:
        a, b = factory.start_many(2)
        _run(rendered_redis.admin, "ACL", "LOG", "RESET")
        alice, bob = await register(a.url), await register(b.url)
        room = await create_group(a.url, alice, [bob])
        on_a = await connect_user(a.ws_url, alice)
        on_b = await connect_user(b.ws_url, bob)
        # Fan-out between the two processes, the rate limit and presence scripts, typing.
        ack = await on_a.send_message(room, "through the ACL")
        assert ack["type"] == "ack", ack
        got = await on_b.until(lambda f: f.get("type") == "message" and f["room_id"] == room)
        assert got["message"]["text"] == "through the ACL"
        await on_b.send({"type": "typing", "room_id": room})
        await on_a.until(lambda f: f.get("type") == "typing")
        async with httpx.AsyncClient(base_url=a.url, trust_env=False, timeout=20) as http:
            health = (await http.get("/readyz")).json()
        assert health["redis"] == {"commands": "ok", "pubsub": "ok"}
        await on_a.close()
        await on_b.close()
        log = _run(rendered_redis.admin, "ACL", "LOG")
        assert log == [], json.dumps(log, default=str)[:2000]
    finally:
        factory.close()
