"""Rooms and membership over real HTTP against a real chat server process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.chat import ChatUser, SharedChatServer, register_user

pytestmark = pytest.mark.integration


def api(server: SharedChatServer, path: str) -> str:
    return f"{server.url}/api/v1{path}"


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def create_group(server: SharedChatServer, owner: ChatUser, *members: ChatUser) -> dict[str, Any]:
    response = httpx.post(
        api(server, "/rooms"),
        json={"kind": "group", "name": "team", "members": [m.id for m in members]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def send(server: SharedChatServer, user: ChatUser, room_id: str, text: str) -> httpx.Response:
    return httpx.post(
        api(server, f"/rooms/{room_id}/messages"),
        json={"client_id": f"c-{text}", "text": text},
        headers=user.headers,
    )


def test_direct_room_is_unique_per_pair(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    first = httpx.post(
        api(shared_chat_server, "/rooms"),
        json={"kind": "direct", "members": [bob.id]},
        headers=alice.headers,
    )
    assert first.status_code == 201
    # From the other side, the same pair gets the same room.
    second = httpx.post(
        api(shared_chat_server, "/rooms"),
        json={"kind": "direct", "members": [alice.id]},
        headers=bob.headers,
    )
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert sorted(m["user_id"] for m in first.json()["members"]) == sorted([alice.id, bob.id])
    assert shared_chat_server.db["rooms"].count_documents({"_id": first.json()["id"]}) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "direct", "members": []}, 422, "invalid_direct_room"),
        ({"kind": "group", "members": []}, 422, "name_required"),
        ({"kind": "group", "name": "x", "members": ["no-such-user"]}, 422, "unknown_users"),
        ({"kind": "channel", "name": "x"}, 422, "invalid_request"),
        ({"kind": "group", "name": "x", "members": "notalist"}, 422, "invalid_request"),
        ({"kind": "group", "name": "x" * 101}, 422, "invalid_request"),
    ],
)
def test_create_room_rejects_bad_bodies(
    shared_chat_server: SharedChatServer, body: dict[str, Any], status: int, code: str
) -> None:
    user = register_user(shared_chat_server.url)
    response = httpx.post(api(shared_chat_server, "/rooms"), json=body, headers=user.headers)
    assert response.status_code == status
    assert error_code(response) == code
    assert shared_chat_server.db["members"].count_documents({"user_id": user.id}) == 0


def test_direct_room_with_self_only_is_refused(shared_chat_server: SharedChatServer) -> None:
    user = register_user(shared_chat_server.url)
    response = httpx.post(
        api(shared_chat_server, "/rooms"),
        json={"kind": "direct", "members": [user.id]},
        headers=user.headers,
    )
    assert response.status_code == 422
    assert error_code(response) == "invalid_direct_room"


def test_rooms_listed_newest_activity_first_with_last_message(
    shared_chat_server: SharedChatServer,
) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    older = create_group(shared_chat_server, alice, bob)
    newer = create_group(shared_chat_server, alice)
    assert send(shared_chat_server, alice, newer["id"], "first").status_code == 201
    assert send(shared_chat_server, bob, older["id"], "latest").status_code == 201
    listed = httpx.get(api(shared_chat_server, "/rooms"), headers=alice.headers)
    assert listed.status_code == 200
    rooms = listed.json()["rooms"]
    assert [r["id"] for r in rooms] == [older["id"], newer["id"]]
    assert rooms[0]["last_message"]["text"] == "latest"
    assert rooms[0]["last_seq"] == 1
    assert rooms[0]["unread"] == 1
    assert rooms[1]["last_message"]["text"] == "first"
    assert listed.headers["cache-control"] == "private, no-store"
    bobs = httpx.get(api(shared_chat_server, "/rooms"), headers=bob.headers).json()["rooms"]
    assert [r["id"] for r in bobs] == [older["id"]]


def test_non_member_cannot_see_or_use_a_room(shared_chat_server: SharedChatServer) -> None:
    owner = register_user(shared_chat_server.url)
    stranger = register_user(shared_chat_server.url)
    room = create_group(shared_chat_server, owner)
    assert send(shared_chat_server, owner, room["id"], "secret").status_code == 201
    requests = [
        ("GET", f"/rooms/{room['id']}", None),
        ("GET", f"/rooms/{room['id']}/members", None),
        ("GET", f"/rooms/{room['id']}/messages", None),
        ("POST", f"/rooms/{room['id']}/messages", {"client_id": "x1", "text": "let me in"}),
        ("PATCH", f"/rooms/{room['id']}/messages/1", {"text": "mine now"}),
        ("DELETE", f"/rooms/{room['id']}/messages/1", None),
        ("POST", f"/rooms/{room['id']}/messages/1/reactions", {"emoji": "x"}),
        ("POST", f"/rooms/{room['id']}/read", {"seq": 1}),
        ("POST", f"/rooms/{room['id']}/members", {"user_id": stranger.id}),
        ("POST", f"/rooms/{room['id']}/leave", None),
    ]
    for method, path, body in requests:
        response = httpx.request(
            method, api(shared_chat_server, path), json=body, headers=stranger.headers
        )
        assert response.status_code == 404, (method, path, response.text)
        assert error_code(response) == "room_not_found"
    # Same answer as a room that does not exist: existence does not leak.
    missing = httpx.get(api(shared_chat_server, "/rooms/doesnotexist"), headers=stranger.headers)
    assert missing.status_code == 404
    assert (
        missing.json()
        == httpx.get(
            api(shared_chat_server, f"/rooms/{room['id']}"), headers=stranger.headers
        ).json()
    )
    stored = list(shared_chat_server.db["messages"].find({"room_id": room["id"]}))
    assert [(m["seq"], m["text"], m["deleted"]) for m in stored] == [(1, "secret", False)]
    assert shared_chat_server.db["members"].count_documents({"user_id": stranger.id}) == 0
    assert shared_chat_server.db["reactions"].count_documents({"room_id": room["id"]}) == 0


def test_roles_add_remove_and_leave(shared_chat_server: SharedChatServer) -> None:
    owner, admin, member, newcomer = (register_user(shared_chat_server.url) for _ in range(4))
    room = create_group(shared_chat_server, owner, admin, member)
    rid = room["id"]

    promote = httpx.patch(
        api(shared_chat_server, f"/rooms/{rid}/members/{admin.id}"),
        json={"role": "admin"},
        headers=owner.headers,
    )
    assert promote.status_code == 200
    assert promote.json()["role"] == "admin"

    # A plain member can neither add nor remove.
    refused = httpx.post(
        api(shared_chat_server, f"/rooms/{rid}/members"),
        json={"user_id": newcomer.id},
        headers=member.headers,
    )
    assert refused.status_code == 403
    assert error_code(refused) == "forbidden"
    # An admin adds a member (201), adding again is a no-op (200), but cannot add admins.
    added = httpx.post(
        api(shared_chat_server, f"/rooms/{rid}/members"),
        json={"user_id": newcomer.id},
        headers=admin.headers,
    )
    assert added.status_code == 201
    assert added.json()["role"] == "member"
    again = httpx.post(
        api(shared_chat_server, f"/rooms/{rid}/members"),
        json={"user_id": newcomer.id},
        headers=admin.headers,
    )
    assert again.status_code == 200
    admin_add = httpx.post(
        api(shared_chat_server, f"/rooms/{rid}/members"),
        json={"user_id": newcomer.id, "role": "admin"},
        headers=admin.headers,
    )
    assert admin_add.status_code == 403
    # The newcomer now sees the room and its history.
    assert httpx.get(api(shared_chat_server, f"/rooms/{rid}"), headers=newcomer.headers).is_success

    # An admin cannot remove the owner; the owner removes the admin.
    no = httpx.delete(
        api(shared_chat_server, f"/rooms/{rid}/members/{owner.id}"), headers=admin.headers
    )
    assert no.status_code == 403
    gone = httpx.delete(
        api(shared_chat_server, f"/rooms/{rid}/members/{admin.id}"), headers=owner.headers
    )
    assert gone.status_code == 204
    after = httpx.get(api(shared_chat_server, f"/rooms/{rid}"), headers=admin.headers)
    assert after.status_code == 404

    # The owner leaves: the longest-standing remaining member becomes owner.
    left = httpx.post(api(shared_chat_server, f"/rooms/{rid}/leave"), headers=owner.headers)
    assert left.status_code == 204
    members = httpx.get(
        api(shared_chat_server, f"/rooms/{rid}/members"), headers=member.headers
    ).json()["members"]
    roles = {m["user_id"]: m["role"] for m in members}
    assert roles == {member.id: "owner", newcomer.id: "member"}


def test_direct_room_members_are_fixed(shared_chat_server: SharedChatServer) -> None:
    alice, bob, carol = (register_user(shared_chat_server.url) for _ in range(3))
    room = httpx.post(
        api(shared_chat_server, "/rooms"),
        json={"kind": "direct", "members": [bob.id]},
        headers=alice.headers,
    ).json()
    add = httpx.post(
        api(shared_chat_server, f"/rooms/{room['id']}/members"),
        json={"user_id": carol.id},
        headers=alice.headers,
    )
    assert add.status_code == 409
    assert error_code(add) == "direct_room"
    leave = httpx.post(api(shared_chat_server, f"/rooms/{room['id']}/leave"), headers=bob.headers)
    assert leave.status_code == 409


def test_remove_unknown_member_is_404(shared_chat_server: SharedChatServer) -> None:
    owner = register_user(shared_chat_server.url)
    room = create_group(shared_chat_server, owner)
    response = httpx.delete(
        api(shared_chat_server, f"/rooms/{room['id']}/members/nobody"), headers=owner.headers
    )
    assert response.status_code == 404
    assert error_code(response) == "member_not_found"
