"""Watch-fed caches of the objects the operator owns: what a reconcile pass reads.

One `Informer` per child kind (and per watched namespace, or one for all namespaces) lists and
watches with the server-side label selector of the operator's own label, so objects the operator
does not manage never reach this process (the API server filters them). A watch resumes from the
last resourceVersion it saw (bookmarks included); a 410 Gone relists, and the relist's diff
announces the objects deleted while no watch was running. A kind the cluster does not serve (an
optional API such as ServiceMonitor) is probed again every `probe_seconds`: whether it is served
is the cluster's capability for it.

Reads made while a cache has not synced yet fall back to a GET (`ChildCache.get`); afterwards a
pass costs no request for anything cached.

"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hypersend_operator.builders import OwnedKind
from hypersend_operator.builders import labels as lb
from hypersend_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
# Called for every change an informer sees: (event type, object).
OnEvent = Callable[[str, Obj], None]

# The label every child carries (builders/labels.py): the server-side selector of every watch.
OWNED_SELECTOR = f"{lb.MANAGED_BY_KEY}={lb.MANAGED_BY}"


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta["name"]))


def relist_changes(before: Mapping[Key, Obj], after: Mapping[Key, Obj]) -> list[tuple[str, Obj]]:
    """The events a relist stands for: objects that appeared, changed or went away since the
    previous view (what a watch would have delivered while it was down)."""
    events: list[tuple[str, Obj]] = []
    for key, obj in after.items():
        old = before.get(key)
        if old is None:
            events.append(("ADDED", obj))
        elif _version(old) != _version(obj):
            events.append(("MODIFIED", obj))
    events.extend(("DELETED", obj) for key, obj in before.items() if key not in after)
    return events


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def is_newer(obj: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Whether `obj` is a later version of the same object than `than`. resourceVersions are
    opaque to clients, but every API server backed by etcd gives integers that grow; anything
    else is taken as not newer (the watch's copy wins)."""
    try:
        return int(_version(obj)) > int(_version(than))
    except ValueError:
        return False


@dataclass(frozen=True)
class WatchTiming:
    # The server ends each watch after this long; the informer resumes from its version.
    server_timeout_seconds: int = 240
    # After an error other than 410: wait, growing up to the cap, then watch again.
    first_retry_seconds: float = 0.5
    max_retry_seconds: float = 30.0
    # How often a kind the cluster does not serve is probed again.
    probe_seconds: float = 300.0


