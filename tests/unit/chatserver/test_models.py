"""Wire forms and message validation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from chatserver.models import Edit, Message, Room, iso, message_text_error

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)


def message(**changes: object) -> Message:
    base: dict[str, object] = {
        "room_id": "r1",
        "seq": 7,
        "id": "r1:7",
        "sender_id": "u1",
        "client_id": "c1",
        "text": "hello",
        "created_at": T0,
    }
    return Message.model_validate({**base, **changes})


def test_iso_is_utc_with_milliseconds_and_z() -> None:
    assert iso(T0) == "2026-01-02T03:04:05.678Z"
    plus_two = timezone(timedelta(hours=2))
    assert iso(datetime(2026, 1, 2, 5, 4, 5, tzinfo=plus_two)) == "2026-01-02T03:04:05.000Z"
    assert iso(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"  # naive = UTC
    assert iso(None) is None


def test_message_wire_form() -> None:
    wire = message(reactions={"+1": ["u2"], "empty": []}).to_wire()
    assert wire == {
        "id": "r1:7",
        "room_id": "r1",
        "seq": 7,
        "sender_id": "u1",
        "client_id": "c1",
        "text": "hello",
        "created_at": "2026-01-02T03:04:05.678Z",
        "edited_at": None,
        "deleted": False,
        "deleted_at": None,
        "edits": [],
        "reactions": {"+1": ["u2"]},
    }


def test_deleted_message_hides_text_and_history() -> None:
    wire = message(
        deleted=True,
        deleted_at=T0,
        edits=[Edit(text="old", edited_at=T0)],
    ).to_wire()
    assert wire["text"] == ""
    assert wire["edits"] == []
    assert wire["deleted"] is True


def test_room_wire_includes_last_message() -> None:
    room = Room(
        id="r1",
        kind="group",
        name="team",
        created_by="u1",
        created_at=T0,
        last_activity_at=T0,
        last_seq=7,
        last_message=message(),
    )
    wire = room.to_wire()
    assert wire["last_seq"] == 7
    assert wire["last_message"]["seq"] == 7
    assert wire["kind"] == "group"


@pytest.mark.parametrize(
    ("text", "limit", "problem"),
    [
        ("hi", 10, None),
        ("", 10, "empty_message"),
        (" \n\t", 10, "empty_message"),
        ("a" * 10, 10, None),
        ("a" * 11, 10, "message_too_large"),
        ("é" * 5, 10, None),  # 10 UTF-8 bytes
        ("é" * 6, 10, "message_too_large"),  # 12 UTF-8 bytes, 6 characters
    ],
)
def test_message_text_error(text: str, limit: int, problem: str | None) -> None:
    assert message_text_error(text, limit) == problem
