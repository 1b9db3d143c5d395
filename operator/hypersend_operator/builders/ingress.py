"""Optional Ingress to the chat Service (WebSocket and REST on one host).

WebSocket connections live for minutes to hours; ingress controllers usually cut idle proxied
connections after 60 s. Set the controller's timeouts through `spec.ingress.annotations`, e.g. for
ingress-nginx `nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"` and
`nginx.ingress.kubernetes.io/proxy-send-timeout: "3600"` (examples/prod.yaml shows them).
"""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata


def chat_ingress(ctx: BuildContext) -> dict[str, Any]:
    ing = ctx.spec.ingress
    service = child_name(ctx, CHAT)
    spec: dict[str, Any] = {}
    if ing.class_name is not None:
        spec["ingressClassName"] = ing.class_name
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"name": "http"}}},
                }
            ]
        }
    }
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
