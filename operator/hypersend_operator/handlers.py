"""kopf wiring and the Runner: which events start a reconcile pass, and how passes are serialised.

kopf watches the HypersendClusters (raw events only); the child kinds are watched by the caches
(cache.py) with the operator's label as the server-side selector. Every trigger (a CR change, a
child event, the periodic resync, a new leader) ends in `Runner.run_pass`, which takes the
cluster's lock, runs one `reconcile` pass on the CR as last watched, posts Events and writes
status only when it changed. Wake-ups go through a work queue (workqueue.py) served by a fixed
number of workers: a burst of Deployment status updates costs one pass, and a fleet's clusters
are served first come, first served, periodic checks last. Only the leader (leader.py) runs
passes.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from hypersend_operator import metrics, reconcile, workqueue
from hypersend_operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from hypersend_operator.builders import OwnedKind, owned_kinds
from hypersend_operator.builders.hpa import CONNECTIONS_METRIC
from hypersend_operator.cache import ChildCache, PodMetricCache, is_newer
from hypersend_operator.kube import ApiError, Kube, NotLeader
from hypersend_operator.plan import RolloutSlots, clusters_rolling
from hypersend_operator.workqueue import WorkQueue

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Child kinds the operator watches, each with its own label as the server-side selector
# (cache.py). Generated Secrets among them: RBAC cannot limit a list or watch of Secrets to those
# labels, so the operator may read the Secrets of its scope (docs/install.md; a namespaced
# install narrows the scope).
WATCHED_CHILDREN: tuple[OwnedKind, ...] = owned_kinds()


def operator_version() -> str:
    """The version a chat Deployment is stamped with (plan.py: fleet rollouts)."""
    try:
        return importlib.metadata.version("hypersend")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RunnerConfig:
    resync_seconds: float = 60.0
    # Re-check sooner than the resync while something is converging or broken. Child status
    # changes wake the parent anyway; this covers what no child event announces (a missing
    # Atlas Secret appearing, a claim binding).
    requeue_progressing_seconds: float = 5.0
    requeue_degraded_seconds: float = 10.0
    child_event_delay_seconds: float = 0.5
    # Fleet rollouts (plan.py): clusters whose pods an operator upgrade may roll at once.
    max_concurrent_rollouts: int = 3
    # status.chat.connections is read in the background, again once older than this.
    connections_max_age_seconds: float = 10.0
    cache_sync_timeout_seconds: float = 30.0
    # Passes run at once (clusters, never the same one twice). Passes wait mostly on the API
    # server; more workers than it can serve only make every cluster wait longer.
    workers: int = 4


def priority_of(trigger: str) -> int:
    """How urgent a pass is (workqueue.py): a check nothing asked for waits for announced work."""
    if trigger in ("resync", "metrics"):
        return workqueue.BACKGROUND
    return workqueue.ANNOUNCED


def _essence(cr: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a CR can call for a pass: not its status (the operator's own writes)."""
    meta = cr.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        tuple(sorted((meta.get("annotations") or {}).items())),
        tuple(meta.get("finalizers") or ()),
        meta.get("deletionTimestamp"),
    )


