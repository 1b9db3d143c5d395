"""The only module that talks to the Kubernetes API server.

Plain dicts in, plain dicts out: server-side apply under the field manager `hypersend-operator`,
reads that say "absent" as None, creates and optimistic replaces, deletes, status patches, Events,
lists with their resourceVersion and watches. Everything goes through lightkube's public async
client (`lightkube.AsyncClient`): connection settings (kubeconfig, in-cluster service account,
exec plugins, TLS) come from `KubeConfig`, and every kind is a lightkube *generic* resource, a dict
subclass, so an object round-trips with every field (status, managedFields, fields newer than any
model) instead of through typed models that drop what they do not know.

Where a kind lives (plural, scope) without raw discovery: lightkube's public client cannot GET a
discovery document (`/apis/<group>/<version>`: no raw request, and a resource path always ends in a
plural), so
- built-in kinds take plural and scope from lightkube-models' resource definitions, which are
  generated from the Kubernetes OpenAPI spec (`lightkube.resources.<group>_<version>`);
- everything else comes from the CustomResourceDefinitions (one list, cached, read again for an
  unknown kind at most every CRD_RELOAD_SECONDS). The operator's ClusterRole already reads CRDs
  (the chart's `clusterRules`); kinds the caller already knows can be given with `add_kinds`.
  Whether an optional API (ServiceMonitor, PrometheusRule) is served is not asked here: it is
  whether the informer's list of that kind answered (cache.py).
The custom metrics API (`/apis/custom.metrics.k8s.io/<v>/namespaces/<ns>/pods/*/<metric>`) is read
as a `list` of a generic resource whose plural is `pods/*/<metric>`: lightkube builds exactly that
path, adds the labelSelector, and decodes the MetricValueList's items.

Transient failures (no response, timeouts, 429, 5xx) are retried here with exponential backoff;
everything else surfaces as `ApiError`. httpx2 (lightkube's HTTP library, declared in
pyproject.toml) is imported only for its timeout type and to name transport errors.

Requests are counted per verb and kind (`metrics.API_REQUESTS`), one per HTTP request we send.
Lists are sent unpaginated (one request each) so the count is exact; a watch stream is ended by us
before the server's `timeoutSeconds`, because lightkube reopens a stream the server ends, out of our
sight. lightkube's watch takes no `allowWatchBookmarks`, so no BOOKMARK events are asked for;
`watch` passes one on if it ever arrives.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import secrets as pysecrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import httpx2
from lightkube import ALL_NS, AsyncClient, operators
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core import resource as lk_resource
from lightkube.core.exceptions import ApiError as LightkubeApiError
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericNamespacedResource,
    create_global_resource,
    create_namespaced_resource,
    get_generic_resource,
)
from lightkube.types import CascadeType, OnErrorAction, OnErrorResult, PatchType

from hypersend_operator import metrics
from hypersend_operator.apiversion import GroupVersion, split_api_version
from hypersend_operator.drift import FIELD_MANAGER

COMPONENT = "hypersend-operator"
LEASE_API_VERSION = "coordination.k8s.io/v1"
CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
# Newest first: the test adapter serves v1beta2, prometheus-adapter v1beta1
# (tools/hypersend_devenv/metrics_adapter.py, tools/hypersend_devenv/metrics.py).
CUSTOM_METRICS_VERSIONS = ("v1beta2", "v1beta1")
# An unknown kind re-reads the CRDs at most this often (a CRD installed after start is found).
CRD_RELOAD_SECONDS = 30.0
# An endless watch is cut into streams this long (each one request), resumed from the last version.
WATCH_SEGMENT_SECONDS = 290
# The server's own timeout is later than ours, so it never ends a stream lightkube would reopen.
WATCH_SERVER_MARGIN_SECONDS = 60

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")
Objs = list[Obj]  # `list` is also a method name inside Kube
LabelSelector = dict[str, Any]  # lightkube's: label -> operator


class ApiError(Exception):
    """A failed API request, with the server's status code, reason and message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        # 0 = no HTTP response at all (connection refused/reset, timeout).
        return self.code in (0, 408, 429, 500, 502, 503, 504)

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409


class NotLeader(Exception):
    """A write refused before it was sent: this replica does not hold the leader Lease."""


