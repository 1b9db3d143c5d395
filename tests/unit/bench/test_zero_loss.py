"""The zero-loss checker's verdict (bench/zero_loss.py): it must see every kind of loss."""

from __future__ import annotations

import random

import pytest

from bench.zero_loss import Account, Member, Report, ZeroLossChecker

pytestmark = pytest.mark.unit

Stored = dict[str, list[tuple[int, str, str]]]


def _checker(received: list[list[int]]) -> tuple[ZeroLossChecker, Stored]:
    """One room; member 0 sent seqs 1..3 (client ids c1..c3); each member got ``received[i]``."""
    checker = ZeroLossChecker(["http://127.0.0.1:1"], rooms=1, members=len(received))
    checker.room_ids = ["r"]
    for index, seqs in enumerate(received):
        account = Account(id=f"u{index}", username=f"user{index}", token="t")
        member = Member(checker, account, "r", index, random.Random(0))
        member.received = list(seqs)
        checker.members.append(member)
    sender = checker.members[0]
    sender.acked = {"c1": 1, "c2": 2, "c3": 3}
    sender.sent = 3
    return checker, {"r": [(1, "u0", "c1"), (2, "u0", "c2"), (3, "u0", "c3")]}


def verdict(received: list[list[int]], stored: Stored | None = None) -> Report:
    checker, rows = _checker(received)
    return checker.verdict(checker.acked_by_room(), stored or rows)


def test_every_acked_message_once_in_order_is_ok() -> None:
    report = verdict([[1, 2, 3], [1, 2, 3]])
    assert report.ok, report.problems()
    assert (report.sent, report.acked, report.delivered, report.expected_deliveries) == (3, 3, 6, 6)


def test_a_missing_message_is_caught() -> None:
    report = verdict([[1, 2, 3], [1, 3]])
    assert not report.ok
    assert report.missing == 1
    assert report.reorders == 0


def test_duplicates_and_reorders_are_caught() -> None:
    report = verdict([[1, 2, 3, 2], [2, 1, 3]])
    assert (report.duplicates, report.reorders, report.missing) == (1, 1, 0)
    assert not report.ok


def test_a_client_id_stored_twice_or_a_stored_unacked_message_is_caught() -> None:
    rows = [(1, "u0", "c1"), (2, "u0", "c2"), (3, "u0", "c3"), (4, "u0", "c3")]
    report = verdict([[1, 2, 3], [1, 2, 3]], {"r": rows})
    assert report.stored_twice == 1
    assert report.unacked_stored == 1
    assert not report.ok
