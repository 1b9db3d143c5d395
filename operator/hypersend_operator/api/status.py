"""`HypersendCluster.status`: every field the operator writes is declared here (and so in the CRD),
because the API server prunes undeclared status fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from hypersend_operator.api.base import ApiModel

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Paused"]
ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types the operator reports (docs/architecture.md, "The status contract").
CONDITION_TYPES: tuple[str, ...] = (
    "Ready",
    "Reconciling",
    "Stalled",
    "Progressing",
    "Degraded",
    "ChatReady",
    "RedisReady",
    "MongoReady",
    "AutoscalingReady",
    "ReconciliationPaused",
)
MAX_CONDITIONS = 16


class Condition(ApiModel):
    """A metav1.Condition."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316)] = Field(
        description="Condition type: Ready (the summary), Reconciling (work under way), Stalled "
        "(progress needs a human), Progressing, Degraded, ChatReady, RedisReady, MongoReady, "
        "AutoscalingReady, ReconciliationPaused."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="Machine-readable CamelCase reason, e.g. AtlasSecretMissing."
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="What is going on and, for a problem, what to do about it."
    )
    last_transition_time: str = Field(
        description="RFC 3339 time of the last status change.",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The CR generation this condition was computed for."
    )


class ChatStatus(ApiModel):
    """The chat Deployment as last observed."""

    replicas: int | None = Field(default=None, ge=0, description="Desired chat pods.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Ready chat pods.")
    ready: str | None = Field(
        default=None, description='Preformatted "ready/desired" for the printer column, e.g. "2/3".'
    )
    selector: str | None = Field(default=None, description="Label selector of the chat pods.")
    connections: int | None = Field(default=None, ge=0, description="Open WebSocket connections.")


class HypersendClusterStatus(ApiModel):
    """What the operator observed, written by it only (kstatus- and ArgoCD-compatible)."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The generation the status speaks for: fully applied, or stalled at "
        "(Stalled=True). Lower than metadata.generation means a change is still in progress.",
    )
    phase: Phase | None = Field(
        default=None,
        description="One word for humans and printer columns: Pending, Progressing, Ready, "
        "Degraded (see the Stalled condition) or Paused.",
    )
    conditions: Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)] = Field(
        default_factory=list,
        description="Conditions by type, with lastTransitionTime moving only when a status flips.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    chat: ChatStatus | None = Field(default=None, description="The chat pods as last observed.")
