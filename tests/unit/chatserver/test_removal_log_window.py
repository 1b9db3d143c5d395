"""Where a membership recheck reads the removal log from (chatserver/realtime.py,
`removal_log_since`): pure, no server."""

from __future__ import annotations

import pytest

from chatserver.realtime import (
    REMOVAL_LOG_OVERLAP_SECONDS,
    REMOVAL_LOG_RETENTION_SECONDS,
    removal_log_since,
)

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def test_a_pass_reads_from_before_the_last_one_began() -> None:
    last = NOW - 15
    assert removal_log_since(last, NOW) == last - REMOVAL_LOG_OVERLAP_SECONDS


def test_a_read_the_pruned_log_may_no_longer_cover_asks_for_a_full_pass() -> None:
    # The oldest start the log still holds, pruned by a clock the overlap ahead of ours.
    oldest = NOW - REMOVAL_LOG_RETENTION_SECONDS + REMOVAL_LOG_OVERLAP_SECONDS
    last_covered = oldest + REMOVAL_LOG_OVERLAP_SECONDS
    assert removal_log_since(last_covered, NOW) == oldest
    assert removal_log_since(last_covered - 1, NOW) is None
    assert removal_log_since(NOW - 2 * REMOVAL_LOG_RETENTION_SECONDS, NOW) is None
