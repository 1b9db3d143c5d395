"""The chat Service (ClusterIP, named port `http`)."""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.configmap import CHAT_PORT
from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata, selector_labels


def chat_service(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, child_name(ctx, CHAT), CHAT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(ctx, CHAT),
            "ports": [
                {
                    "name": "http",
                    "port": CHAT_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }
