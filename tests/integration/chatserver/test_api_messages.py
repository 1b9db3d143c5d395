"""Messages over real HTTP against a real chat server process: seqs, idempotency, history,
edit/delete/reactions/read, size limits, rate limits, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fixtures.chat import (
    ChatServerFactory,
    ChatUser,
    SharedChatServer,
    register_user,
)

pytestmark = pytest.mark.integration

MAX_MESSAGE_BYTES = 16_384  # the default HYPERSEND_MAX_MESSAGE_BYTES


def api(server: SharedChatServer, path: str) -> str:
    return f"{server.url}/api/v1{path}"


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def group(server: SharedChatServer, owner: ChatUser, *members: ChatUser) -> str:
    response = httpx.post(
        api(server, "/rooms"),
        json={"kind": "group", "name": "room", "members": [m.id for m in members]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def send(
    server: SharedChatServer, user: ChatUser, room_id: str, text: str, client_id: str | None = None
) -> httpx.Response:
    return httpx.post(
        api(server, f"/rooms/{room_id}/messages"),
        json={"client_id": client_id or f"c-{abs(hash(text))}", "text": text},
        headers=user.headers,
    )


def history(
    server: SharedChatServer, user: ChatUser, room_id: str, **params: Any
) -> dict[str, Any]:
    response = httpx.get(
        api(server, f"/rooms/{room_id}/messages"), params=params, headers=user.headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_count(server: SharedChatServer, room_id: str) -> int:
    return server.db["messages"].count_documents({"room_id": room_id})


def test_send_assigns_seq_and_retry_is_idempotent(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice)
    first = send(shared_chat_server, alice, room, "hello", client_id="abc")
    assert first.status_code == 201
    message = first.json()
    assert message["seq"] == 1
    assert message["sender_id"] == alice.id
    assert message["text"] == "hello"
    assert first.headers["cache-control"] == "private, no-store"
    # The retry (same client_id) returns the stored message, not a second copy.
    retry = send(shared_chat_server, alice, room, "hello", client_id="abc")
    assert retry.status_code == 200
    assert retry.json() == message
    second = send(shared_chat_server, alice, room, "again", client_id="def")
    assert second.status_code == 201
    assert second.json()["seq"] == 2
    assert stored_count(shared_chat_server, room) == 2


def test_concurrent_sends_get_distinct_gap_free_seqs(
    shared_chat_server: SharedChatServer,
) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice, bob)

    def one(i: int) -> httpx.Response:
        user = alice if i % 2 else bob
        return send(shared_chat_server, user, room, f"m{i}", client_id=f"k{i}")

    # 20 concurrent sends plus 10 concurrent retries of the same client ids.
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(one, [*range(20), *range(10)]))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    by_client: dict[str, set[int]] = {}
    for r in responses:
        by_client.setdefault(r.json()["client_id"], set()).add(r.json()["seq"])
    assert all(len(seqs) == 1 for seqs in by_client.values()), by_client
    seqs = sorted(next(iter(s)) for s in by_client.values())
    assert seqs == list(range(1, 21))
    assert stored_count(shared_chat_server, room) == 20


def test_history_pages_by_seq(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice)
    for i in range(1, 8):
        assert send(shared_chat_server, alice, room, f"m{i}").status_code == 201
    newest = history(shared_chat_server, alice, room, limit=3)
    assert [m["seq"] for m in newest["messages"]] == [5, 6, 7]
    assert newest["has_more"] is True
    older = history(shared_chat_server, alice, room, before_seq=5, limit=3)
    assert [m["seq"] for m in older["messages"]] == [2, 3, 4]
    oldest = history(shared_chat_server, alice, room, before_seq=2, limit=3)
    assert [m["seq"] for m in oldest["messages"]] == [1]
    assert oldest["has_more"] is False
    after = history(shared_chat_server, alice, room, after_seq=4, limit=2)
    assert [m["seq"] for m in after["messages"]] == [5, 6]
    assert after["has_more"] is True
    tail = history(shared_chat_server, alice, room, after_seq=6)
    assert [m["text"] for m in tail["messages"]] == ["m7"]
    assert tail["has_more"] is False


@pytest.mark.parametrize(
    "params",
    [{"after_seq": 1, "before_seq": 5}, {"limit": 0}, {"limit": 1000}, {"after_seq": "x"}],
)
def test_history_rejects_bad_parameters(
    shared_chat_server: SharedChatServer, params: dict[str, Any]
) -> None:
    alice = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice)
    response = httpx.get(
        api(shared_chat_server, f"/rooms/{room}/messages"), params=params, headers=alice.headers
    )
    assert response.status_code == 422
    assert error_code(response) == "invalid_request"


def test_oversized_and_empty_messages_are_refused_and_not_stored(
    shared_chat_server: SharedChatServer,
) -> None:
    alice = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice)
    # Multi-byte text: the limit is on UTF-8 bytes, not characters.
    too_big = send(shared_chat_server, alice, room, "é" * (MAX_MESSAGE_BYTES // 2 + 1))
    assert too_big.status_code == 413
    assert error_code(too_big) == "message_too_large"
    assert str(MAX_MESSAGE_BYTES) in too_big.json()["error"]["message"]
    at_limit = send(shared_chat_server, alice, room, "a" * MAX_MESSAGE_BYTES)
    assert at_limit.status_code == 201
    empty = send(shared_chat_server, alice, room, "   ")
    assert empty.status_code == 422
    assert error_code(empty) == "empty_message"
    # A body far beyond any message is refused before it is parsed.
    huge = httpx.post(
        api(shared_chat_server, f"/rooms/{room}/messages"),
        content=b'{"client_id": "h", "text": "' + b"a" * 2_000_000 + b'"}',
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert huge.status_code == 413
    assert error_code(huge) == "request_too_large"

    # The same without a Content-Length (chunked) is capped while it is read.
    def chunks() -> Iterator[bytes]:
        yield b'{"client_id": "h2", "text": "'
        for _ in range(200):
            yield b"a" * 10_000
        yield b'"}'

    chunked = httpx.post(
        api(shared_chat_server, f"/rooms/{room}/messages"),
        content=chunks(),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert error_code(chunked) == "request_too_large"
    assert stored_count(shared_chat_server, room) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"text": "no client id"},
        {"client_id": "ok"},
        {"client_id": "", "text": "x"},
        {"client_id": "has space", "text": "x"},
        {"client_id": "ok", "text": 5},
        {"client_id": "ok", "text": "x", "seq": 99},
    ],
)
def test_send_rejects_invalid_bodies(
    shared_chat_server: SharedChatServer, body: dict[str, Any]
) -> None:
    alice = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice)
    response = httpx.post(
        api(shared_chat_server, f"/rooms/{room}/messages"), json=body, headers=alice.headers
    )
    assert response.status_code == 422
    assert error_code(response) == "invalid_request"
    assert stored_count(shared_chat_server, room) == 0


def test_edit_keeps_previous_text_and_only_sender_edits(
    shared_chat_server: SharedChatServer,
) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice, bob)
    assert send(shared_chat_server, alice, room, "v1").status_code == 201
    for text in ("v2", "v3"):
        edited = httpx.patch(
            api(shared_chat_server, f"/rooms/{room}/messages/1"),
            json={"text": text},
            headers=alice.headers,
        )
        assert edited.status_code == 200
    body = edited.json()
    assert body["text"] == "v3"
    assert [e["text"] for e in body["edits"]] == ["v1", "v2"]
    assert body["edited_at"] is not None
    not_mine = httpx.patch(
        api(shared_chat_server, f"/rooms/{room}/messages/1"),
        json={"text": "bob was here"},
        headers=bob.headers,
    )
    assert not_mine.status_code == 403
    assert error_code(not_mine) == "not_sender"
    missing = httpx.patch(
        api(shared_chat_server, f"/rooms/{room}/messages/42"),
        json={"text": "x"},
        headers=alice.headers,
    )
    assert missing.status_code == 404
    assert error_code(missing) == "message_not_found"
    assert history(shared_chat_server, bob, room)["messages"][0]["text"] == "v3"


def test_soft_delete(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice, bob)
    assert send(shared_chat_server, alice, room, "oops").status_code == 201
    assert send(shared_chat_server, bob, room, "bob's").status_code == 201
    # Bob (plain member) cannot delete Alice's message; Alice (owner) can delete Bob's.
    refused = httpx.delete(
        api(shared_chat_server, f"/rooms/{room}/messages/1"), headers=bob.headers
    )
    assert refused.status_code == 403
    deleted = httpx.delete(
        api(shared_chat_server, f"/rooms/{room}/messages/2"), headers=alice.headers
    )
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True
    assert deleted.json()["text"] == ""
    page = history(shared_chat_server, bob, room)["messages"]
    assert [(m["seq"], m["deleted"], m["text"]) for m in page] == [
        (1, False, "oops"),
        (2, True, ""),
    ]
    # Kept in MongoDB (soft delete), editing it is refused, deleting again is idempotent.
    doc = shared_chat_server.db["messages"].find_one({"room_id": room, "seq": 2})
    assert doc is not None
    assert doc["text"] == "bob's"
    edit = httpx.patch(
        api(shared_chat_server, f"/rooms/{room}/messages/2"),
        json={"text": "x"},
        headers=bob.headers,
    )
    assert edit.status_code == 409
    assert error_code(edit) == "message_deleted"
    again = httpx.delete(api(shared_chat_server, f"/rooms/{room}/messages/2"), headers=bob.headers)
    assert again.status_code == 200


def test_reactions(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice, bob)
    assert send(shared_chat_server, alice, room, "react to me").status_code == 201
    url = api(shared_chat_server, f"/rooms/{room}/messages/1/reactions")
    for user in (alice, bob, bob):
        response = httpx.post(url, json={"emoji": "👍"}, headers=user.headers)
        assert response.status_code == 200
    assert response.json()["reactions"] == {"👍": [alice.id, bob.id]}
    removed = httpx.delete(f"{url}/👍", headers=bob.headers)
    assert removed.status_code == 200
    assert removed.json()["reactions"] == {"👍": [alice.id]}
    assert history(shared_chat_server, bob, room)["messages"][0]["reactions"] == {"👍": [alice.id]}
    for bad in ("", "a.b", "$x", "x" * 33, "two words"):
        response = httpx.post(url, json={"emoji": bad}, headers=alice.headers)
        assert response.status_code == 422, bad
        assert error_code(response) == "invalid_request"
    missing = httpx.post(
        api(shared_chat_server, f"/rooms/{room}/messages/9/reactions"),
        json={"emoji": "x"},
        headers=alice.headers,
    )
    assert missing.status_code == 404
    assert error_code(missing) == "message_not_found"


def test_read_marker(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    bob = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice, bob)
    for i in range(3):
        assert send(shared_chat_server, alice, room, f"m{i}").status_code == 201
    url = api(shared_chat_server, f"/rooms/{room}/read")
    assert httpx.post(url, json={"seq": 2}, headers=bob.headers).status_code == 204
    # Never moves backwards.
    assert httpx.post(url, json={"seq": 1}, headers=bob.headers).status_code == 204
    rooms = httpx.get(api(shared_chat_server, "/rooms"), headers=bob.headers).json()["rooms"]
    assert (rooms[0]["last_read_seq"], rooms[0]["unread"]) == (2, 1)
    beyond = httpx.post(url, json={"seq": 4}, headers=bob.headers)
    assert beyond.status_code == 422
    assert error_code(beyond) == "invalid_seq"
    negative = httpx.post(url, json={"seq": -1}, headers=bob.headers)
    assert negative.status_code == 422


def test_rate_limit_gives_429_with_retry_after(chat_server_factory: ChatServerFactory) -> None:
    server = chat_server_factory.start(rate_limit_per_minute=5)
    user = register_user(server.url)
    statuses = []
    for _ in range(8):
        response = httpx.get(f"{server.url}/api/v1/users/me", headers=user.headers)
        statuses.append(response.status_code)
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429] * 3
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    # Other users are not affected.
    other = register_user(server.url)
    assert httpx.get(f"{server.url}/api/v1/users/me", headers=other.headers).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "hypersend_rate_limited_total 3.0" in metrics


def test_metrics_count_requests_by_route_template(shared_chat_server: SharedChatServer) -> None:
    alice = register_user(shared_chat_server.url)
    room = group(shared_chat_server, alice)
    assert send(shared_chat_server, alice, room, "count me").status_code == 201
    text = httpx.get(f"{shared_chat_server.url}/metrics").text
    assert "hypersend_websocket_connections 0.0" in text
    assert 'route="/api/v1/rooms/{room_id}/messages"' in text
    assert room not in text  # ids never become label values
    assert "hypersend_messages_received_total" in text
    assert "hypersend_http_request_duration_seconds_bucket" in text
