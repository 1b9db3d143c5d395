"""REST changes reach WebSocket members after MongoDB stored them (two server processes: the
REST call goes to one, the socket is on the other)."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.chat import ChatServerFactory
from tests.integration.chatserver.realtime_client import (
    Account,
    connect_user,
    create_group,
    register,
)

pytestmark = pytest.mark.integration


def headers(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def test_rest_changes_are_published_to_sockets_on_another_process(
    chat_server_factory: ChatServerFactory,
) -> None:
    rest, live = chat_server_factory.start_many(2)
    alice = await register(rest.url, "alice")
    bob = await register(rest.url, "bob")
    carol = await register(rest.url, "carol")
    room = await create_group(rest.url, alice, [bob])
    bob_ws = await connect_user(live.ws_url, bob)
    carol_ws = await connect_user(live.ws_url, carol)
    api = f"{rest.url}/api/v1/rooms/{room}"
    async with httpx.AsyncClient(timeout=20, trust_env=False) as http:
        sent = await http.post(
            f"{api}/messages", json={"client_id": "a1", "text": "hi bob"}, headers=headers(alice)
        )
        assert sent.status_code == 201
        frame = await bob_ws.until_type("message")
        assert frame["room_id"] == room
        assert frame["seq"] == 1
        assert frame["message"]["text"] == "hi bob"

        # An idempotent retry is not published twice.
        retry = await http.post(
            f"{api}/messages", json={"client_id": "a1", "text": "hi bob"}, headers=headers(alice)
        )
        assert retry.status_code == 200

        edited = await http.patch(
            f"{api}/messages/1", json={"text": "hi Bob"}, headers=headers(alice)
        )
        assert edited.status_code == 200
        frame = await bob_ws.until_type("message_edited")
        assert frame["message"]["text"] == "hi Bob"

        reacted = await http.post(
            f"{api}/messages/1/reactions", json={"emoji": "wave"}, headers=headers(alice)
        )
        assert reacted.status_code == 200
        frame = await bob_ws.until_type("reaction")
        assert frame["message"]["reactions"] == {"wave": [alice.id]}

        read = await http.post(f"{api}/read", json={"seq": 1}, headers=headers(alice))
        assert read.status_code == 204
        frame = await bob_ws.until_type("read")
        assert (frame["user_id"], frame["seq"]) == (alice.id, 1)

        deleted = await http.delete(f"{api}/messages/1", headers=headers(alice))
        assert deleted.status_code == 200
        frame = await bob_ws.until_type("message_deleted")
        assert frame["message"]["deleted"] is True
        assert frame["message"]["text"] == ""

        # Carol is added: her socket learns about the room and then gets its messages.
        added = await http.post(
            f"{api}/members", json={"user_id": carol.id}, headers=headers(alice)
        )
        assert added.status_code == 201
        frame = await carol_ws.until_type("room_added")
        assert frame["room_id"] == room
        second = await http.post(
            f"{api}/messages", json={"client_id": "a2", "text": "welcome"}, headers=headers(alice)
        )
        assert second.status_code == 201
        frame = await carol_ws.until_type("message")
        assert (frame["seq"], frame["message"]["text"]) == (2, "welcome")

        removed = await http.delete(f"{api}/members/{carol.id}", headers=headers(alice))
        assert removed.status_code == 204
        frame = await carol_ws.until_type("room_removed")
        assert frame["room_id"] == room

    await bob_ws.until(lambda f: f.get("type") == "message" and f.get("seq") == 2)
    messages = [f for f in bob_ws.frames if f.get("type") == "message"]
    assert [f["seq"] for f in messages] == [1, 2]  # the retry published nothing
    await bob_ws.close()
    await carol_ws.close()
