"""Client-frame parsing (wsprotocol) and frame builders (events): pure, no server."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from chatserver import events
from chatserver.models import Message, Room
from chatserver.realtime import outgoing, reconnect_after_ms
from chatserver.wsprotocol import (
    AuthFrame,
    Close,
    FrameError,
    PingFrame,
    ReadFrame,
    ResumeFrame,
    SendFrame,
    TypingFrame,
    max_frame_bytes,
    parse_client_frame,
)

pytestmark = pytest.mark.unit

LIMIT = 100
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def parse(frame: object) -> object:
    return parse_client_frame(json.dumps(frame), LIMIT)


def error_code(result: object) -> str:
    assert isinstance(result, FrameError), result
    return result.code


def test_valid_frames_parse() -> None:
    assert parse({"type": "auth", "token": "t"}) == AuthFrame("t")
    assert parse({"type": "resume", "rooms": {"r": 3}}) == ResumeFrame({"r": 3})
    assert parse({"type": "send", "room_id": "r", "client_id": "c-1", "text": "hi"}) == SendFrame(
        "r", "c-1", "hi"
    )
    assert parse({"type": "typing", "room_id": "r"}) == TypingFrame("r")
    assert parse({"type": "read", "room_id": "r", "seq": 0}) == ReadFrame("r", 0)
    assert parse({"type": "ping"}) == PingFrame()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"no": "type"}', "invalid_frame"),
        ('{"type": 5}', "invalid_frame"),
        ('{"type": "subscribe_everything"}', "unknown_type"),
        ('{"type": "auth"}', "invalid_frame"),
        ('{"type": "resume", "rooms": []}', "invalid_frame"),
        ('{"type": "resume", "rooms": {"r": -1}}', "invalid_frame"),
        ('{"type": "resume", "rooms": {"r": true}}', "invalid_frame"),
        ('{"type": "send", "room_id": "r", "text": "x"}', "invalid_frame"),
        (
            '{"type": "send", "room_id": "r", "client_id": "has space", "text": "x"}',
            "invalid_frame",
        ),
        ('{"type": "send", "room_id": "", "client_id": "c", "text": "x"}', "invalid_frame"),
        ('{"type": "send", "room_id": "r", "client_id": "c", "text": 5}', "invalid_frame"),
        ('{"type": "send", "room_id": "r", "client_id": "c", "text": "   "}', "empty_message"),
        ('{"type": "read", "room_id": "r", "seq": "3"}', "invalid_frame"),
        ('{"type": "typing"}', "invalid_frame"),
    ],
)
def test_bad_frames_get_a_code(raw: str, code: str) -> None:
    assert error_code(parse_client_frame(raw, LIMIT)) == code


def test_text_over_the_message_limit_is_message_too_large() -> None:
    frame = {"type": "send", "room_id": "r", "client_id": "c", "text": "é" * 51}  # 102 bytes
    assert error_code(parse(frame)) == "message_too_large"


def test_frames_over_the_frame_limit_are_refused_before_parsing() -> None:
    raw = "x" * (max_frame_bytes(LIMIT) + 1)
    assert error_code(parse_client_frame(raw, LIMIT)) == "frame_too_large"
    assert error_code(parse_client_frame(raw.encode(), LIMIT)) == "frame_too_large"


def test_binary_frames_with_json_are_accepted() -> None:
    assert parse_client_frame(b'{"type": "ping"}', LIMIT) == PingFrame()
    assert error_code(parse_client_frame(b"\xff\xfe", LIMIT)) == "invalid_json"


def test_close_codes_are_distinct_and_in_valid_ranges() -> None:
    codes = [c.value for c in Close]
    assert len(set(codes)) == len(codes)
    assert all(1000 <= c < 1015 or 4000 <= c < 5000 for c in codes)
    assert int(Close.SERVICE_RESTART) == 1012


def _message() -> Message:
    return Message(
        room_id="r", seq=4, id="r:4", sender_id="u", client_id="c", text="hi", created_at=NOW
    )


def test_message_frames_carry_room_seq_and_the_wire_message() -> None:
    msg = _message()
    for build, kind in [
        (events.message, "message"),
        (events.message_edited, "message_edited"),
        (events.message_deleted, "message_deleted"),
        (events.reaction, "reaction"),
    ]:
        frame = build(msg)
        assert frame["type"] == kind
        assert (frame["room_id"], frame["seq"]) == ("r", 4)
        assert frame["message"] == msg.to_wire()
    ack = events.ack("r", "c", 4, msg)
    assert (ack["type"], ack["client_id"], ack["seq"]) == ("ack", "c", 4)


def test_room_frames() -> None:
    room = Room(
        id="r", kind="group", name="n", created_by="u", created_at=NOW, last_activity_at=NOW
    )
    added = events.room_added(room)
    assert (added["type"], added["room_id"], added["room"]["id"]) == ("room_added", "r", "r")
    assert events.room_removed("r") == {"type": "room_removed", "room_id": "r"}


def test_small_frames() -> None:
    assert events.read("r", "u", 3) == {"type": "read", "room_id": "r", "user_id": "u", "seq": 3}
    assert events.typing("r", "u")["type"] == "typing"
    assert events.presence("u", True) == {"type": "presence", "user_id": "u", "online": True}
    assert events.error("rate_limited", "slow down", retry_after=1.5) == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
        "retry_after": 1.5,
    }
    assert events.reconnect(300) == {"type": "reconnect", "after_ms": 300}


def test_outgoing_marks_seq_only_for_new_messages_and_ephemeral_types() -> None:
    msg = _message()
    assert outgoing(events.message(msg)).seq == 4
    assert outgoing(events.message_edited(msg)).seq is None
    assert outgoing(events.typing("r", "u")).ephemeral
    assert outgoing(events.presence("u", False)).online is False
    assert not outgoing(events.read("r", "u", 1)).ephemeral
    assert json.loads(outgoing(events.message(msg)).text) == events.message(msg)


def test_reconnect_hint_is_jittered_within_bounds() -> None:
    rng = random.Random(1)
    values = {reconnect_after_ms(rng) for _ in range(50)}
    assert len(values) > 10
    assert all(250 <= v <= 5000 for v in values)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "send", "room_id": "r1", "client_id": "c-1", "text": "   "}, "empty_message"),
        (
            {"type": "send", "room_id": "r1", "client_id": "c-1", "text": "x" * 20},
            "message_too_large",
        ),
        ({"type": "send", "room_id": "r1", "client_id": "c-1"}, "invalid_frame"),
        ({"type": "send", "room_id": "r1", "client_id": "c-1", "text": 7}, "invalid_frame"),
    ],
)
def test_a_refused_send_names_its_room_and_client_id(frame: dict[str, object], code: str) -> None:
    refused = parse_client_frame(json.dumps(frame), 16)
    assert isinstance(refused, FrameError)
    assert refused.code == code
    assert refused.ids == {"room_id": "r1", "client_id": "c-1"}


def test_a_refused_frame_echoes_only_sane_ids() -> None:
    refused = parse_client_frame(
        json.dumps({"type": "send", "room_id": 5, "client_id": "c" * 500, "text": ""}), 16
    )
    assert isinstance(refused, FrameError)
    assert refused.ids == {}
