"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Two replicas run; only the holder of the Lease reconciles. The decision (create, acquire, renew
or follow) is a pure function of the Lease as read, when this process first saw that version of
it, the monotonic clock and our identity; `Elector` is the thin loop around it.

Expiry is judged like client-go: never by the other holder's clock (its `renewTime`), but by how
long *we* have seen the same record unchanged, on our monotonic clock. A holder renews every retry
period; it counts as leader only while its last successful renew was sent less than the renew
deadline (10 s) ago, also on the monotonic clock, while others wait a lease duration (15 s) of
silence before taking over. So a leader paused (SIGSTOP, a long GC, a frozen VM) past its lease
answers `is_leader() == False` the instant it resumes, before it could write anything, and must
re-acquire, which fails while the new holder renews. `kube.set_fence(elector.is_leader)` makes
every write of the operator ask first.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from hypersend_operator import metrics
from hypersend_operator.kube import ApiError, Kube, Obj

log = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
LEASE_KIND = "Lease"
DEFAULT_LEASE_NAME = "hypersend-operator"


@dataclass(frozen=True)
class Timing:
    """client-go's scheme, shorter than its defaults (15 / 10 / 2 s): a follower takes over a
    leader killed outright at most a lease duration plus a retry period later, and the takeover
    goal is 15 s. The leader still gets three tries at renewing before its deadline."""

    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # A holder must give up (renew deadline) before others may take over (lease duration),
        # and must get several tries at renewing within its deadline.
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")


@dataclass(frozen=True)
class Record:
    """The Lease's spec: who holds it and since when."""

    holder: str | None
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> Obj:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


@dataclass(frozen=True)
class Observed:
    """A Lease record as last read, and when (monotonic) we first saw it in this state."""

    record: Record
    resource_version: str
    since: float


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet
    ACQUIRE = "acquire"  # free (released, never held) or expired: take it
    RENEW = "renew"  # ours: prolong it
    FOLLOW = "follow"  # someone else holds a valid lease


def decide(observed: Observed | None, me: str, now: float) -> Action:
    """What to do with the Lease as read. `now` and `observed.since` are monotonic times."""
    if observed is None:
        return Action.CREATE
    record = observed.record
    if record.holder == me:
        return Action.RENEW
    if record.holder is None:
        return Action.ACQUIRE
    # Someone else's: valid for its duration after we first saw this version of it.
    if now < observed.since + record.duration_seconds:
        return Action.FOLLOW
    return Action.ACQUIRE


def lost(observed: Observed | None, me: str) -> bool:
    """The Lease as read is not ours (any more): whatever we believed, we do not lead."""
    return observed is None or observed.record.holder != me


def observe(previous: Observed | None, lease: Mapping[str, Any], now: float) -> Observed:
    """The observation after reading `lease`: the clock restarts only when the record changed."""
    record = Record.of(lease)
    version = str(lease["metadata"].get("resourceVersion", ""))
    if previous is not None and previous.record == record:
        return replace(previous, resource_version=version)
    return Observed(record, version, now)


def next_try(observed: Observed | None, me: str, now: float, retry: float) -> float:
    """Seconds until the next round: the retry period, but a follower tries again the moment
    the lease it follows expires rather than up to a retry period later."""
    if observed is None or decide(observed, me, now) is not Action.FOLLOW:
        return retry
    expires = observed.since + observed.record.duration_seconds
    return max(0.0, min(retry, expires - now))


def wanted(action: Action, current: Record | None, me: str, stamp: str, duration: int) -> Record:
    """The record to write for `action` (CREATE, ACQUIRE or RENEW) at wall-clock `stamp`."""
    if action is Action.RENEW and current is not None:
        return replace(current, renew_time=stamp, duration_seconds=duration)
    transitions = 0
    if current is not None:
        # client-go counts a change of holder; the same holder re-taking its own lease is none.
        changed = current.holder is not None and current.holder != me
        transitions = current.transitions + (1 if changed else 0)
    return Record(me, duration, stamp, stamp, transitions)


def released(current: Record, stamp: str) -> Record:
    """What a holder writes on a clean shutdown: no holder, so the next replica takes it at once
    (client-go's ReleaseOnCancel writes the same)."""
    return replace(current, holder=None, duration_seconds=1, renew_time=stamp)