class Informer:
    """List + watch of one kind in one namespace (or all), filtered by label on the server."""

    def __init__(
        self,
        kube: Kube,
        owned: OwnedKind,
        namespace: str | None,
        on_event: OnEvent,
        *,
        selector: str = OWNED_SELECTOR,
        timing: WatchTiming = WatchTiming(),
    ) -> None:
        self.kube = kube
        self.owned = owned
        self.namespace = namespace
        self.selector = selector
        self.timing = timing
        self._on_event = on_event
        self._objects: dict[Key, Obj] = {}
        # The same objects by namespace: a pass reads one cluster's namespace, not the fleet's.
        self._by_namespace: dict[str, dict[Key, Obj]] = {}
        self._version = ""
        self.synced = asyncio.Event()
        # None until the first list answered; False while the cluster does not serve the kind.
        self.served: bool | None = None

    def __repr__(self) -> str:
        return f"Informer({self.owned.kind}, {self.namespace or '*'})"

    # ------------------------------------------------------------------ reads

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._objects.get((namespace, name))

    def objects(self) -> Iterable[Obj]:
        return self._objects.values()

    def objects_in(self, namespace: str) -> Iterable[Obj]:
        return self._by_namespace.get(namespace, {}).values()

    def _put(self, obj: Obj) -> None:
        key = key_of(obj)
        self._objects[key] = obj
        self._by_namespace.setdefault(key[0], {})[key] = obj

    def _drop(self, key: Key) -> None:
        self._objects.pop(key, None)
        in_namespace = self._by_namespace.get(key[0])
        if in_namespace is not None:
            in_namespace.pop(key, None)
            if not in_namespace:
                del self._by_namespace[key[0]]

    def _replace(self, fresh: dict[Key, Obj]) -> None:
        self._objects = fresh
        self._by_namespace = {}
        for key, obj in fresh.items():
            self._by_namespace.setdefault(key[0], {})[key] = obj

    def record(self, obj: Obj) -> None:
        """An object this process just wrote, as the server returned it: visible to the next
        pass before its watch event arrives. Never over a newer version the watch already
        delivered (a status update can overtake the write's answer)."""
        key = key_of(obj)
        cached = self._objects.get(key)
        if cached is None or is_newer(obj, cached):
            self._put(obj)

    def forget(self, namespace: str, name: str) -> None:
        self._drop((namespace, name))

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """List, then watch from the list's version, forever (until cancelled)."""
        delay = self.timing.first_retry_seconds
        need_list = True
        while True:
            try:
                if need_list:
                    if not await self._relist():
                        await asyncio.sleep(self.timing.probe_seconds)
                        continue
                    need_list = False
                await self._watch()
                delay = self.timing.first_retry_seconds
            except ApiError as e:
                if e.code == 410:
                    log.info("%r: version %s expired; relisting", self, self._version)
                    need_list = True
                    continue
                log.warning("%r: %s; watching again in %.1fs", self, e, delay)
                if e.not_found:
                    need_list = True  # the kind went away (a CRD deleted): probe it again
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.timing.max_retry_seconds)

    async def _relist(self) -> bool:
        """Replace the view with a fresh list; False when the cluster does not serve the kind."""
        try:
            items, version = await self.kube.list_versioned(
                self.owned.api_version, self.owned.kind, self.namespace, self.selector
            )
        except ApiError as e:
            if not e.not_found:
                raise
            if self.served is not False:
                log.info("%r: %s is not served by this cluster", self, self.owned.api_version)
            self.served = False
            self._replace({})
            self.synced.set()  # "nothing of this kind" is a complete answer
            return False
        fresh = {key_of(obj): obj for obj in items}
        events = relist_changes(self._objects, fresh) if self.synced.is_set() else []
        self._replace(fresh)
        self._version = version
        self.served = True
        self.synced.set()
        for type_, obj in events:
            self._on_event(type_, obj)
        return True

    async def _watch(self) -> None:
        async for type_, obj in self.kube.watch(
            self.owned.api_version,
            self.owned.kind,
            self.namespace,
            self.selector,
            self._version,
            timeout_seconds=self.timing.server_timeout_seconds,
        ):
            version = _version(obj)
            if version:
                self._version = version
            if type_ == "BOOKMARK":
                continue
            if type_ == "DELETED":
                self._drop(key_of(obj))
            else:
                self._put(obj)
            self._on_event(type_, obj)


