"""RoomCursor (ordering, dedupe, replay) and SendQueue (bounded, ephemeral first) decisions."""

from __future__ import annotations

import pytest

from chatserver.resume import MAX_HOLES, Outgoing, RoomCursor, SendQueue

pytestmark = pytest.mark.unit


def msg(seq: int, room: str = "r") -> Outgoing:
    return Outgoing(type="message", text=f"m{seq}", room_id=room, seq=seq)


def other(kind: str = "reaction") -> Outgoing:
    return Outgoing(type=kind, text=kind, room_id="r", ephemeral=kind in ("typing", "presence"))


def seqs(items: list[Outgoing]) -> list[int | None]:
    return [i.seq for i in items]


def test_first_live_message_sets_the_baseline() -> None:
    cursor = RoomCursor()
    assert seqs(cursor.live(msg(7)).deliver) == [7]
    assert cursor.last_seq == 7


def test_in_order_messages_pass_and_duplicates_are_dropped() -> None:
    cursor = RoomCursor(last_seq=3)
    assert seqs(cursor.live(msg(4)).deliver) == [4]
    assert cursor.live(msg(4)).deliver == []
    assert cursor.live(msg(2)).deliver == []
    assert cursor.last_seq == 4


def test_a_message_ahead_is_held_until_the_missing_one_arrives() -> None:
    cursor = RoomCursor(last_seq=1)
    step = cursor.live(msg(3))
    assert step.deliver == []
    assert step.gap
    assert cursor.has_gap
    assert seqs(cursor.live(msg(2)).deliver) == [2, 3]
    assert not cursor.has_gap
    assert cursor.last_seq == 3


def test_non_message_frames_pass_through_without_touching_seq() -> None:
    cursor = RoomCursor(last_seq=5)
    assert cursor.live(other()).deliver == [other()]
    assert cursor.last_seq == 5


def test_resume_replay_buffers_live_events_and_dedupes_the_overlap() -> None:
    # The client saw up to 2; while history 3..6 is read, 5..8 arrive live.
    cursor = RoomCursor()
    cursor.begin_replay(after_seq=2)
    for s in (5, 6, 7):
        assert cursor.live(msg(s)).deliver == []
    typing = other("typing")
    cursor.live(typing)
    cursor.live(msg(8))
    delivered: list[Outgoing] = []
    for s in (3, 4, 5, 6):
        delivered += cursor.replayed(s, msg(s))
    step = cursor.end_replay()
    delivered += step.deliver
    assert seqs(delivered) == [3, 4, 5, 6, 7, None, 8]
    assert not step.gap
    assert cursor.last_seq == 8


def test_replay_skips_what_the_client_already_has() -> None:
    cursor = RoomCursor(last_seq=10)
    cursor.begin_replay()
    assert cursor.replayed(9, msg(9)) == []
    assert seqs(cursor.replayed(11, msg(11))) == [11]
    assert cursor.end_replay().deliver == []


def test_explicit_resume_point_resets_the_cursor() -> None:
    cursor = RoomCursor(last_seq=10)
    cursor.begin_replay(after_seq=4)
    assert seqs(cursor.replayed(5, msg(5))) == [5]


def test_gap_fill_from_history_releases_held_messages() -> None:
    cursor = RoomCursor(last_seq=1)
    cursor.live(msg(4))
    cursor.live(msg(5))
    assert cursor.next_fill_from == 1
    cursor.begin_replay()
    out = [*cursor.replayed(2, msg(2)), *cursor.replayed(3, msg(3)), *cursor.replayed(4, msg(4))]
    step = cursor.end_replay()
    assert seqs(out + step.deliver) == [2, 3, 4, 5]
    assert not step.gap


def test_a_seq_history_skipped_is_still_delivered_if_it_shows_up_later() -> None:
    cursor = RoomCursor(last_seq=1)
    cursor.begin_replay()
    cursor.replayed(3, msg(3))  # 2 was not stored yet when history was read
    cursor.end_replay()
    assert seqs(cursor.live(msg(2)).deliver) == [2]
    assert cursor.live(msg(2)).deliver == []  # but only once


def test_holes_are_bounded() -> None:
    cursor = RoomCursor(last_seq=0)
    cursor.begin_replay()
    cursor.replayed(10_000, msg(10_000))
    cursor.end_replay()
    assert cursor.live(msg(1)).deliver == []  # too old to remember
    assert seqs(cursor.live(msg(10_000 - MAX_HOLES)).deliver) == [10_000 - MAX_HOLES]


def test_buffered_counts_buffer_and_held() -> None:
    cursor = RoomCursor(last_seq=0)
    cursor.live(msg(5))
    cursor.begin_replay()
    cursor.live(msg(6))
    assert cursor.buffered == 2


def test_queue_accepts_up_to_its_size() -> None:
    queue = SendQueue(2)
    assert queue.offer(msg(1)) == "queued"
    assert queue.offer(msg(2)) == "queued"
    assert queue.offer(msg(3)) == "overflow"
    assert [queue.pop(), queue.pop(), queue.pop()] == [msg(1), msg(2), None]


def test_full_queue_drops_ephemeral_frames_first() -> None:
    queue = SendQueue(2)
    queue.offer(other("typing"))
    queue.offer(msg(1))
    assert queue.offer(other("presence")) == "dropped"
    # A durable frame evicts the queued ephemeral one instead of overflowing.
    assert queue.offer(msg(2)) == "queued"
    assert queue.dropped == 2
    assert seqs([queue.pop(), queue.pop()]) == [1, 2]  # type: ignore[list-item]
    assert queue.space == 2


def test_a_frame_may_skip_the_queue_only_when_none_is_queued_or_being_written() -> None:
    queue = SendQueue(4)
    assert queue.idle
    queue.offer(msg(1))
    assert not queue.idle
    assert queue.pop() == msg(1)
    # Popped but not yet written (the transport is paused): a later frame must queue behind it.
    assert not queue.idle
    queue.written()
    assert queue.idle
    assert queue.pop() is None
    assert queue.idle


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        SendQueue(0)


def test_baseline_applies_only_to_a_cursor_that_has_seen_nothing() -> None:
    fresh = RoomCursor()
    fresh.set_baseline(5)
    assert fresh.last_seq == 5
    assert seqs(fresh.live(msg(5)).deliver) == []  # already counted as delivered
    assert seqs(fresh.live(msg(6)).deliver) == [6]
    seen = RoomCursor(last_seq=9)
    seen.set_baseline(5)
    assert seen.last_seq == 9