def is_fresh(renewed_at: float | None, now: float, renew_deadline: float) -> bool:
    """The fence: a renew sent at `renewed_at` (monotonic) still covers writes at `now`."""
    return renewed_at is not None and now - renewed_at < renew_deadline


def default_identity() -> str:
    """hostname + a random suffix: two processes on one host (or a restarted pod reusing its
    name) never share an identity."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _stamp() -> str:
    # MicroTime: RFC 3339 with microseconds.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """The I/O loop: read the Lease, `decide`, write with optimistic concurrency, repeat."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        *,
        identity: str | None = None,
        timing: Timing = Timing(),
        on_started_leading: Callable[[], None] = lambda: None,
        on_stopped_leading: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._clock = clock
        self._observed: Observed | None = None
        self._renewed_at: float | None = None
        self._leading = False  # what the callbacks were last told
        self._task: asyncio.Task[None] | None = None
        metrics.LEADER.set(0)

    def is_leader(self) -> bool:
        """True only while the last successful renew is younger than the renew deadline."""
        return is_fresh(self._renewed_at, self._clock(), self.timing.renew_deadline)

    async def try_once(self) -> Action | None:
        """One round; returns what was done (None when the round failed: a read or a lost race)."""
        sent = self._clock()
        try:
            lease = await self.kube.get(LEASE_API_VERSION, LEASE_KIND, self.namespace, self.name)
        except ApiError as e:
            log.warning("cannot read Lease %s/%s: %s", self.namespace, self.name, e)
            return None
        self._observed = None if lease is None else observe(self._observed, lease, self._clock())
        if lost(self._observed, self.identity):
            self._renewed_at = None  # someone else holds it now: stop at once, not at the deadline
        action = decide(self._observed, self.identity, self._clock())
        if action is Action.FOLLOW:
            return action
        current = None if self._observed is None else self._observed.record
        record = wanted(action, current, self.identity, _stamp(), round(self.timing.lease_duration))
        manifest: Obj = {
            "apiVersion": LEASE_API_VERSION,
            "kind": LEASE_KIND,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.spec(),
        }
        try:
            if self._observed is None:
                written = await self.kube.create(manifest)
            else:
                manifest["metadata"]["resourceVersion"] = self._observed.resource_version
                written = await self.kube.replace(manifest)
        except ApiError as e:
            # 409: another replica wrote first (or our view was stale); read again next round.
            level = logging.DEBUG if e.conflict else logging.WARNING
            log.log(level, "could not %s Lease %s: %s", action.value, self.name, e)
            return None
        # Writes are fenced from the time the request was *sent*: the renewTime the others see
        # is no older than that.
        self._renewed_at = sent
        self._observed = observe(None, written, sent)
        return action

    def _notice(self) -> None:
        """Tell the callbacks and metrics when leadership started or ended."""
        leading = self.is_leader()
        if leading == self._leading:
            return
        self._leading = leading
        metrics.LEADER.set(1 if leading else 0)
        metrics.LEADER_TRANSITIONS.inc()
        if leading:
            log.info("%s became the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
            self.on_started_leading()
        else:
            log.warning("%s is no longer the leader", self.identity)
            self.on_stopped_leading()

    async def run(self) -> None:
        """Try every retry period (followers with jitter, like client-go) until cancelled."""
        while True:
            # A leader paused past its deadline must step down before anything else runs.
            self._notice()
            await self.try_once()
            self._notice()
            delay = self.timing.retry_period
            if not self.is_leader():
                delay *= 1 + random.random() * 0.2  # jitter, not a secret
            await asyncio.sleep(next_try(self._observed, self.identity, self._clock(), delay))

    async def start(self) -> None:
        """One round now (so a lone replica leads before its first pass), then the loop."""
        await self.try_once()
        self._notice()
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self, release: bool = True) -> None:
        """Stop the loop; on a clean shutdown give the Lease up so another replica takes it at
        once instead of after the lease duration."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        held = self._observed is not None and self._observed.record.holder == self.identity
        self._renewed_at = None
        self._notice()
        if not (release and held and self._observed is not None):
            return
        manifest: Obj = {
            "apiVersion": LEASE_API_VERSION,
            "kind": LEASE_KIND,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": self._observed.resource_version,
            },
            "spec": released(self._observed.record, _stamp()).spec(),
        }
        try:
            await self.kube.replace(manifest)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except ApiError as e:  # 409: someone else holds it by now; nothing to give up
            log.info("did not release Lease %s/%s: %s", self.namespace, self.name, e)