class ChildCache:
    """The informers of every watched kind, and the reads a pass makes through them."""

    def __init__(
        self,
        kube: Kube,
        kinds: Iterable[OwnedKind],
        namespaces: Iterable[str] | None,
        on_event: OnEvent,
        timing: WatchTiming = WatchTiming(),
    ) -> None:
        self.kube = kube
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self._informers: dict[tuple[str, str], list[Informer]] = {}
        for owned in kinds:
            self._informers[(owned.api_version, owned.kind)] = [
                Informer(kube, owned, ns, on_event, timing=timing) for ns in scopes
            ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for informers in self._informers.values():
            for informer in informers:
                self._tasks.append(asyncio.create_task(informer.run(), name=repr(informer)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def wait_synced(self) -> None:
        """Until every informer has listed once (a pass never plans from a half-filled cache)."""
        for informers in self._informers.values():
            for informer in informers:
                await informer.synced.wait()

    def informer(self, api_version: str, kind: str, namespace: str) -> Informer | None:
        for informer in self._informers.get((api_version, kind), []):
            if informer.namespace in (None, namespace):
                return informer
        return None

    def served(self, owned: OwnedKind) -> bool:
        """Whether the cluster serves this kind, as its informers last found (False before)."""
        informers = self._informers.get((owned.api_version, owned.kind), [])
        return any(i.served for i in informers)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object as cached; a GET only when no synced cache covers it."""
        informer = self.informer(api_version, kind, namespace)
        if informer is not None and informer.synced.is_set():
            return informer.get(namespace, name)
        return await self.kube.get(api_version, kind, namespace, name)

    async def confirm(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object as cached; absence confirmed with a GET (an object of that name without our
        label is invisible to the watch)."""
        informer = self.informer(api_version, kind, namespace)
        if informer is not None and informer.synced.is_set():
            found = informer.get(namespace, name)
            if found is not None:
                return found
        return await self.kube.get(api_version, kind, namespace, name)

    def owned_by(self, namespace: str, cluster: str, uid: str) -> list[Obj] | None:
        """Every cached child of one cluster (its instance label and an owner reference to it);
        None while a cache that could hold some has not synced."""
        found = []
        for informers in self._informers.values():
            for informer in informers:
                if informer.namespace not in (None, namespace):
                    continue
                if not informer.synced.is_set():
                    return None
                for obj in informer.objects_in(namespace):
                    meta = obj.get("metadata") or {}
                    if (meta.get("labels") or {}).get(lb.INSTANCE) != cluster:
                        continue
                    owners = meta.get("ownerReferences") or []
                    if any(o.get("uid") == uid for o in owners):
                        found.append(obj)
        return found

    def record(self, obj: Obj) -> None:
        informer = self.informer(obj["apiVersion"], obj["kind"], key_of(obj)[0])
        if informer is not None and _is_owned(obj):
            informer.record(obj)

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        informer = self.informer(api_version, kind, namespace)
        if informer is not None:
            informer.forget(namespace, name)

    def objects(self, api_version: str, kind: str) -> list[Obj]:
        informers = self._informers.get((api_version, kind), [])
        return [obj for informer in informers for obj in informer.objects()]


def _is_owned(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(lb.MANAGED_BY_KEY) == lb.MANAGED_BY


@dataclass(frozen=True)
class Kept:
    """A metric read: when (the event loop's clock) and what (None: the read failed)."""

    read_at: float
    items: list[Obj] | None


def due(kept: Kept | None, now: float, max_age: float) -> bool:
    """Whether a value is to be read (again) at `now`: never read, or older than `max_age`."""
    return kept is None or now - kept.read_at > max_age


def metric_values(items: list[Obj] | None) -> list[tuple[str, str]] | None:
    """What of a MetricValueList the status shows: (pod, value) pairs in pod order."""
    if items is None:
        return None
    return sorted(
        (str((i.get("describedObject") or {}).get("name")), str(i.get("value"))) for i in items
    )


def worth_a_pass(before: Kept | None, found: list[Obj] | None) -> bool:
    """Whether a new read changes what a pass would write: the first read always does; later
    ones when a pod's value changed, a pod came or went, or the value became (un)known."""
    return before is None or metric_values(before.items) != metric_values(found)


class PodMetricCache:
    """The chat pods' values of one custom metric (the connections the HPA scales on), read in
    the background: a pass takes the last value and never waits on the metrics API, which can
    take seconds per read when it serves many pods. A value older than `max_age` is read again
    (at most `concurrency` reads at once); `on_change(namespace, cluster)` follows a new value.
    A failed read leaves the value unknown (None), never a stale or empty one."""

    def __init__(
        self,
        kube: Kube,
        metric: str,
        on_change: Callable[[str, str], None],
        *,
        max_age: float = 10.0,
        concurrency: int = 4,
    ) -> None:
        self.kube = kube
        self.metric = metric
        self.max_age = max_age
        self._on_change = on_change
        self._values: dict[tuple[str, str], Kept] = {}
        self._reading: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(concurrency)

    def current(self, namespace: str, cluster: str, selector: str | None) -> list[Obj] | None:
        """The last value read (None: not known yet, or the last read failed); a read starts in
        the background when it is due."""
        if selector is None:
            return None
        key = (namespace, cluster)
        kept = self._values.get(key)
        now = asyncio.get_running_loop().time()
        if due(kept, now, self.max_age) and key not in self._reading:
            task = asyncio.create_task(self._read(namespace, cluster, selector))
            self._reading[key] = task
            task.add_done_callback(lambda _: self._reading.pop(key, None))
        return None if kept is None else kept.items

    async def _read(self, namespace: str, cluster: str, selector: str) -> None:
        async with self._limit:
            try:
                found: list[Obj] | None = await self.kube.pod_metric(
                    namespace, self.metric, selector
                )
            except ApiError as e:
                log.debug("%s of %s/%s unknown: %s", self.metric, namespace, cluster, e)
                found = None
        key = (namespace, cluster)
        before = self._values.get(key)
        self._values[key] = Kept(asyncio.get_running_loop().time(), found)
        if worth_a_pass(before, found):
            self._on_change(namespace, cluster)

    def forget(self, namespace: str, cluster: str) -> None:
        self._values.pop((namespace, cluster), None)

    async def stop(self) -> None:
        tasks = list(self._reading.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
