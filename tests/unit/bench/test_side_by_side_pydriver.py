"""The Python load generator's accounting (bench/side_by_side_pydriver.py): only a delivery
still due counts, so a copy cannot stand in for a message some member never got."""

from __future__ import annotations

import pytest
from hypersend_client import Message, events

from bench.side_by_side_pydriver import Driver

pytestmark = pytest.mark.unit


def _delivered(text: str, seq: int) -> events.MessageEvent:
    raw = {"id": f"r1:{seq}", "room_id": "r1", "seq": seq, "sender_id": "u1", "text": text}
    message = Message.from_json({**raw, "client_id": "c1", "created_at": "", "deleted": False})
    return events.MessageEvent(room_id="r1", seq=seq, message=message)


def test_a_copy_or_a_message_not_sent_by_the_run_is_no_delivery() -> None:
    driver = Driver({})
    phase = driver.phase(1)
    phase.expected, phase.outstanding = 2, {1000: 2}

    driver.on_event(_delivered("1000 1 xx", 7))
    driver.on_event(_delivered("999 1 xx", 3))  # an earlier run's message
    driver.on_event(_delivered("1000 1 xx", 7))
    driver.on_event(_delivered("1000 1 xx", 7))  # one more than the room has members

    assert (phase.delivered, phase.duplicates, len(phase.latencies_ms)) == (2, 2, 2)
    assert phase.outstanding == {}
