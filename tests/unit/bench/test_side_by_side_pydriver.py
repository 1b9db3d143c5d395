"""The Python load generator's accounting (bench/side_by_side_pydriver.py): only a delivery
still due counts, so a copy cannot stand in for a message some member never got, and an
earlier workload's message is counted apart from copies."""

from __future__ import annotations

import pytest
from hypersend_client import Message, events

from bench.side_by_side_pydriver import Driver

pytestmark = pytest.mark.unit


def _delivered(text: str, seq: int) -> events.MessageEvent:
    raw = {"id": f"r1:{seq}", "room_id": "r1", "seq": seq, "sender_id": "u1", "text": text}
    message = Message.from_json({**raw, "client_id": "c1", "created_at": "", "deleted": False})
    return events.MessageEvent(room_id="r1", seq=seq, message=message)


def test_a_copy_or_an_earlier_workloads_message_is_no_delivery() -> None:
    driver = Driver({})
    driver.current = 1
    sent = driver.started_ns
    phase = driver.phase(1)
    phase.expected, phase.outstanding = 2, {sent: 2}

    driver.on_event(_delivered(f"{sent} 1 xx", 7))
    driver.on_event(_delivered(f"{sent - 1} 1 xx", 3))  # an earlier workload's, filled in
    driver.on_event(_delivered(f"{sent} 1 xx", 7))
    driver.on_event(_delivered(f"{sent} 1 xx", 7))  # one more than the room has members

    assert (phase.delivered, len(phase.latencies_ms)) == (2, 2)
    assert (phase.duplicates, phase.earlier) == (1, 1)
    assert phase.outstanding == {}
