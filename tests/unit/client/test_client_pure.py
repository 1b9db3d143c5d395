"""hypersend_client's pure parts: backoff bounds, the close-code error types, frame parsing."""

from __future__ import annotations

import random

import pytest
from hypersend_client import Backoff, CloseError, close_error, errors, events

pytestmark = pytest.mark.unit


def test_backoff_is_jittered_between_half_and_the_whole_step_and_capped() -> None:
    backoff = Backoff(base=0.5, cap=8.0)
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (50, 8.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays))
        assert len(set(delays)) > 100  # jittered, not one value


@pytest.mark.parametrize(
    ("code", "cls", "retryable", "refresh"),
    [
        (1000, errors.NormalClosure, True, False),
        (None, errors.AbnormalClosure, True, False),
        (1009, errors.FrameTooLarge, False, False),
        (1011, errors.ServerError, True, False),
        (1012, errors.ServerRestarting, True, False),
        (1013, errors.ServerFull, True, False),
        (4400, errors.ProtocolViolation, False, False),
        (4401, errors.Unauthorized, True, True),
        (4408, errors.AuthTimeout, True, False),
        (4410, errors.IdleTimeout, True, False),
        (4413, errors.SlowConsumer, True, False),
        (4503, errors.ResyncRequired, True, False),
        (4999, CloseError, True, False),
    ],
)
def test_each_close_code_has_its_error_type(
    code: int | None, cls: type[CloseError], retryable: bool, refresh: bool
) -> None:
    error = close_error(code, "why")
    assert type(error) is cls
    assert error.close_code == (1006 if code is None else code)
    assert error.reason == "why"
    assert (error.retryable, error.refresh) == (retryable, refresh)


def test_server_frames_parse_into_typed_events() -> None:
    message = {
        "id": "r:3",
        "room_id": "r",
        "seq": 3,
        "sender_id": "u",
        "client_id": "c",
        "text": "hi",
    }
    event = events.parse_event({"type": "message", "room_id": "r", "seq": 3, "message": message})
    assert isinstance(event, events.MessageEvent)
    assert (event.room_id, event.seq, event.message.text, event.message.sender_id) == (
        "r",
        3,
        "hi",
        "u",
    )
    presence = events.parse_event({"type": "presence", "user_id": "u", "online": True})
    assert presence == events.Presence("u", True)
    error = events.parse_event(
        {"type": "error", "code": "not_member", "message": "m", "room_ids": ["a"]}
    )
    assert isinstance(error, events.ServerError)
    assert error.room_ids == ["a"]
    assert events.parse_event({"type": "resumed", "rooms": {"r": 4}}) == events.Resumed({"r": 4})
    unknown = events.parse_event({"type": "something_new"})
    assert isinstance(unknown, events.Unknown)
    assert unknown.type == "something_new"
