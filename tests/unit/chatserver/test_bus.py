"""Pure parts of the bus: the pub/sub envelope and channel names."""

from __future__ import annotations

import json

import pytest

from chatserver.bus import envelope, parse_envelope

pytestmark = pytest.mark.unit


def test_envelope_round_trips_event_and_publish_time() -> None:
    payload = envelope({"type": "typing", "room_id": "r"}, now=1234.5)
    assert parse_envelope(payload) == ({"type": "typing", "room_id": "r"}, 1234.5)
    assert parse_envelope(payload.encode()) == ({"type": "typing", "room_id": "r"}, 1234.5)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        "not json",
        "[]",
        json.dumps({"event": {"type": "x"}}),
        json.dumps({"ts": "yesterday", "event": {}}),
        json.dumps({"ts": 1.0, "event": "x"}),
    ],
)
def test_malformed_envelopes_are_rejected(payload: str | bytes) -> None:
    assert parse_envelope(payload) is None


def test_redis_replies_are_parsed_by_hiredis() -> None:
    """pyproject.toml pins hiredis: redis-py parses every reply and pub/sub message with it
    instead of its pure-Python parser when it is installed (and new enough)."""
    from redis._parsers import _AsyncHiredisParser
    from redis.asyncio.connection import DefaultParser

    assert DefaultParser is _AsyncHiredisParser
