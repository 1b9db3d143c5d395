"""The chat Ingress routes every public path of the chat server and none of its internal ones.

The operator keeps its list of public paths (`builders.ingress.ingress_paths`) without importing
the chat server; this test ties the two together by reading the routes of the real FastAPI app
(`chatserver.app.create_app`, both with and without the web client) and matching them the way an
Ingress controller does (networking.k8s.io/v1 `Exact` and element-wise `Prefix`).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from hypersend_operator.builders import build_all
from hypersend_operator.builders.ingress import ingress_paths
from starlette.routing import Mount

from chatserver.app import create_app
from chatserver.config import Settings
from tests.unit.operator.support import ctx, find

pytestmark = pytest.mark.unit

# Routes that must stay inside the cluster: Prometheus and the kubelet reach them on the pod IP.
# FastAPI's browsable API pages are for developers (`kubectl port-forward`); the OpenAPI document
# itself is public (docs/protocol.md). Every other route of the app is public.
INTERNAL_ROUTES = frozenset(
    {"/metrics", "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


def routed(paths: list[dict[str, Any]], request_path: str) -> bool:
    """Whether an Ingress with these paths sends `request_path` to the backend."""
    for entry in paths:
        if entry["pathType"] == "Exact":
            if request_path == entry["path"]:
                return True
            continue
        assert entry["pathType"] == "Prefix", entry
        want = [e for e in entry["path"].split("/") if e]
        got = [e for e in request_path.split("/") if e]
        if got[: len(want)] == want:
            return True
    return False


def app_paths(web_client: bool) -> list[str]:
    """Request paths that reach each route of the real app (a mount: its root and a file)."""
    settings = Settings(jwt_secret="k" * 32, web_client=web_client)  # type: ignore[arg-type]
    out: list[str] = []
    # iter_route_contexts flattens included routers (FastAPI includes them lazily).
    for route in iter_route_contexts(create_app(settings).routes):
        path = str(route.path)
        mount = isinstance(route.original_route, Mount)
        out += [path, f"{path}/", f"{path}/index.html"] if mount else [path]
    return out


def ingress_of(web_client: bool) -> list[dict[str, Any]]:
    c = ctx(
        chat={"webClient": web_client},
        ingress={"enabled": True, "host": "chat.example.com", "tlsSecretName": "chat-tls"},
    )
    (rule,) = find(build_all(c), "Ingress", "demo-chat")["spec"]["rules"]
    paths: list[dict[str, Any]] = rule["http"]["paths"]
    return paths


@pytest.mark.parametrize("web_client", [False, True])
def test_every_public_route_is_routed_and_no_internal_one(web_client: bool) -> None:
    paths = ingress_of(web_client)
    requests = app_paths(web_client)
    assert set(INTERNAL_ROUTES) <= set(requests), "an internal route disappeared: update the list"
    for request in requests:
        internal = request.rstrip("/") in INTERNAL_ROUTES
        assert routed(paths, request) is not internal, (
            f"{request}: {'internal, but routed' if internal else 'public, but not routed'} by "
            f"the Ingress; update builders/ingress.py (or INTERNAL_ROUTES here)"
        )
    # Every Ingress path leads somewhere: no stale entry.
    for entry in paths:
        assert any(routed([entry], r) for r in requests), f"{entry['path']} matches no route"


@pytest.mark.parametrize(
    "request_path",
    ["/metrics", "/metrics/", "/healthz", "/readyz", "/docs", "/redoc", "/api/v10/rooms", "/wsx"],
)
def test_internal_and_look_alike_paths_are_not_routed(request_path: str) -> None:
    assert not routed(ingress_of(web_client=True), request_path)


def test_paths_point_at_the_chat_service_and_follow_the_spec() -> None:
    for web_client in (False, True):
        paths = ingress_of(web_client)
        assert [(p["path"], p["pathType"]) for p in paths] == list(
            ingress_paths(ctx(chat={"webClient": web_client}).spec)
        )
        for p in paths:
            assert p["backend"] == {"service": {"name": "demo-chat", "port": {"name": "http"}}}
    assert not routed(ingress_of(web_client=False), "/app/")
    assert routed(ingress_of(web_client=True), "/app/js/main.js")
