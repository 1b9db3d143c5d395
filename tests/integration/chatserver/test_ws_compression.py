"""HYPERSEND_WS_COMPRESSION: permessage-deflate refused (off, the default) or negotiated without
context takeover and with small windows (on), whatever the client offers (issue #16)."""

from __future__ import annotations

import pytest

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import (
    Client,
    connect_user,
    create_group,
    register,
)

pytestmark = pytest.mark.integration


def _negotiated(client: Client) -> str | None:
    response = client.ws._ws.response
    assert response is not None
    return response.headers.get("Sec-WebSocket-Extensions")


@pytest.mark.parametrize(
    ("setting", "negotiated"),
    [
        ({}, None),
        ({"ws_compression": "off"}, None),
        (
            {"ws_compression": "on"},
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=10",
        ),
    ],
)
async def test_compression_follows_the_setting_and_messages_flow(
    chat_server_factory: ChatServerFactory, setting: dict[str, str], negotiated: str | None
) -> None:
    server = chat_server_factory.start(**setting)
    alice, bob = await register(server.url), await register(server.url)
    room = await create_group(server.url, alice, [bob])
    sender = await connect_user(server.ws_url, alice)  # the client offers permessage-deflate
    receiver = await connect_user(server.ws_url, bob)
    assert _negotiated(sender) == negotiated
    text = "compressible " * 200
    for i in range(3):  # several messages: no context is carried from one to the next
        ack = await sender.send_message(room, f"{i} {text}")
        assert ack["type"] == "ack"
        frame = await receiver.until_type("message")
        assert frame["message"]["text"] == f"{i} {text}"
