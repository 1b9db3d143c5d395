"""PodDisruptionBudget (policy/v1) of the chat pods."""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import CHAT, child_name, metadata, selector_labels


def chat_pdb(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(ctx, child_name(ctx, CHAT), CHAT),
        "spec": {
            "maxUnavailable": ctx.spec.chat.pod_disruption_budget.max_unavailable,
            "selector": {"matchLabels": selector_labels(ctx, CHAT)},
            # A crash-looping pod must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_disruption(ctx: BuildContext) -> list[dict[str, Any]]:
    return [chat_pdb(ctx)] if ctx.spec.chat.pod_disruption_budget.enabled else []