@dataclass(frozen=True)
class Kind(GroupVersion):
    """Where a kind lives on the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if namespace is None:
                raise ValueError(f"{self.kind} is namespaced; a namespace is required")
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


@dataclass(frozen=True)
class Backoff:
    attempts: int = 5
    first_delay: float = 0.2
    max_delay: float = 5.0


async def retry_transient(call: Callable[[], Awaitable[T]], backoff: Backoff = Backoff()) -> T:
    """Run `call`, retrying transient API errors with exponential backoff."""
    delay = backoff.first_delay
    for attempt in range(1, backoff.attempts + 1):
        try:
            return await call()
        except ApiError as e:
            if not e.transient or attempt == backoff.attempts:
                raise
            log.warning(
                "transient API error (attempt %d): %s; retrying in %.1fs", attempt, e, delay
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff.max_delay)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- pure helpers

_SELECTOR_TERM = re.compile(
    r"""\s*(?:
        (?P<not>!)\s*(?P<nkey>[^\s!=,()]+)                                  # !key
      | (?P<skey>[^\s!=,()]+)\s+(?P<sop>in|notin)\s*\((?P<values>[^)]*)\)   # key in (a,b)
      | (?P<bkey>[^\s!=,()]+)\s*(?P<bop>==|=|!=)\s*(?P<value>[^\s!=,()]*)     # key=value
      | (?P<ekey>[^\s!=,()]+)                                               # key
    )\s*(?:,|$)""",
    re.VERBOSE,
)


def parse_label_selector(selector: str) -> LabelSelector:
    """A label selector string as lightkube's {label: operator}, which it encodes back to the same
    selector (lightkube's list and watch take no raw selector string). A label may appear once."""
    pairs: list[tuple[str, operators.Operator[Any]]] = []
    pos = 0
    text = selector.strip()
    while pos < len(text):
        m = _SELECTOR_TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"invalid label selector {selector!r} at {pos}")
        pos = m.end()
        if m["nkey"]:
            pairs.append((m["nkey"], operators.not_exists()))
        elif m["skey"]:
            values = [v.strip() for v in m["values"].split(",") if v.strip()]
            seq = operators.in_(values) if m["sop"] == "in" else operators.not_in(values)
            pairs.append((m["skey"], seq))
        elif m["bkey"]:
            value = m["value"]
            op = operators.not_equal(value) if m["bop"] == "!=" else operators.equal(value)
            pairs.append((m["bkey"], op))
        else:
            pairs.append((m["ekey"], operators.exists()))
    parsed = dict(pairs)
    if len(parsed) != len(pairs):
        raise ValueError(f"label selector {selector!r} names a label twice")
    return parsed


def builtin_kind(api_version: str, kind: str) -> Kind | None:
    """Plural and scope of a built-in kind from lightkube-models' generated resources, or None
    when lightkube-models has no such kind (custom resources, aggregated APIs)."""
    group, version = split_api_version(api_version)
    # Built-in groups are the core group, *.k8s.io and the dotless ones (apps, batch, policy...).
    if "." in group and not group.endswith(".k8s.io"):
        return None
    module = (group.removesuffix(".k8s.io").replace(".", "_") or "core") + "_" + version
    try:
        resources = importlib.import_module(f"lightkube.resources.{module.lower()}")
    except ImportError:
        return None
    cls = getattr(resources, kind, None)
    if not isinstance(cls, type) or not issubclass(cls, lk_resource.Resource):
        return None
    info = lk_resource.api_info(cls)
    if info.parent is not None or info.resource.kind != kind:
        return None  # a subresource (DeploymentStatus, PodLog...), not an object kind
    return Kind(api_version, kind, info.plural, issubclass(cls, lk_resource.NamespacedResource))


def crd_kinds(crd: Mapping[str, Any]) -> list[Kind]:
    """The kinds a CustomResourceDefinition serves (one per served version), once Established."""
    spec = crd.get("spec", {})
    conditions = crd.get("status", {}).get("conditions") or []
    if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
        return []
    names = spec.get("names", {})
    return [
        Kind(
            f"{spec['group']}/{v['name']}",
            names["kind"],
            names["plural"],
            spec.get("scope") == "Namespaced",
        )
        for v in spec.get("versions", [])
        if v.get("served")
    ]


