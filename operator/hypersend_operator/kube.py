"""The only module that talks to the Kubernetes API server.

Plain dicts in, plain dicts out: server-side apply under the field manager `hypersend-operator`,
reads that say "absent" as None, deletes, status patches, Events and discovery. Connection settings
(kubeconfig, in-cluster service account, exec plugins, TLS) come from lightkube's config loader;
requests go through its httpx2 client. Transient failures (connection errors, timeouts, 429, 5xx)
are retried here with exponential backoff; everything else surfaces as `ApiError`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets as pysecrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx2
from lightkube.config.client_adapter import ConnectionParams, user_auth, verify_cluster
from lightkube.config.kubeconfig import KubeConfig, SingleConfig

from hypersend_operator import metrics
from hypersend_operator.drift import FIELD_MANAGER

COMPONENT = "hypersend-operator"

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")


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


def _fenced(method: str, path: str) -> bool:
    # The Lease itself is how a replica becomes leader: its writes are never fenced.
    return method != "GET" and not path.startswith("/apis/coordination.k8s.io/v1/")


@dataclass(frozen=True)
class Kind:
    """Where a kind lives on the REST API (from discovery)."""

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


def _load_config(kubeconfig: str | None) -> SingleConfig:
    loaded = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    config = loaded.get()
    if config is None:
        raise RuntimeError(
            "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config, in-cluster)"
        )
    return config


class Kube:
    """An async Kubernetes API client for the operator's needs."""

    def __init__(self, http: httpx2.AsyncClient, backoff: Backoff = Backoff()) -> None:
        self._http = http
        self._backoff = backoff
        self._kinds: dict[tuple[str, str], Kind] = {}
        self._discovery_lock = asyncio.Lock()
        self._fence: Callable[[], bool] | None = None

    @classmethod
    def from_env(cls, kubeconfig: str | None = None, timeout: float = 15.0) -> Kube:
        """Connect like kubectl: explicit file, KUBECONFIG, in-cluster, ~/.kube/config."""
        config = _load_config(kubeconfig or os.environ.get("KUBECONFIG"))
        params = ConnectionParams(timeout=httpx2.Timeout(timeout), trust_env=False)
        assert config.user is not None
        http = httpx2.AsyncClient(
            base_url=config.cluster.server,
            verify=verify_cluster(config.cluster, config.user, config.abs_file, trust_env=False),
            auth=user_auth(config.user),
            timeout=params.timeout,
            trust_env=False,
            http2=False,
        )
        return cls(http)

    def set_fence(self, fence: Callable[[], bool]) -> None:
        """Ask `fence()` before every write except to Leases; False raises NotLeader."""
        self._fence = fence

    async def close(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ raw requests

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        write_kind: str | None = None,
        retry: bool = True,
    ) -> Obj | None:
        """One request with transient retries (unless `retry` is False). None for 404; ApiError
        for other failures."""

        async def once() -> Obj | None:
            # Asked before every attempt: a retry after a backoff may come too late.
            if self._fence is not None and _fenced(method, path) and not self._fence():
                raise NotLeader(f"{method} {path}: not the leader")
            headers = {"Accept": "application/json"}
            content = None
            if body is not None:
                headers["Content-Type"] = content_type
                content = json.dumps(body).encode()
            if write_kind is not None:
                metrics.API_WRITES.labels(method.lower(), write_kind).inc()
            try:
                resp = await self._http.request(
                    method, path, params=dict(params or {}), content=content, headers=headers
                )
            except (httpx2.TransportError, httpx2.TimeoutException) as e:
                raise ApiError(0, type(e).__name__, str(e) or type(e).__name__) from e
            if resp.status_code == 404:
                return None
            if resp.status_code == 403:
                # A caller may turn it into status; the log keeps missing RBAC visible.
                log.warning("Forbidden: %s %s", method, path)
            if resp.status_code >= 400:
                try:
                    status = resp.json()
                    raise ApiError(
                        resp.status_code, status.get("reason", ""), status.get("message", "")
                    )
                except ValueError:
                    raise ApiError(resp.status_code, resp.reason_phrase, resp.text[:500]) from None
            if not resp.content:
                return {}
            data: Obj = resp.json()
            return data

        return await retry_transient(once, self._backoff) if retry else await once()

    # ------------------------------------------------------------------ discovery

    async def kind(self, api_version: str, kind: str) -> Kind:
        """Plural and scope of a kind, from the API server's discovery documents (cached)."""
        key = (api_version, kind)
        if key in self._kinds:
            return self._kinds[key]
        async with self._discovery_lock:
            if key not in self._kinds:
                await self._discover_group_version(api_version)
        if key not in self._kinds:
            raise ApiError(404, "KindNotServed", f"{kind} is not served by {api_version}")
        return self._kinds[key]

    async def _discover_group_version(self, api_version: str) -> list[Kind]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        doc = await self._request("GET", path)
        found: list[Kind] = []
        for res in (doc or {}).get("resources", []):
            if "/" in res["name"]:
                continue  # subresources such as deployments/status
            k = Kind(api_version, res["kind"], res["name"], bool(res.get("namespaced")))
            self._kinds[(api_version, k.kind)] = k
            found.append(k)
        return found

    async def served_kinds(self) -> frozenset[str]:
        """Every served "group/version/Kind" (core kinds "v1/Kind"): the cluster's capabilities."""
        groups = await self._request("GET", "/apis") or {}
        versions = ["v1"]
        for group in groups.get("groups", []):
            versions.extend(v["groupVersion"] for v in group.get("versions", []))
        kinds: set[str] = set()
        for gv in versions:
            try:
                for k in await self._discover_group_version(gv):
                    kinds.add(f"{gv}/{k.kind}")
            except ApiError as e:
                # An aggregated API whose backend is down (503) must not hide the rest.
                log.info("discovery of %s failed: %s", gv, e)
        return frozenset(kinds)

    # ------------------------------------------------------------------ metrics

    async def pod_metric(self, namespace: str, metric: str, label_selector: str) -> list[Obj]:
        """The pods' values of a custom metric (custom.metrics.k8s.io, the group's preferred
        version, as the HPA controller reads it). Tried once: an adapter that is down must not
        stall a reconcile pass; the caller treats ApiError and 404 (None) as "unknown"."""
        group = await self._request("GET", "/apis/custom.metrics.k8s.io", retry=False)
        if group is None:
            raise ApiError(404, "NotFound", "custom.metrics.k8s.io is not served")
        version = group["preferredVersion"]["groupVersion"]
        found = await self._request(
            "GET",
            f"/apis/{version}/namespaces/{namespace}/pods/*/{metric}",
            params={"labelSelector": label_selector},
            retry=False,
        )
        if found is None:
            raise ApiError(404, "NotFound", f"no {metric} for pods in {namespace}")
        return list(found.get("items", []))

    # ------------------------------------------------------------------ objects

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        k = await self.kind(api_version, kind)
        return await self._request("GET", k.path(namespace, name))

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[Obj]:
        k = await self.kind(api_version, kind)
        items: list[Obj] = []
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self._request("GET", k.path(namespace), params=params) or {}
            for item in page.get("items", []):
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                return items
            params["continue"] = cont

    async def apply(
        self, manifest: Mapping[str, Any], *, force: bool = True, manager: str = FIELD_MANAGER
    ) -> Obj:
        """Server-side apply `manifest` as `manager`, taking over fields we declare."""
        meta = manifest["metadata"]
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        params = {"fieldManager": manager, "force": "true" if force else "false"}
        result = await self._request(
            "PATCH",
            k.path(meta.get("namespace"), meta["name"]),
            params=params,
            body=manifest,
            content_type="application/apply-patch+yaml",
            write_kind=k.kind,
        )
        if result is None:  # 404 on apply: the namespace is gone
            raise ApiError(404, "NotFound", f"namespace {meta.get('namespace')} not found")
        return result

    async def create(self, manifest: Mapping[str, Any]) -> Obj:
        """POST a new object; ApiError 409 when it exists."""
        meta = manifest["metadata"]
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        result = await self._request(
            "POST", k.path(meta.get("namespace")), body=manifest, write_kind=k.kind
        )
        if result is None:
            raise ApiError(404, "NotFound", f"namespace {meta.get('namespace')} not found")
        return result

    async def replace(self, manifest: Mapping[str, Any]) -> Obj:
        """PUT the whole object; with metadata.resourceVersion, ApiError 409 when it is stale."""
        meta = manifest["metadata"]
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        result = await self._request(
            "PUT", k.path(meta.get("namespace"), meta["name"]), body=manifest, write_kind=k.kind
        )
        if result is None:
            raise ApiError(404, "NotFound", f"{k.kind} {meta['name']} not found")
        return result

    async def merge_patch(self, manifest: Mapping[str, Any]) -> Obj | None:
        """JSON merge patch of `manifest` onto the live object: maps merge key by key, lists are
        replaced whole. Used to take back list entries another field manager now owns, which
        server-side apply leaves in place by design. None when the object is gone."""
        meta = manifest["metadata"]
        k = await self.kind(manifest["apiVersion"], manifest["kind"])
        return await self._request(
            "PATCH",
            k.path(meta.get("namespace"), meta["name"]),
            params={"fieldManager": FIELD_MANAGER},
            body=manifest,
            content_type="application/merge-patch+json",
            write_kind=k.kind,
        )

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
        result = await self._request(
            "DELETE",
            k.path(namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation},
            write_kind=k.kind,
        )
        return result is not None

    async def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Obj
    ) -> Obj | None:
        """Merge-patch the status subresource. None when the object is gone."""
        k = await self.kind(api_version, kind)
        return await self._request(
            "PATCH",
            k.path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
            write_kind=k.kind + "/status",
        )

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `involved` (never secret values: callers pass names only)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{pysecrets.token_hex(8)}",
                "namespace": namespace,
            },
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
            "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._request(
                "POST", f"/api/v1/namespaces/{namespace}/events", body=event, write_kind="Event"
            )
        except ApiError as e:
            # Events are best effort: a lost event must not fail a reconcile.
            log.warning("could not post event %s: %s", reason, e)
