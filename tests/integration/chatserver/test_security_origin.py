"""Issue #11: allowed WebSocket Origins are configurable, and the `/ws?token=` fallback never
puts the token in the server's logs."""

from __future__ import annotations

import pytest
from hypersend_client import TransportError

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import (
    connect_user,
    metric,
    open_socket,
    register,
)

pytestmark = pytest.mark.integration


async def test_only_allowed_origins_open_a_socket(chat_server_factory: ChatServerFactory) -> None:
    server = chat_server_factory.start(
        ws_allowed_origins="https://chat.example.com, http://localhost:3000"
    )
    user = await register(server.url)
    with pytest.raises(TransportError, match="HTTP 403"):
        await open_socket(server.ws_url, headers={"Origin": "https://evil.example"})
    assert await metric(server.url, "hypersend_websocket_opens_refused_total") == 1

    for origin in ("https://chat.example.com", "http://LOCALHOST:3000"):
        sock = await open_socket(server.ws_url, user.token, headers={"Origin": origin})
        await sock.until_type("ready")
        await sock.close()
    # Not a browser (no Origin at all): accepted.
    plain = await connect_user(server.ws_url, user)
    await plain.close()


async def test_any_origin_by_default(chat_server_factory: ChatServerFactory) -> None:
    server = chat_server_factory.start()
    user = await register(server.url)
    sock = await open_socket(
        server.ws_url, user.token, headers={"Origin": "https://anywhere.example"}
    )
    await sock.until_type("ready")
    await sock.close()


async def test_query_token_never_reaches_the_logs(chat_server_factory: ChatServerFactory) -> None:
    server = chat_server_factory.start(log_level="debug")
    user = await register(server.url)
    sock = await open_socket(server.ws_url, user.token, query=True)
    await sock.send({"type": "ping"})
    await sock.until_type("ready")
    await sock.close()
    # A refused handshake is logged too (uvicorn logs its path with the query string).
    refused = await open_socket(server.ws_url, "forged.token.value", query=True)
    await refused.closed()
    logs = server.logs()
    assert "WebSocket /ws?token=[redacted]" in logs
    assert user.token not in logs
    assert "forged.token.value" not in logs
