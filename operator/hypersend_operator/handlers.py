"""kopf wiring only: which events start a reconcile pass, and how passes are serialised.

Every trigger (CR create/update/resume, the periodic resync timer, an event on an owned child)
ends in `Runner.run_pass`, which takes the cluster's lock, reads the CR fresh, runs one
`reconcile` pass, posts Events and writes status only when it changed. Child events are coalesced
per parent, so a burst of Deployment status updates costs one pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from hypersend_operator import metrics, reconcile
from hypersend_operator.api import (
    API_VERSION,
    GROUP,
    KIND,
    PAUSED_ANNOTATION,
    PLURAL,
    RESTARTED_AT_ANNOTATION,
    ROTATE_JWT_ANNOTATION,
    VERSION,
)
from hypersend_operator.builders import OwnedKind, owned_kinds
from hypersend_operator.builders import labels as lb
from hypersend_operator.kube import ApiError, Kube, NotLeader

log = logging.getLogger(__name__)

# The annotations that steer the operator: a change to any must start a pass at once.
ACTING_ANNOTATIONS = (PAUSED_ANNOTATION, RESTARTED_AT_ANNOTATION, ROTATE_JWT_ANNOTATION)
# kopf's own bookkeeping (handler progress, the last handled essence) lives under a prefix of its
# own. kopf leaves every annotation under its storages' prefix out of the essence it diffs to fire
# `on.update`: under `hypersend.io` (as before) that hid `hypersend.io/paused` and
# `hypersend.io/restartedAt`, and a pause, resume or restart waited for the periodic resync.
KOPF_PREFIX = f"kopf.{GROUP}"
DIFFBASE_KEY = "last-handled-configuration"


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled-configuration annotation, always with the acting annotations.

    A CR last handled by an operator that kept its bookkeeping under `hypersend.io` still carries
    kopf's `hypersend.io/kopf-managed` marker, which makes kopf drop every `hypersend.io/`
    annotation from the essence; the acting ones are added back as extra fields, so their
    changes fire `on.update` on such CRs too.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        acting: list[kopf.FieldSpec] = [("metadata", "annotations", k) for k in ACTING_ANNOTATIONS]
        return super().build(body=body, extra_fields=[*(extra_fields or ()), *acting])


def diffbase_storage() -> DiffBaseStorage:
    return DiffBaseStorage(prefix=KOPF_PREFIX, key=DIFFBASE_KEY)


def progress_storage() -> kopf.AnnotationsProgressStorage:
    return kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)


# Child kinds whose events wake their HypersendCluster. Secrets are left out: watching them
# would need list/watch on every Secret; a deleted generated Secret comes back on the next resync.
WATCHED_CHILDREN: tuple[OwnedKind, ...] = tuple(k for k in owned_kinds() if k.kind != "Secret")


@dataclass(frozen=True)
class RunnerConfig:
    resync_seconds: float = 60.0
    # Re-check sooner than the resync while something is converging or broken. Child status
    # changes wake the parent anyway; this covers what no child event announces (a missing
    # Atlas Secret appearing, a claim binding).
    requeue_progressing_seconds: float = 5.0
    requeue_degraded_seconds: float = 10.0
    capabilities_ttl_seconds: float = 300.0
    child_event_delay_seconds: float = 0.5


class Runner:
    """Serialises passes per cluster and schedules wake-ups."""

    def __init__(
        self, kube: Kube, config: RunnerConfig, leader: Callable[[], bool] = lambda: True
    ) -> None:
        self.kube = kube
        self.config = config
        # Only the leader runs passes (leader.Elector.is_leader; always True without election).
        self.leader = leader
        self._known: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._wakes: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._capabilities: frozenset[str] | None = None
        self._capabilities_lock = asyncio.Lock()
        self._capabilities_at = 0.0
        self._pruned: dict[str, int] = {}  # uid -> generation last pruned at

    async def capabilities(self) -> frozenset[str]:
        """The cluster's served kinds, discovered once per TTL (not once per concurrent pass)."""
        async with self._capabilities_lock:
            age = time.monotonic() - self._capabilities_at
            if self._capabilities is None or age > self.config.capabilities_ttl_seconds:
                self._capabilities = await self.kube.served_kinds()
                self._capabilities_at = time.monotonic()
            return self._capabilities

    def wake(self, namespace: str, name: str, delay: float, trigger: str) -> None:
        """Run a pass for this cluster after `delay` (coalesced with an earlier scheduled one)."""
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        existing = self._wakes.get(key)
        if existing is not None:
            if existing.when() <= loop.time() + delay:
                return
            existing.cancel()

        def fire() -> None:
            self._wakes.pop(key, None)
            task = loop.create_task(self._woken(namespace, name, trigger))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._wakes[key] = loop.call_later(delay, fire)

    async def _woken(self, namespace: str, name: str, trigger: str) -> None:
        try:
            await self.run_pass(namespace, name, trigger)
        except NotLeader:
            return  # leadership ended mid-pass: the new leader runs it
        except Exception as e:  # a woken pass has no kopf retry: reschedule it ourselves
            log.warning("pass for %s/%s (%s) failed: %s; retrying", namespace, name, trigger, e)
            self.wake(namespace, name, self.config.requeue_degraded_seconds, "retry")

    def known_clusters(self) -> frozenset[tuple[str, str]]:
        """Every (namespace, name) seen by a trigger and not seen deleted."""
        return frozenset(self._known)

    def forget(self, namespace: str, name: str) -> None:
        self._known.discard((namespace, name))

    def wake_all(self, trigger: str = "leader") -> None:
        """A pass for every known cluster: a new leader catches up on what it only watched."""
        for namespace, name in self._known:
            self.wake(namespace, name, 0, trigger)

    async def run_pass(self, namespace: str, name: str, trigger: str) -> None:
        self._known.add((namespace, name))
        if not self.leader():
            metrics.RECONCILES.labels(trigger, "not_leader").inc()  # a follower's trigger
            return
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            await self._run_pass_locked(namespace, name, trigger)

    async def _run_pass_locked(self, namespace: str, name: str, trigger: str) -> None:
        started = time.monotonic()
        try:
            cr = await self.kube.get(API_VERSION, KIND, namespace, name)
            if cr is None or cr["metadata"].get("deletionTimestamp"):
                metrics.forget_cluster(namespace, name)
                if cr is None:
                    self.forget(namespace, name)
                return
            if not (cr.get("status") or {}).get("conditions"):
                # A brand-new CR (its status only the CRD's default) says at once, with
                # conditions, that work is under way (kstatus: InProgress).
                initial = reconcile.initial_status(cr)
                await reconcile.write_status(self.kube, cr, initial)
                cr = {**cr, "status": initial}
            uid = cr["metadata"]["uid"]
            generation = int(cr["metadata"].get("generation") or 0)
            # Listing every kind to prune costs reads; do it once per generation (and at start).
            prune = self._pruned.get(uid) != generation
            result = await reconcile.reconcile(
                self.kube, cr, capabilities=await self.capabilities(), prune_children=prune
            )
            if prune and result.applied_generation is not None:
                self._pruned[uid] = generation
            await reconcile.post_events(self.kube, cr, result.changes)
            await reconcile.write_status(self.kube, cr, result.status)
            metrics.observe_cluster(namespace, name, result.status)
        except ApiError as e:
            metrics.RECONCILES.labels(trigger, "error").inc()
            metrics.RECONCILE_ERRORS.labels(f"api_{e.code}").inc()
            raise
        except Exception as e:
            metrics.RECONCILES.labels(trigger, "error").inc()
            metrics.RECONCILE_ERRORS.labels(type(e).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
        metrics.RECONCILES.labels(trigger, "ok").inc()
        for change in result.changes:
            log.info("%s/%s: %s %s", namespace, name, change.action, change.describe())
        phase = result.status.get("phase")
        if phase in ("Progressing", "Pending"):
            self.wake(namespace, name, self.config.requeue_progressing_seconds, "requeue")
        elif phase == "Degraded":
            self.wake(namespace, name, self.config.requeue_degraded_seconds, "requeue")

    def cancel_all(self) -> None:
        for handle in self._wakes.values():
            handle.cancel()
        self._wakes.clear()
        for task in self._tasks:
            task.cancel()


def _owner(body: Mapping[str, Any]) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(ref["name"])
    return None


def register(registry: kopf.OperatorRegistry, runner: Runner) -> None:
    """Attach the operator's handlers to `registry`."""

    async def on_cluster(namespace: str, name: str, reason: str, **_: Any) -> None:
        try:
            await runner.run_pass(namespace, name, reason)
        except NotLeader:
            return  # leadership ended mid-pass: the new leader runs it
        except ApiError as e:
            # kopf retries with its backoff; the message names the failed request.
            raise kopf.TemporaryError(str(e), delay=5 if e.transient else 30) from e

    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(GROUP, VERSION, PLURAL, registry=registry, id=f"reconcile-{decorator.__name__}")(
            _bind_reason(on_cluster, decorator.__name__)
        )

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        interval=runner.config.resync_seconds,
        initial_delay=runner.config.resync_seconds,
        id="resync",
    )
    async def resync(namespace: str | None, name: str, **_: Any) -> None:
        await on_cluster(namespace or "", name, "resync")

    async def on_child(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        owner = _owner(body)
        if owner and namespace:
            runner.wake(namespace, owner, runner.config.child_event_delay_seconds, "child")

    for owned in WATCHED_CHILDREN:
        if owned.capability is not None:
            continue  # optional APIs may be absent; their children are checked on resync
        kopf.on.event(
            owned.group,
            owned.version,
            owned.plural,
            registry=registry,
            id=f"wake-parent-{owned.plural}",
            labels={lb.MANAGED_BY_KEY: lb.MANAGED_BY},
        )(on_child)

    # The watch's DELETED event, not a delete handler: that would need a finalizer, or be skipped
    # for objects that have none. (A pass that finds the CR gone forgets it too.)
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="forget-metrics")
    async def forget_metrics(type: str | None, namespace: str | None, name: str, **_: Any) -> None:
        if type == "DELETED":
            metrics.forget_cluster(namespace or "", name)
            runner.forget(namespace or "", name)

    def delete_policy_is_delete(spec: kopf.Spec, **_: Any) -> bool:
        return bool(spec.get("mongo", {}).get("deletePolicy") == "Delete")

    # Only clusters asking for their data to go get a finalizer; the rest go by owner references.
    @kopf.on.delete(
        GROUP, VERSION, PLURAL, registry=registry, when=delete_policy_is_delete, id="delete-data"
    )
    async def delete_data(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        if not runner.leader():
            # The finalizer stays until the leader has removed the data.
            delay = runner.config.requeue_progressing_seconds
            raise kopf.TemporaryError("not the leader", delay=delay)
        deleted = await reconcile.delete_data(runner.kube, body)
        log.info("%s/%s deleted: removed PVCs %s", namespace, name, ", ".join(deleted) or "(none)")


def _bind_reason(fn: Any, reason: str) -> Any:
    async def handler(namespace: str, name: str, **kwargs: Any) -> None:
        await fn(namespace=namespace, name=name, reason=reason)

    handler.__name__ = f"reconcile_on_{reason}"
    return handler
