"""Pure helpers of the store: document keys and the group commit's planning."""

from __future__ import annotations

import asyncio

from chatserver.store import (
    DUPLICATE_KEY,
    SUMMARY_INTERVAL_SECONDS,
    SUMMARY_MAX_INTERVAL_SECONDS,
    SUMMARY_WRITES_PER_SECOND,
    _PendingSend,
    assign_seqs,
    chunked,
    client_key,
    first_duplicate,
    merge_retries,
    only_members,
    summary_pause,
)


def test_client_key_names_room_sender_and_client_id() -> None:
    assert client_key("r1", "u1", "a:b") == "r1:u1:a:b"


def test_seqs_continue_each_room_from_its_highest_in_arrival_order() -> None:
    rooms = ["a", "b", "a", "c", "a", "b"]
    assert assign_seqs(rooms, {"a": 0, "b": 41, "c": 7}) == [1, 42, 2, 8, 3, 43]


def test_the_duplicate_that_stopped_an_ordered_insert_is_found() -> None:
    duplicate = {"writeErrors": [{"index": 3, "code": DUPLICATE_KEY, "errmsg": "E11000"}]}
    assert first_duplicate(duplicate) == 3
    # Anything else fails the batch: no seq is trusted.
    assert first_duplicate({"writeErrors": [{"index": 0, "code": 2, "errmsg": "bad"}]}) is None
    assert first_duplicate({"writeConcernErrors": [{"code": 64}]}) is None


async def test_repeated_client_keys_in_a_batch_are_answered_by_the_first() -> None:
    loop = asyncio.get_running_loop()

    def send(room: str, sender: str, client_id: str) -> _PendingSend:
        return _PendingSend(room, sender, client_id, "t", None, loop.create_future())

    batch = [send("r", "u", "1"), send("r", "v", "1"), send("r", "u", "1"), send("s", "u", "1")]
    merged = merge_retries(batch)
    assert merged == [batch[0], batch[1], batch[3]]
    assert batch[0].retries == [batch[2]]
    batch[0].fail(RuntimeError("down"))
    assert batch[2].future.exception() is batch[0].future.exception()
    assert not batch[1].future.done()


async def test_only_checked_sends_of_non_members_are_refused() -> None:
    loop = asyncio.get_running_loop()

    def send(room: str, sender: str, check: bool) -> _PendingSend:
        return _PendingSend(room, sender, "c", "t", None, loop.create_future(), check)

    member, stranger, trusted = send("r", "u", True), send("r", "x", True), send("s", "x", False)
    allowed, refused = only_members([member, stranger, trusted], {("r", "u")})
    assert allowed == [member, trusted]
    assert refused == [stranger]


def test_chunks_keep_order_and_cover_everything() -> None:
    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunked([], 3) == []


def test_the_summary_writer_rests_longer_as_more_rooms_were_due() -> None:
    assert summary_pause(0) == summary_pause(1) == SUMMARY_INTERVAL_SECONDS
    # Under load: about SUMMARY_WRITES_PER_SECOND summaries a second.
    assert summary_pause(2 * SUMMARY_WRITES_PER_SECOND) == 2.0
    # Never further behind than the cap, however many rooms.
    assert summary_pause(1_000_000) == SUMMARY_MAX_INTERVAL_SECONDS
