"""The per-process fallback rate limiter (used while Redis is unreachable)."""

from __future__ import annotations

import pytest

from chatserver.ratelimit import LocalRateLimiter

pytestmark = pytest.mark.unit


def test_allows_limit_per_window_then_refuses_until_the_oldest_expires() -> None:
    limiter = LocalRateLimiter(3, window=60.0)
    assert [limiter.check("u", t).allowed for t in (0.0, 1.0, 2.0)] == [True, True, True]
    refused = limiter.check("u", 10.0)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(50.0)
    # Refused requests do not count: the window frees up when the first hit is 60 s old.
    assert not limiter.check("u", 59.9).allowed
    assert limiter.check("u", 60.0).allowed
    assert not limiter.check("u", 60.5).allowed


def test_users_have_separate_budgets() -> None:
    limiter = LocalRateLimiter(1)
    assert limiter.check("a", 0.0).allowed
    assert not limiter.check("a", 0.0).allowed
    assert limiter.check("b", 0.0).allowed


def test_memory_is_bounded_by_forgetting_the_least_recent_user() -> None:
    limiter = LocalRateLimiter(1, max_users=2)
    limiter.check("a", 0.0)
    limiter.check("b", 1.0)
    limiter.check("a", 2.0)  # refused, but "a" is now the most recent user
    limiter.check("c", 3.0)
    assert len(limiter) == 2
    assert limiter.check("b", 4.0).allowed  # "b" was forgotten: a fresh budget
    assert not limiter.check("c", 4.0).allowed


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="limit"):
        LocalRateLimiter(0)