class Runner:
    """Serialises passes per cluster, keeps the watched CRs, schedules wake-ups."""

    def __init__(
        self,
        kube: Kube,
        config: RunnerConfig,
        children: ChildCache,
        leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kube = kube
        self.config = config
        self.children = children
        self.connections = PodMetricCache(
            kube,
            CONNECTIONS_METRIC,
            lambda namespace, name: self.wake(
                namespace, name, config.child_event_delay_seconds, "metrics"
            ),
            max_age=config.connections_max_age_seconds,
        )
        # Only the leader runs passes (leader.Elector.is_leader; always True without election).
        self.leader = leader
        self.version = operator_version()
        self.slots = RolloutSlots(config.max_concurrent_rollouts)
        self._crs: dict[tuple[str, str], Obj] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._wakes: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.queue: WorkQueue[tuple[str, str]] = WorkQueue()
        self._workers: list[asyncio.Task[None]] = []
        self._queued: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ what is watched

    def on_cluster_event(self, type_: str | None, body: Mapping[str, Any]) -> None:
        """A HypersendCluster as the watch delivered it: kept for passes; a pass is woken when
        anything but its status changed."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta["name"]))
        if type_ == "DELETED":
            self._crs.pop(key, None)
            self._queued.discard(key)
            self.queue.forget(key)
            self.connections.forget(*key)
            metrics.forget_cluster(*key)
            return
        previous = self._crs.get(key)
        self._crs[key] = dict(body)
        if previous is None or _essence(previous) != _essence(body):
            # Triggers as metrics label them: seen at start, created, changed.
            trigger = {None: "resume", "ADDED": "create"}.get(type_, "update")
            self.wake(*key, 0.0, trigger)

    def on_child_event(self, type_: str, obj: Mapping[str, Any]) -> None:
        owner = _owner(obj)
        namespace = (obj.get("metadata") or {}).get("namespace")
        if owner and namespace:
            self.wake(namespace, owner, self.config.child_event_delay_seconds, "child")

    def known_clusters(self) -> list[tuple[str, str]]:
        return sorted(self._crs)

    def wake_all(self, trigger: str) -> None:
        for namespace, name in self.known_clusters():
            self.wake(namespace, name, 0.0, trigger)

    def capabilities(self) -> frozenset[str]:
        """The optional APIs the cluster serves, as the caches found them."""
        return frozenset(
            k.capability for k in WATCHED_CHILDREN if k.capability and self.children.served(k)
        )

    # ------------------------------------------------------------------ scheduling

    def start(self) -> None:
        """The workers that run the queued passes."""
        for n in range(self.config.workers):
            self._workers.append(asyncio.create_task(self._work(), name=f"pass-worker-{n}"))

    def wake(self, namespace: str, name: str, delay: float, trigger: str) -> None:
        """Queue a pass for this cluster after `delay` (coalesced with an earlier scheduled one)."""
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        existing = self._wakes.get(key)
        if existing is not None:
            if existing.when() <= loop.time() + delay:
                return
            existing.cancel()
            del self._wakes[key]
        if delay <= 0:
            self._enqueue(key, trigger)
            return

        def fire() -> None:
            self._wakes.pop(key, None)
            self._enqueue(key, trigger)

        self._wakes[key] = loop.call_later(delay, fire)

    def _enqueue(self, key: tuple[str, str], trigger: str) -> None:
        self.queue.add(key, trigger, priority_of(trigger))
        metrics.QUEUE_DEPTH.set(self.queue.waiting())

    async def _work(self) -> None:
        while True:
            key, trigger = await self.queue.get()
            metrics.QUEUE_DEPTH.set(self.queue.waiting())
            try:
                await self._woken(*key, trigger)
            finally:
                self.queue.done(key)

    async def resync_forever(self) -> None:
        """Every cluster gets a full pass each `resync_seconds`, spread over the period."""
        while True:
            clusters = self.known_clusters()
            period = self.config.resync_seconds
            for namespace, name in clusters:
                self.wake(namespace, name, random.uniform(0, period / 2), "resync")
            await asyncio.sleep(period)

    async def _woken(self, namespace: str, name: str, trigger: str) -> None:
        try:
            await self.run_pass(namespace, name, trigger)
        except NotLeader:
            log.info("pass for %s/%s stopped: no longer the leader", namespace, name)
        except Exception as e:  # retried here: a woken pass has nobody else to retry it
            log.warning("pass for %s/%s (%s) failed: %s; retrying", namespace, name, trigger, e)
            self.wake(namespace, name, self.config.requeue_degraded_seconds, "retry")

    # ------------------------------------------------------------------ one pass

    async def run_pass(self, namespace: str, name: str, trigger: str) -> None:
        if not self.leader():
            # The leader does the work; a new leader wakes every cluster (wake_all).
            metrics.RECONCILES.labels(trigger, "not_leader").inc()
            return
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            try:
                async with asyncio.timeout(self.config.cache_sync_timeout_seconds):
                    await self.children.wait_synced()
            except TimeoutError:
                # A watch that cannot list (RBAC, an API down) must not stop every cluster: the
                # pass reads what the caches lack with GETs and prunes nothing (cache.py).
                log.warning("child caches not synced; reading %s/%s from the API", namespace, name)
            try:
                await self._run_pass_locked(namespace, name, trigger)
            finally:
                self.slots.release((namespace, name))

    async def _current(self, namespace: str, name: str) -> Obj | None:
        cr = self._crs.get((namespace, name))
        if cr is None:  # woken before its watch event arrived (or just deleted)
            cr = await self.kube.get(API_VERSION, KIND, namespace, name)
            if cr is not None:
                self._crs[(namespace, name)] = cr
        return cr

    def _remember(self, obj: Obj | None) -> None:
        """The CR as this process just wrote it (so the next pass does not write it again), unless
        its watch already delivered a later version."""
        if obj:
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            cached = self._crs.get(key)
            if cached is None or is_newer(obj, cached):
                self._crs[key] = obj

    async def _run_pass_locked(self, namespace: str, name: str, trigger: str) -> None:
        started = time.monotonic()
        key = (namespace, name)
        try:
            cr = await self._current(namespace, name)
            if cr is None:
                metrics.forget_cluster(namespace, name)
                return
            if cr["metadata"].get("deletionTimestamp"):
                deleted = await reconcile.finalize(self.kube, cr)
                if deleted:
                    log.info("%s/%s deleted: removed PVCs %s", namespace, name, ", ".join(deleted))
                metrics.forget_cluster(namespace, name)
                return
            finalizers = reconcile.wanted_finalizers(cr)
            if finalizers != list(cr["metadata"].get("finalizers") or []):
                cr = await reconcile.set_finalizers(self.kube, cr, finalizers) or cr
                self._remember(cr)
            if not (cr.get("status") or {}).get("conditions"):
                # A brand-new CR (its status only the CRD's default) says at once, with
                # conditions, that work is under way (kstatus: InProgress).
                initial = reconcile.initial_status(cr)
                self._remember(await reconcile.write_status(self.kube, cr, initial))
                cr = {**cr, "status": initial}
            result = await reconcile.reconcile(
                self.kube,
                self.children,
                cr,
                capabilities=self.capabilities(),
                # Which clusters roll is only asked when this pass would start a fleet rollout.
                rollouts=reconcile.Rollouts(self.version, lambda: self._try_rollout(key)),
                connections=self.connections,
            )
            await reconcile.post_events(self.kube, cr, result.changes, result.warnings)
            await self._announce_queue(cr, result)
            self._remember(await reconcile.write_status(self.kube, cr, result.status))
            metrics.observe_cluster(namespace, name, result.status)
        except ApiError as e:
            metrics.RECONCILES.labels(trigger, "error").inc()
            metrics.RECONCILE_ERRORS.labels(f"api_{e.code}").inc()
            if e.conflict:
                self._crs.pop(key, None)  # a stale CR: the next pass reads it fresh
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

    def _try_rollout(self, key: tuple[str, str]) -> bool:
        deployments = self.children.objects("apps/v1", "Deployment")
        return self.slots.try_acquire(key, clusters_rolling(deployments, self.version))

    async def _announce_queue(self, cr: Mapping[str, Any], result: reconcile.Pass) -> None:
        """One Event when a cluster's rollout starts waiting for a slot (not one per pass)."""
        key = (cr["metadata"]["namespace"], cr["metadata"]["name"])
        announced = key in self._queued
        if result.queued_rollout:
            self._queued.add(key)
        else:
            self._queued.discard(key)
        metrics.QUEUED_ROLLOUTS.set(len(self._queued))
        if not result.queued_rollout or announced:
            return
        involved = {"apiVersion": API_VERSION, "kind": KIND, "metadata": cr["metadata"]}
        await self.kube.post_event(
            involved,
            "Normal",
            reconcile.ROLLOUT_QUEUED,
            f"pod template of operator {self.version} waits for a rollout slot: at most "
            f"{self.config.max_concurrent_rollouts} clusters roll at once",
        )

    async def stop(self) -> None:
        workers = list(self._workers)
        self.cancel_all()
        await asyncio.gather(*workers, return_exceptions=True)
        await self.connections.stop()

    def cancel_all(self) -> None:
        for handle in self._wakes.values():
            handle.cancel()
        self._wakes.clear()
        for task in self._workers:
            task.cancel()
        self._workers.clear()


def _owner(body: Mapping[str, Any]) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/"):
            return str(ref["name"])
    return None


def register(registry: kopf.OperatorRegistry, runner: Runner) -> None:
    """Attach the operator's handlers to `registry`.

    Only raw watch events: kopf then writes nothing to the CRs (no progress or diff-base
    annotations, no finalizer), so a replica that is not the leader stays read-only. What to do
    and when is the Runner's: passes, resyncs, the data finalizer (reconcile.finalize)."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="watch-clusters")
    async def on_cluster(type: str | None, body: kopf.Body, **_: Any) -> None:
        runner.on_cluster_event(type, body)
