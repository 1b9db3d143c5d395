"""The per-process rate limiter the bus falls back to while Redis is unreachable (pure, no I/O).

The shared limit lives in Redis (``chatserver.bus``) so it holds across processes. When Redis
does not answer, refusing everyone would turn a Redis blip into an outage, and allowing everyone
would drop the protection; instead each process applies the same per-user sliding window on its
own. During an outage a user spread over N processes can therefore get up to N times the limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

# Users whose windows a process keeps at most; beyond it the idlest ones are forgotten first.
MAX_TRACKED_USERS: Final = 100_000


@dataclass(frozen=True, slots=True)
class LocalDecision:
    allowed: bool
    retry_after: float  # seconds; 0 when allowed


class LocalRateLimiter:
    """At most ``limit`` requests per user in any ``window`` seconds (times are caller-supplied
    monotonic seconds, so tests and the server drive the clock)."""

    def __init__(self, limit: int, window: float = 60.0, max_users: int = MAX_TRACKED_USERS):
        if limit < 1 or window <= 0 or max_users < 1:
            raise ValueError("limit and max_users must be >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.max_users = max_users
        # Insertion order = least recently used first (a user is moved to the end on each hit).
        self._hits: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._hits)

    def check(self, user_id: str, now: float) -> LocalDecision:
        """Count one request of ``user_id`` at ``now`` if the window has room for it."""
        hits = self._hits.pop(user_id, None)
        if hits is None:
            hits = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        self._hits[user_id] = hits
        if len(hits) < self.limit:
            hits.append(now)
            self._evict()
            return LocalDecision(allowed=True, retry_after=0.0)
        return LocalDecision(allowed=False, retry_after=max(0.001, hits[0] + self.window - now))

    def _evict(self) -> None:
        while len(self._hits) > self.max_users:
            del self._hits[next(iter(self._hits))]
