"""Optional Ingress to the chat Service (WebSocket and REST on one host).

The Ingress routes only the chat server's public paths (`ingress_paths`), never `/` as a whole:
`/metrics` (the autoscaling signal and every counter), `/healthz` and `/readyz` stay inside the
cluster, reached by Prometheus and the kubelet on the pod IP. The list is written here, not
derived from the chat server (the operator never imports `chatserver`);
tests/unit/operator/test_ingress_routes.py reads the chat server's real routes and fails when a
public one is not routed or an internal one is.

WebSocket connections live for minutes to hours; ingress controllers usually cut idle proxied
connections after 60 s. Set the controller's timeouts through `spec.ingress.annotations`, e.g. for
ingress-nginx `nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"` and
`nginx.ingress.kubernetes.io/proxy-send-timeout: "3600"` (examples/prod.yaml shows them).
"""

from __future__ import annotations

from typing import Any, Literal

from hypersend_operator.api import HypersendClusterSpec
from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata

PathType = Literal["Prefix", "Exact"]

# Public paths of the chat server (docs/protocol.md): the REST API (chatserver/api.py), the
# WebSocket (chatserver/realtime.py) and the OpenAPI document of the REST half, which
# docs/protocol.md names as part of the contract. Not routed: /metrics, /healthz, /readyz, and
# FastAPI's browsable /docs and /redoc pages (reach them with `kubectl port-forward`).
API_PATHS: tuple[tuple[str, PathType], ...] = (
    ("/api/v1", "Prefix"),
    ("/ws", "Exact"),
    ("/openapi.json", "Exact"),
)
# With `spec.chat.webClient: true`: the web client's files and the redirect from / to /app/
# (chatserver/app.py, install_web_client).
WEB_CLIENT_PATHS: tuple[tuple[str, PathType], ...] = (
    ("/app", "Prefix"),
    ("/", "Exact"),
)


def ingress_paths(spec: HypersendClusterSpec) -> tuple[tuple[str, PathType], ...]:
    """(path, pathType) of every chat server path the Ingress routes, for this spec."""
    return API_PATHS + (WEB_CLIENT_PATHS if spec.chat.web_client else ())


def chat_ingress(ctx: BuildContext) -> dict[str, Any]:
    ing = ctx.spec.ingress
    service = child_name(ctx, CHAT)
    spec: dict[str, Any] = {}
    if ing.class_name is not None:
        spec["ingressClassName"] = ing.class_name
    paths = [
        {
            "path": path,
            "pathType": path_type,
            "backend": {"service": {"name": service, "port": {"name": "http"}}},
        }
        for path, path_type in ingress_paths(ctx.spec)
    ]
    rule: dict[str, Any] = {"http": {"paths": paths}}
    if ing.host is not None:
        rule = {"host": ing.host, **rule}
    spec["rules"] = [rule]
    if ing.tls_secret_name is not None:
        tls: dict[str, Any] = {"secretName": ing.tls_secret_name}
        if ing.host is not None:
            tls = {"hosts": [ing.host], **tls}
        spec["tls"] = [tls]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(ctx, service, CHAT, annotations=dict(sorted(ing.annotations.items()))),
        "spec": spec,
    }


def build_ingress(ctx: BuildContext) -> list[dict[str, Any]]:
    return [chat_ingress(ctx)] if ctx.spec.ingress.enabled else []
