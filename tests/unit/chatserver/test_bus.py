"""Pure parts of the bus: the pub/sub envelope, channel names and (un)subscribe batching."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatserver.bus import envelope, merge_runs, parse_envelope

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


def test_consecutive_subscribes_merge_and_order_is_kept() -> None:
    queued: list[tuple[Any, list[str]]] = [
        ("subscribe", ["u:1"]),
        ("subscribe", ["r:a", "r:b"]),
        ("unsubscribe", ["r:c"]),
        ("unsubscribe", ["r:d"]),
        ("subscribe", ["r:c"]),  # back after its unsubscribe: must stay after it
    ]
    assert merge_runs(queued) == [
        ("subscribe", ["u:1", "r:a", "r:b"]),
        ("unsubscribe", ["r:c", "r:d"]),
        ("subscribe", ["r:c"]),
    ]
    assert queued[0] == ("subscribe", ["u:1"])  # the callers' lists are left alone
