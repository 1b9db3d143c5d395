"""Issue #11, the API contract is exact: schemathesis (pinned in pyproject.toml) runs every one
of its checks against a real server and finds nothing; and the REST validation matches the
WebSocket's where the fuzzer found them apart."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.chat import ChatServerFactory, ChatServerProcess
from tests.integration.chatserver.realtime_client import (
    Account,
    connect_user,
    create_group,
    register,
)

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Examples per operation and phase: enough to find each finding of issue #11 again.
MAX_EXAMPLES = 30


@pytest.fixture
def api_server(chat_server_factory: ChatServerFactory) -> ChatServerProcess:
    # The fuzzer is one client sending thousands of requests.
    return chat_server_factory.start(rate_limit_per_minute=1_000_000)


async def test_schemathesis_finds_nothing(api_server: ChatServerProcess, tmp_path: Path) -> None:
    user = await register(api_server.url)
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{api_server.url}/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {user.token}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--no-color",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-30_000:]
    assert "No issues found" in report or " passed" in report, report[-5_000:]


async def _read(server: ChatServerProcess, account: Account, room: str, body: Any) -> int:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=20) as http:
        response = await http.post(
            f"/api/v1/rooms/{room}/read",
            content=body,
            headers={
                "Authorization": f"Bearer {account.token}",
                "Content-Type": "application/json",
            },
        )
    return response.status_code


async def test_read_marker_takes_only_json_integers(api_server: ChatServerProcess) -> None:
    user = await register(api_server.url)
    room = await create_group(api_server.url, user, [])
    for body in ('{"seq": false}', '{"seq": "2"}', '{"seq": 3.0}', '{"seq": true}'):
        assert await _read(api_server, user, room, body) == 422, body
    assert await _read(api_server, user, room, '{"seq": 0}') == 204


async def test_reaction_pattern_is_the_same_for_schema_and_server(
    api_server: ChatServerProcess,
) -> None:
    user = await register(api_server.url)
    room = await create_group(api_server.url, user, [])
    async with httpx.AsyncClient(base_url=api_server.url, trust_env=False, timeout=20) as http:
        headers = {"Authorization": f"Bearer {user.token}"}
        sent = await http.post(
            f"/api/v1/rooms/{room}/messages",
            json={"client_id": "c1", "text": "hi"},
            headers=headers,
        )
        assert sent.status_code == 201
        schema = (await http.get("/openapi.json")).json()
        pattern = schema["components"]["schemas"]["ReactionBody"]["properties"]["emoji"]["pattern"]
        assert "\\s" not in pattern
        # Whitespace to Python only (U+001C, U+0085), to ECMA-262 only (U+FEFF), to both.
        for emoji in ("a\x1c", "a\x85", "a\ufeff", "a\u00a0", "a b", "a\n"):
            refused = await http.post(
                f"/api/v1/rooms/{room}/messages/1/reactions", json={"emoji": emoji}, headers=headers
            )
            assert refused.status_code == 422, repr(emoji)
        accepted = await http.post(
            f"/api/v1/rooms/{room}/messages/1/reactions", json={"emoji": "👍"}, headers=headers
        )
        assert accepted.status_code == 200


async def test_openapi_declares_bearer_auth_and_every_error(api_server: ChatServerProcess) -> None:
    async with httpx.AsyncClient(base_url=api_server.url, trust_env=False, timeout=20) as http:
        schema = (await http.get("/openapi.json")).json()
        options = await http.options("/api/v1/rooms")
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an access token from /auth/register, /login or /refresh",
    }
    create = schema["paths"]["/api/v1/rooms"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    assert {"200", "201", "401", "413", "422", "429", "503"} <= set(create["responses"])
    assert set(schema["paths"]["/api/v1/auth/register"]["post"]["responses"]) >= {"201", "409"}
    assert options.status_code == 405
    assert options.headers["Allow"] == "GET, POST"


async def test_error_frames_refusing_a_send_name_it(api_server: ChatServerProcess) -> None:
    user = await register(api_server.url)
    room = await create_group(api_server.url, user, [])
    sock = await connect_user(api_server.ws_url, user)
    await sock.send({"type": "send", "room_id": room, "client_id": "blank", "text": "  "})
    await sock.send({"type": "send", "room_id": room, "client_id": "typed", "text": 7})
    await sock.send({"type": "send", "room_id": "nope", "client_id": "elsewhere", "text": "hi"})
    refused = {
        f["client_id"]: f
        for f in [await sock.until_type("error") for _ in range(3)]
        if "client_id" in f
    }
    assert refused["blank"]["code"] == "empty_message"
    assert refused["blank"]["room_id"] == room
    assert refused["typed"]["code"] == "invalid_frame"
    assert refused["typed"]["room_id"] == room
    assert refused["elsewhere"]["code"] == "not_member"
    assert refused["elsewhere"]["room_id"] == "nope"
    await sock.close()