def event_manifest(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, instance: str
) -> Obj:
    """A core/v1 Event about `involved`."""
    meta = involved["metadata"]
    namespace = meta.get("namespace") or "default"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{pysecrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _api_error(e: Exception) -> ApiError:
    """lightkube's and httpx2's failures as our ApiError (0 = no HTTP response)."""
    if isinstance(e, LightkubeApiError):
        status = e.status
        code = status.code or (e.response.status_code if e.response is not None else 0)
        return ApiError(code, status.reason or "", status.message or "")
    if isinstance(e, httpx2.HTTPStatusError):
        resp = e.response
        try:
            text = resp.text[:500]
        except httpx2.ResponseNotRead:  # a streamed (watch) response: its body was not read
            text = ""
        return ApiError(resp.status_code, resp.reason_phrase, text)
    return ApiError(0, type(e).__name__, str(e) or type(e).__name__)


def generic_resource(k: Kind, verbs: list[str] | None = None) -> _Resource:
    """lightkube's generic resource class for a kind, made once per process (lightkube keeps a
    process-wide registry; its `create_*_resource` does not find core-group ones again)."""
    res = get_generic_resource(k.api_version, k.kind)  # type: ignore[no-untyped-call]
    if res is None:
        create = create_namespaced_resource if k.namespaced else create_global_resource
        res = create(k.group, k.version, k.kind, k.plural, verbs=verbs)
    if not issubclass(res, GenericNamespacedResource | GenericGlobalResource):
        # lightkube's typed model is registered for this kind: objects would not be dicts.
        raise RuntimeError(f"{k.api_version} {k.kind} is registered as a typed model")
    return res


def _load_config(kubeconfig: str | None) -> SingleConfig:
    loaded = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    config = loaded.get()
    if config is None:
        raise RuntimeError(
            "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config, in-cluster)"
        )
    return config


def _raise_on_watch_error(e: Exception, count: int) -> OnErrorResult:
    # lightkube would otherwise restart the watch itself, from scratch after a 410: the caller
    # (an informer) must see the error to relist.
    return OnErrorResult(OnErrorAction.RAISE)


# A generic resource class, made at run time: lightkube's overloads can't type it statically.
_Resource = Any


class Kube:
    """An async Kubernetes API client for the operator's needs."""

    def __init__(
        self,
        client: AsyncClient,
        backoff: Backoff = Backoff(),
        fence: Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        self._backoff = backoff
        self._fence = fence
        self._kinds: dict[tuple[str, str], Kind] = {}
        self._resources: dict[Kind, _Resource] = {}
        self._crd_kinds: dict[tuple[str, str], Kind] | None = None
        self._crds_at = 0.0
        self._discovery_lock = asyncio.Lock()
        self._metrics_versions = list(CUSTOM_METRICS_VERSIONS)

    @classmethod
    def from_env(
        cls,
        kubeconfig: str | None = None,
        timeout: float = 15.0,
        fence: Callable[[], bool] | None = None,
    ) -> Kube:
        """Connect like kubectl: explicit file, KUBECONFIG, in-cluster, ~/.kube/config."""
        config = _load_config(kubeconfig or os.environ.get("KUBECONFIG"))
        client = AsyncClient(config=config, timeout=httpx2.Timeout(timeout), trust_env=False)
        return cls(client, fence=fence)

    def add_kinds(self, *kinds: Kind) -> None:
        """Kinds the caller knows (its own CRD's, from crd.py and builders.owned_kinds()): found
        without reading CustomResourceDefinitions, so even without RBAC to read them."""
        for k in kinds:
            self._kinds[(k.api_version, k.kind)] = k

    def set_fence(self, fence: Callable[[], bool] | None) -> None:
        """`fence()` is asked before every write (but the leader Lease's own); False refuses it."""
        self._fence = fence

    async def close(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------ plumbing

    def _check_fence(self, api_version: str, kind: str) -> None:
        if kind == "Lease" and api_version == LEASE_API_VERSION:
            return  # the elector's own writes: how it becomes and stays leader
        if self._fence is not None and not self._fence():
            raise NotLeader(f"not the leader: refusing to write {api_version} {kind}")

    async def _send(
        self,
        verb: str,
        kind: str,
        call: Callable[[], Awaitable[T]],
        *,
        write: tuple[str, str] | None = None,
        fence: tuple[str, str] | None = None,
        retry: bool = True,
    ) -> T | None:
        """One request, counted, with transient retries (unless `retry` is False). None for 404;
        ApiError for other failures. `fence` = (apiVersion, kind) of a write, checked before
        every attempt so a replica that lost the lease mid-retry stops."""

        async def once() -> T | None:
            if fence is not None:
                self._check_fence(*fence)
            metrics.API_REQUESTS.labels(verb, kind).inc()
            if write is not None:
                metrics.API_WRITES.labels(*write).inc()
            try:
                return await call()
            except (LightkubeApiError, httpx2.HTTPError) as e:
                err = _api_error(e)
            if err.not_found:
                return None
            if err.code == 403:
                # A caller may turn it into status; the log keeps missing RBAC visible (the RBAC
                # tests read it).
                log.warning("Forbidden: %s %s: %s", verb, kind, err.message)
            raise err

        return await retry_transient(once, self._backoff) if retry else await once()

    def _resource(self, k: Kind) -> _Resource:
        """The generic resource class for a kind (lightkube registers it process-wide)."""
        res = self._resources.get(k)
        if res is None:
            res = generic_resource(k)
            self._resources[k] = res
        return res

    # ------------------------------------------------------------------ discovery

    async def kind(self, api_version: str, kind: str) -> Kind:
        """Plural and scope of a kind: built-in from lightkube-models, custom from its CRD."""
        key = (api_version, kind)
        found = self._kinds.get(key)
        if found is not None:
            return found
        found = builtin_kind(api_version, kind)
        if found is None:
            async with self._discovery_lock:
                stale = time.monotonic() - self._crds_at > CRD_RELOAD_SECONDS
                if self._crd_kinds is None or (key not in self._crd_kinds and stale):
                    await self._load_crds()
            assert self._crd_kinds is not None
            found = self._crd_kinds.get(key)
        if found is None:
            raise ApiError(404, "KindNotServed", f"{kind} is not served by {api_version}")
        self._kinds[key] = found
        return found

    async def _load_crds(self) -> dict[tuple[str, str], Kind]:
        crd = Kind(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=False,
        )
        kinds: dict[tuple[str, str], Kind] = {}
        for obj in await self._list(crd, None, None):
            for k in crd_kinds(obj):
                kinds[(k.api_version, k.kind)] = k
        self._crd_kinds = kinds
        self._crds_at = time.monotonic()
        self._kinds.update(kinds)  # a CRD's current plural and scope win over an older lookup
        return kinds

    # ------------------------------------------------------------------ metrics

    async def pod_metric(self, namespace: str, metric: str, label_selector: str) -> Objs:
        """The pods' values of a custom metric (custom.metrics.k8s.io, v1beta2 or else v1beta1,
        the version that answered last first). Tried once per version: an adapter that is down
        must not stall a reconcile pass; the caller treats ApiError as "unknown"."""
        labels = parse_label_selector(label_selector)
        for version in list(self._metrics_versions):
            path = Kind(
                f"{CUSTOM_METRICS_GROUP}/{version}",
                f"MetricValueList.{metric}",
                f"pods/*/{metric}",
                namespaced=True,
            )
            res = generic_resource(path, verbs=["list"])

            def read(res: Any = res) -> Awaitable[tuple[Objs, str]]:
                listed = self._client.list(res, namespace=namespace, labels=labels)
                return self._collect(listed, versioned=False)

            # GET .../pods/*/<metric>: a named read (RBAC verb get), counted as one.
            listed = await self._send("get", "MetricValueList", read, retry=False)
            if listed is not None:
                if version != self._metrics_versions[0]:
                    self._metrics_versions.remove(version)
                    self._metrics_versions.insert(0, version)
                return listed[0]
        raise ApiError(404, "NotFound", f"no {metric} for pods in {namespace}")

    # ------------------------------------------------------------------ reads

    @staticmethod
    async def _collect(iterable: Any, versioned: bool = True) -> tuple[Objs, str]:
        items = [dict(item) async for item in iterable]
        # A MetricValueList has no resourceVersion (lightkube raises when asked for it).
        return items, str(iterable.resourceVersion) if versioned else ""

    @staticmethod
    def _namespace(k: Kind, namespace: str | None, *, all_if_none: bool = False) -> str | None:
        """lightkube's namespace argument: ignored for cluster-scoped kinds; lightkube would read
        None as the kubeconfig's namespace, so None is refused, or is every namespace in lists."""
        if not k.namespaced:
            return None
        if namespace is None:
            if all_if_none:
                return str(ALL_NS)
            raise ValueError(f"{k.kind} is namespaced; a namespace is required")
        return namespace

    async def _list_versioned(
        self, k: Kind, namespace: str | None, label_selector: str | None
    ) -> tuple[Objs, str]:
        res = self._resource(k)
        labels = parse_label_selector(label_selector) if label_selector else None
        found = await self._send(
            "list",
            k.kind,
            lambda: self._collect(
                self._client.list(
                    res, labels=labels, namespace=self._namespace(k, namespace, all_if_none=True)
                )
            ),
        )
        if found is None:
            raise ApiError(404, "NotFound", f"{k.kind} is not served or {namespace} is gone")
        items, version = found
        for item in items:
            item.setdefault("apiVersion", k.api_version)
            item.setdefault("kind", k.kind)
        return items, version

    async def _list(self, k: Kind, namespace: str | None, label_selector: str | None) -> Objs:
        return (await self._list_versioned(k, namespace, label_selector))[0]

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        k = await self.kind(api_version, kind)
        res = self._resource(k)
        ns = self._namespace(k, namespace)
        obj = await self._send("get", kind, lambda: self._client.get(res, name, namespace=ns))
        return None if obj is None else dict(obj)

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> Objs:
        """Every object of a kind (in `namespace`, or all namespaces for None)."""
        return await self._list(await self.kind(api_version, kind), namespace, label_selector)

    async def list_versioned(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
    ) -> tuple[Objs, str]:
        """The objects and the list's resourceVersion, to watch from (None = all namespaces)."""
        k = await self.kind(api_version, kind)
        return await self._list_versioned(k, namespace, label_selector)

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None,
        resource_version: str,
        timeout_seconds: int | None = None,
    ) -> AsyncGenerator[tuple[str, Obj], None]:
        """(event type, object) after `resource_version`: ADDED, MODIFIED, DELETED (and BOOKMARK
        if one comes). Ends after `timeout_seconds` (None: never, re-watching every
        WATCH_SEGMENT_SECONDS from the last version seen). ApiError 410 when that version is
        too old (relist), ApiError 0 when the connection drops, others as the server says."""
        k = await self.kind(api_version, kind)
        res = self._resource(k)
        labels = parse_label_selector(label_selector) if label_selector else None
        version = resource_version
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            segment = float(WATCH_SEGMENT_SECONDS)
            if deadline is not None:
                segment = deadline - time.monotonic()
                if segment <= 0:
                    return
            metrics.API_REQUESTS.labels("watch", kind).inc()
            # Declared an AsyncIterable; it is an async generator, closed below.
            stream = cast(
                AsyncGenerator[tuple[str, Any], None],
                self._client.watch(
                    res,
                    labels=labels,
                    resource_version=version,
                    server_timeout=int(segment) + WATCH_SERVER_MARGIN_SECONDS,
                    on_error=_raise_on_watch_error,
                    namespace=self._namespace(k, namespace, all_if_none=True),
                ),
            )
            events = aiter(stream)
            end = time.monotonic() + segment
            try:
                while True:
                    # A timeout per read, never across `yield`: it would cancel the consumer.
                    try:
                        async with asyncio.timeout(end - time.monotonic()):
                            event_type, obj = await anext(events)
                    except (TimeoutError, StopAsyncIteration):
                        break  # our segment ended; a new request resumes from `version`
                    item = dict(obj)
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                    metrics.WATCH_EVENTS.labels(kind, event_type).inc()
                    metrics.WATCH_BYTES.labels(kind).inc(
                        len(json.dumps(item, separators=(",", ":")))
                    )
                    version = item.get("metadata", {}).get("resourceVersion") or version
                    yield event_type, item
            except (LightkubeApiError, httpx2.HTTPError) as e:
                raise _api_error(e) from e
            finally:
                await stream.aclose()

    # ------------------------------------------------------------------ writes

    async def apply(
        self, manifest: Mapping[str, Any], *, force: bool = True, manager: str = FIELD_MANAGER
    ) -> Obj:
        """Server-side apply `manifest` as `manager`, taking over fields we declare."""
        meta = manifest["metadata"]
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        res = self._resource(k)
        ns = self._namespace(k, meta.get("namespace"))
        result = await self._send(
            "apply",
            k.kind,
            lambda: self._client.patch(
                res,
                meta["name"],
                dict(manifest),
                patch_type=PatchType.APPLY,
                field_manager=manager,
                force=force,
                namespace=ns,
            ),
            write=("patch", k.kind),
            fence=(k.api_version, k.kind),
        )
        if result is None:  # 404 on apply: the namespace is gone
            raise ApiError(404, "NotFound", f"namespace {meta.get('namespace')} not found")
        return dict(result)

    async def merge_patch(self, manifest: Mapping[str, Any]) -> Obj | None:
        """JSON merge patch of `manifest` onto the live object: maps merge key by key, lists are
        replaced whole. Used to take back list entries another field manager now owns, which
        server-side apply leaves in place by design. None when the object is gone."""
        meta = manifest["metadata"]
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        return await self._merge_patch(
            k,
            self._resource(k),
            meta.get("namespace"),
            meta["name"],
            dict(manifest),
            written=k.kind,
            manager=FIELD_MANAGER,
        )

    async def create(self, manifest: Mapping[str, Any]) -> Obj:
        """POST a new object; ApiError 409 when it exists. Not retried: after a lost response
        the retry would see its own object as someone else's (409)."""
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        obj = self._resource(k)(dict(manifest))
        result = await self._send(
            "create",
            k.kind,
            lambda: self._client.create(obj, field_manager=FIELD_MANAGER),
            write=("post", k.kind),
            fence=(k.api_version, k.kind),
            retry=False,
        )
        if result is None:
            raise ApiError(404, "NotFound", f"namespace {manifest['metadata'].get('namespace')}")
        return dict(result)

    async def replace(self, manifest: Mapping[str, Any]) -> Obj:
        """PUT the whole object. With metadata.resourceVersion set, ApiError 409 when the live
        object has moved on (optimistic concurrency); ApiError 404 when it is gone. Not retried,
        for the same reason as `create`."""
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        obj = self._resource(k)(dict(manifest))
        result = await self._send(
            "update",
            k.kind,
            lambda: self._client.replace(obj, field_manager=FIELD_MANAGER),
            write=("put", k.kind),
            fence=(k.api_version, k.kind),
            retry=False,
        )
        if result is None:
            raise ApiError(404, "NotFound", f"{k.kind} {manifest['metadata']['name']} is gone")
        return dict(result)

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete; False when it was already gone."""
        k = await self.kind(api_version, kind)
        res = self._resource(k)
        ns = self._namespace(k, namespace)

        async def delete() -> bool:
            await self._client.delete(res, name, cascade=CascadeType(propagation), namespace=ns)
            return True

        result = await self._send(
            "delete",
            kind,
            delete,
            write=("delete", k.kind),
            fence=(k.api_version, k.kind),
        )
        return bool(result)

    async def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Obj
    ) -> Obj | None:
        """Merge-patch the status subresource. None when the object is gone."""
        k = await self.kind(api_version, kind)
        return await self._merge_patch(
            k,
            self._resource(k).Status,
            namespace,
            name,
            {"status": status},
            written=k.kind + "/status",
            manager=None,
        )

    async def _merge_patch(
        self,
        k: Kind,
        res: _Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        written: str,
        manager: str | None,
    ) -> Obj | None:
        """One JSON merge patch of `res` (the object, or its status subresource), fenced and
        counted as a write of `written`. None when the object is gone."""
        ns = self._namespace(k, namespace)
        result = await self._send(
            "patch",
            k.kind,
            lambda: self._client.patch(
                res,
                name,
                body,
                patch_type=PatchType.MERGE,
                field_manager=manager,
                namespace=ns,
            ),
            write=("patch", written),
            fence=(k.api_version, k.kind),
        )
        return None if result is None else dict(result)

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `involved` (never secret values: callers pass names only).
        Best effort, but refused like every write when this replica is not the leader."""
        event = event_manifest(
            involved, type_, reason, message, os.environ.get("HOSTNAME", COMPONENT)
        )
        k = await self.kind("v1", "Event")
        obj = self._resource(k)(event)
        try:
            await self._send(
                "create",
                "Event",
                lambda: self._client.create(obj),
                write=("post", "Event"),
                fence=("v1", "Event"),
            )
        except ApiError as e:
            # Events are best effort: a lost event must not fail a reconcile.
            log.warning("could not post event %s: %s", reason, e)
