"""`HypersendCluster.spec` (v1alpha1): fields, defaults and validation rules.

Defaults come from the deployment study the project started from (docs/architecture.md,
"The HypersendCluster contract"): 2-10 chat pods, HPA on 1,000 connections
per pod, CPU 70 %, memory 80 %, scale-up 100 % or 2 pods per 30 s, scale-down stabilised 300 s,
WebSocket ping 30 s and idle timeout 300 s, 100 requests per user per minute, Mongo pool 10-50.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from hypersend_operator.api.base import (
    DNS_SUBDOMAIN_PATTERN,
    ENV_NAME_PATTERN,
    ApiModel,
    IntOrPercent,
    Quantity,
    Rule,
    SecretKeyRef,
)

# Environment variables the operator sets on the chat container itself; `chat.env` may not
# override them (the operator's value would be silently shadowed or would shadow the user's).
OPERATOR_ENV_NAMES: tuple[str, ...] = (
    "HYPERSEND_HOST",
    "HYPERSEND_PORT",
    "HYPERSEND_MONGO_URL",
    "HYPERSEND_MONGO_DB",
    "HYPERSEND_MONGO_MIN_POOL",
    "HYPERSEND_MONGO_MAX_POOL",
    "HYPERSEND_REDIS_URL",
    "HYPERSEND_JWT_SECRET",
    "HYPERSEND_JWT_KEYS",
    "HYPERSEND_WS_PING_INTERVAL_SECONDS",
    "HYPERSEND_WS_IDLE_TIMEOUT_SECONDS",
    "HYPERSEND_WS_MAX_CONNECTIONS",
    "HYPERSEND_RATE_LIMIT_PER_MINUTE",
    "HYPERSEND_DRAIN_DELAY_SECONDS",
    "HYPERSEND_DRAIN_SECONDS",
    "HYPERSEND_LOG_LEVEL",
    "HYPERSEND_WEB_CLIENT",
    "HYPERSEND_POD_NAME",
    "HYPERSEND_TRUSTED_PROXIES",
)

# Private address space: where in-cluster reverse proxies (Ingress controllers, pod and node
# networks) live. Their X-Forwarded-For is believed by default (docs/configuration.md, "Abuse
# limits"); without that, every client behind an Ingress would count as the controller's address.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
)
MAX_TRUSTED_PROXIES = 32

MAX_ENV = 64
MAX_MONITORING_LABELS = 16
# A label key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
MAX_LABEL_KEY_LENGTH = 253 + 1 + 63
# Keys of the operator's own labels (children are found and selected by them).
RESERVED_LABEL_PREFIX = "app.kubernetes.io/"
LabelValue = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"),
]
MAX_ANNOTATIONS = 64
MAX_POLICIES = 10

DEFAULT_REDIS_IMAGE = "docker.io/library/redis:7.4.2-alpine"
DEFAULT_MONGO_IMAGE = "docker.io/library/mongo:7.0.16"
DEFAULT_STORAGE_SIZE = "10Gi"


def _without_empty(value: Any) -> Any:
    # Empty maps and lists carry no default worth writing into every stored object.
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v not in ({}, [])}
    return value


def _nested(model: type[ApiModel], description: str) -> Any:
    """A nested block that is present with its defaults when omitted, in Python and in the CRD.

    The CRD default is the whole defaulted object, not `{}`: the API server checks CEL rules against
    a default without applying the nested defaults first.
    """
    default = _without_empty(model().model_dump(mode="json", by_alias=True, exclude_none=True))
    return Field(
        default_factory=model, description=description, json_schema_extra={"default": default}
    )


class Resources(ApiModel):
    """Container requests and limits (Kubernetes quantities)."""

    requests: Annotated[dict[str, Quantity], Field(max_length=8)] = Field(
        default_factory=dict,
        description="Resources the scheduler reserves, by name (cpu in cores or millicores like "
        "'500m', memory in bytes like '512Mi').",
    )
    limits: Annotated[dict[str, Quantity], Field(max_length=8)] = Field(
        default_factory=dict,
        description="Most the container may use, by name (cpu in cores or millicores, memory in "
        "bytes); over its memory limit the container is killed.",
    )


CHAT_RESOURCES = Resources(
    requests={"cpu": "500m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "1Gi"}
)
REDIS_RESOURCES = Resources(
    requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "500m", "memory": "256Mi"}
)
MONGO_RESOURCES = Resources(
    requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "1Gi"}
)


class WebSocketSettings(ApiModel):
    """WebSocket keep-alive, capacity and drain settings of each chat pod."""

    ping_interval_seconds: int = Field(
        default=30,
        ge=1,
        le=300,
        description="Seconds between the server's WebSocket pings to each client.",
    )
    idle_timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="Seconds without any frame from a client before its socket is closed; "
        "must be greater than pingIntervalSeconds.",
    )
    max_connections_per_pod: int = Field(
        default=5000,
        ge=1,
        le=100000,
        description="Open WebSockets one chat pod accepts; above it new sockets are refused "
        "(the autoscaler's target must not exceed it).",
    )
    drain_delay_seconds: int = Field(
        default=5,
        ge=0,
        le=60,
        description="Seconds of preStop pause before SIGTERM, so that endpoints drop the pod "
        "before its sockets close.",
    )
    drain_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Seconds of the whole drain after SIGTERM: sockets are closed in batches "
        "with close code 1012 and a reconnect hint within it.",
    )

    rules = (
        Rule(
            "self.idleTimeoutSeconds > self.pingIntervalSeconds",
            "chat.websocket.idleTimeoutSeconds must be greater than pingIntervalSeconds",
            lambda s: s.idle_timeout_seconds > s.ping_interval_seconds,
        ),
    )


class RateLimit(ApiModel):
    """Request rate limit per user, shared by all chat pods through Redis."""

    requests_per_minute: int = Field(
        default=100,
        ge=1,
        le=100000,
        description="Requests (REST calls and WebSocket frames) per user per minute, across "
        "pods; a limited request gets 429 with Retry-After.",
    )


class EnvVar(ApiModel):
    """An extra environment variable for the chat container."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=ENV_NAME_PATTERN)
    ] = Field(
        description="Variable name; unique, and not one of the HYPERSEND_ names the operator "
        "sets from the spec."
    )
    value: Annotated[str, StringConstraints(max_length=4096)] = Field(
        default="", description="Variable value (plain text: put secrets in a Secret instead)."
    )

    rules = (
        Rule(
            "!(self.name in " + "[" + ", ".join(f"'{n}'" for n in OPERATOR_ENV_NAMES) + "])",
            "chat.env: this HYPERSEND_ variable is set by the operator from the spec; "
            "set the matching spec field instead",
            None,  # mirrored by _not_operator_owned, whose message names the variable
        ),
    )

    @field_validator("name")
    @classmethod
    def _not_operator_owned(cls, name: str) -> str:
        if name in OPERATOR_ENV_NAMES:
            raise ValueError(
                f"chat.env: {name} is set by the operator from the spec; "
                "set the matching spec field instead"
            )
        return name


class PodDisruptionBudgetSpec(ApiModel):
    """PodDisruptionBudget of the chat pods (voluntary evictions such as node drains)."""

    enabled: bool = Field(default=True, description="Create the PodDisruptionBudget.")
    max_unavailable: IntOrPercent = Field(
        default=1,
        description="Chat pods that may be evicted at once: a number of pods or a percentage "
        "like '25%'.",
    )


class ChatSpec(ApiModel):
    """The chat server Deployment."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        description="Container image of the chat server (hypersend-server), e.g. "
        "'registry.example.com/hypersend-server:0.1.0'. Required."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    replicas: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="Chat pods when autoscaling is disabled (ignored when it is enabled: the "
        "HorizontalPodAutoscaler owns the count).",
    )
    resources: Resources = Field(
        default=CHAT_RESOURCES,
        description="Requests and limits of the chat container. Default: requests cpu 500m, "
        "memory 512Mi; limits cpu 1, memory 1Gi.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the chat server."
    )
    websocket: WebSocketSettings = _nested(WebSocketSettings, "WebSocket settings.")
    rate_limit: RateLimit = _nested(RateLimit, "Request rate limit per user.")
    web_client: bool = Field(
        default=False,
        description="Serve the web client (a small chat page) at /app/ of the chat Service; "
        "off by default, so only API clients are served.",
    )
    env: Annotated[list[EnvVar], Field(max_length=MAX_ENV)] = Field(
        default_factory=list,
        description="Extra environment; HYPERSEND_ names the operator sets are refused.",
    )
    pod_disruption_budget: PodDisruptionBudgetSpec = _nested(
        PodDisruptionBudgetSpec, "PodDisruptionBudget of the chat pods."
    )
    jwt_key_activation_delay_seconds: int = Field(
        default=600,
        ge=0,
        le=604_800,
        description="After `kubectl hypersend rotate-jwt`, seconds until the new JWT key signs; "
        "until then every pod only learns it. Set it above the time a rollout of the chat "
        "pods takes, so no pod meets a token signed with a key it does not know yet.",
    )
    trusted_proxies: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$")]],
        Field(max_length=MAX_TRUSTED_PROXIES),
    ] = Field(
        # A plain default (pydantic copies it per instance), so the generated CRD carries it
        # and the API server defaults it as the models do (tests/e2e/test_crd_validation.py).
        default=list(PRIVATE_NETWORKS),
        description="Addresses or CIDRs of reverse proxies (the Ingress controller) whose "
        "X-Forwarded-For names the client for the per-address abuse limits. Default: the "
        "private ranges, where in-cluster proxies live. [] trusts none.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"chat.trustedProxies: {entry!r} is not an IP or CIDR") from exc
        return value

    rules = (
        Rule(
            "!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
            "chat.env: variable names must be unique",
            lambda c: len({e.name for e in c.env}) == len(c.env),
        ),
    )


class ScalingPolicy(ApiModel):
    """One scaling step, as in autoscaling/v2 HPAScalingPolicy."""

    type: Literal["Pods", "Percent"] = Field(
        description="Pods: value is a number of pods; Percent: a percentage of the current pods."
    )
    value: int = Field(ge=1, le=10000, description="Pods or percent per period (see type).")
    period_seconds: int = Field(
        ge=1, le=1800, description="Seconds the policy's change may take place in."
    )


class ScalingRules(ApiModel):
    """Same shape as autoscaling/v2 HPAScalingRules."""

    stabilization_window_seconds: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="Seconds of past recommendations the autoscaler considers, so the replica "
        "count does not flap.",
    )
    select_policy: Literal["Max", "Min", "Disabled"] = Field(
        default="Max",
        description="Which policy applies when several do: the one allowing the most change "
        "(Max), the least (Min), or none (Disabled: no scaling in this direction).",
    )
    policies: Annotated[list[ScalingPolicy], Field(min_length=1, max_length=MAX_POLICIES)] = Field(
        description="Allowed changes per period (1-10 policies)."
    )


SCALE_UP = ScalingRules(
    stabilization_window_seconds=0,
    select_policy="Max",
    policies=[
        ScalingPolicy(type="Percent", value=100, period_seconds=30),
        ScalingPolicy(type="Pods", value=2, period_seconds=30),
    ],
)
SCALE_DOWN = ScalingRules(
    stabilization_window_seconds=300,
    select_policy="Max",
    policies=[ScalingPolicy(type="Percent", value=100, period_seconds=15)],
)


class ScalingBehavior(ApiModel):
    """HPA v2 behavior. Defaults: up by 100 % or 2 pods per 30 s, down stabilised 300 s."""

    scale_up: ScalingRules = Field(
        default=SCALE_UP,
        description="Scaling up. Default: no stabilization, by 100 % or 2 pods per 30 s, "
        "whichever is more.",
    )
    scale_down: ScalingRules = Field(
        default=SCALE_DOWN,
        description="Scaling down. Default: stabilised over 300 s, then by up to 100 % per 15 s.",
    )


class AutoscalingSpec(ApiModel):
    """HorizontalPodAutoscaler of the chat Deployment."""

    enabled: bool = Field(
        default=True,
        description="Scale the chat pods with a HorizontalPodAutoscaler (chat.replicas is then "
        "ignored).",
    )
    min_replicas: int = Field(
        default=2, ge=1, le=1000, description="Fewest chat pods; at most maxReplicas."
    )
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most chat pods.")
    target_connections_per_pod: int = Field(
        default=1000,
        ge=1,
        le=100000,
        description="Average open WebSockets per chat pod the autoscaler aims at (Pods metric "
        "hypersend_websocket_connections, through a custom metrics adapter such as "
        "prometheus-adapter).",
    )
    target_cpu_utilization_percentage: int = Field(
        default=70,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU use per chat pod, in percent of its CPU request.",
    )
    target_memory_utilization_percentage: int = Field(
        default=80,
        ge=1,
        le=100,
        alias="targetMemoryUtilizationPercentage",
        description="Average memory use per chat pod, in percent of its memory request.",
    )
    behavior: ScalingBehavior = _nested(ScalingBehavior, "HPA v2 scaling behavior.")

    rules = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
            lambda a: a.min_replicas <= a.max_replicas,
        ),
    )


class RedisInCluster(ApiModel):
    """A single Redis pod for development and small installs (pub/sub, rate limits, presence)."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        default=DEFAULT_REDIS_IMAGE, description="Container image of Redis."
    )
    resources: Resources = Field(
        default=REDIS_RESOURCES,
        description="Requests and limits of the Redis container. Default: requests cpu 100m, "
        "memory 128Mi; limits cpu 500m, memory 256Mi.",
    )


class RedisExternal(ApiModel):
    """A Redis the cluster does not run (ElastiCache, Memorystore, ...)."""

    url_secret_ref: SecretKeyRef = Field(
        description="Secret key holding a redis:// or rediss:// URL (ElastiCache, Memorystore…)."
    )


class RedisSpec(ApiModel):
    """Redis: pub/sub fan-out between chat pods and shared rate limits."""

    mode: Literal["InCluster", "External"] = Field(
        default="InCluster",
        description="InCluster: the operator runs one Redis pod; External: the chat pods use "
        "the URL in redis.external.urlSecretRef.",
    )
    in_cluster: RedisInCluster | None = Field(
        default=None, description="Settings of the in-cluster Redis (mode InCluster only)."
    )
    external: RedisExternal | None = Field(
        default=None, description="Where the external Redis is (required for mode External)."
    )

    def in_cluster_settings(self) -> RedisInCluster:
        """The in-cluster settings with defaults filled in (the block itself is optional)."""
        return self.in_cluster or RedisInCluster()

    rules = (
        Rule(
            "self.mode != 'External' || has(self.external)",
            "redis.external.urlSecretRef is required when redis.mode is External",
            lambda r: r.mode != "External" or r.external is not None,
        ),
        Rule(
            "self.mode == 'External' || !has(self.external)",
            "redis.external is only allowed when redis.mode is External: remove it or set the mode",
            lambda r: r.mode == "External" or r.external is None,
        ),
        Rule(
            "self.mode == 'InCluster' || !has(self.inCluster)",
            "redis.inCluster is only allowed when redis.mode is InCluster: "
            "remove it or set the mode",
            lambda r: r.mode == "InCluster" or r.in_cluster is None,
        ),
    )


class MongoStorage(ApiModel):
    """The data volume of the in-cluster MongoDB. Fixed once created."""

    size: Quantity = Field(
        default=DEFAULT_STORAGE_SIZE, description="Size of the volume in bytes, e.g. '10Gi'."
    )
    storage_class_name: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
        ]
        | None
    ) = Field(
        default=None,
        description="StorageClass of the volume's claim; the cluster's default class when unset.",
    )

    rules = (
        Rule(
            "self == oldSelf",
            "mongo.inCluster.storage is immutable (the volume already exists); "
            "create a new HypersendCluster to change size or storageClassName",
        ),
    )


class MongoInCluster(ApiModel):
    """A single MongoDB pod on a PVC, for development and small installs."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        default=DEFAULT_MONGO_IMAGE, description="Container image of MongoDB (6 or later)."
    )
    resources: Resources = Field(
        default=MONGO_RESOURCES,
        description="Requests and limits of the MongoDB container. Default: requests cpu 250m, "
        "memory 512Mi; limits cpu 1, memory 1Gi.",
    )
    storage: MongoStorage = _nested(MongoStorage, "Data volume; immutable.")


class MongoAtlas(ApiModel):
    """A MongoDB the cluster does not run (MongoDB Atlas or any MongoDB 6+)."""

    connection_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the mongodb+srv:// URI. The operator never modifies it."
    )


class MongoPool(ApiModel):
    """MongoDB connection pool of each chat pod."""

    min_size: int = Field(
        default=10, ge=0, le=1000, description="Connections each chat pod keeps open."
    )
    max_size: int = Field(
        default=50, ge=1, le=1000, description="Most connections each chat pod opens."
    )

    rules = (
        Rule(
            "self.minSize <= self.maxSize",
            "mongo.pool.minSize must be less than or equal to mongo.pool.maxSize",
            lambda p: p.min_size <= p.max_size,
        ),
    )


class MongoSpec(ApiModel):
    """MongoDB: users, rooms and messages (the source of truth)."""

    mode: Literal["InCluster", "Atlas"] = Field(
        default="InCluster",
        description="InCluster: the operator runs one MongoDB pod on a volume; Atlas: the chat "
        "pods use the URI in mongo.atlas.connectionSecretRef. Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                Rule(
                    "self == oldSelf",
                    "mongo.mode is immutable (data would be left behind); "
                    "create a new HypersendCluster to switch between InCluster and Atlas",
                ).as_cel()
            ]
        },
    )
    database: Annotated[
        str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_-]+$")
    ] = Field(
        default="hypersend",
        description="Database name the chat server uses. InCluster: the chat pods' MongoDB user "
        "gets readWrite on this database only, when the volume is first initialised; after a "
        "change, create the user again (docs/install.md).",
    )
    pool: MongoPool = _nested(MongoPool, "Connection pool of each chat pod.")
    delete_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="What happens to the in-cluster data volume and its credentials Secret "
        "(<name>-mongo-credentials) when the cluster is deleted: Retain keeps both, so a cluster "
        "re-created under the same name reattaches the volume with the same passwords; Delete "
        "removes them. An Atlas Secret is never deleted.",
    )
    in_cluster: MongoInCluster | None = Field(
        default=None, description="Settings of the in-cluster MongoDB (mode InCluster only)."
    )
    atlas: MongoAtlas | None = Field(
        default=None, description="Where the Atlas MongoDB is (required for mode Atlas)."
    )

    def in_cluster_settings(self) -> MongoInCluster:
        """The in-cluster settings with defaults filled in (the block itself is optional)."""
        return self.in_cluster or MongoInCluster()

    rules = (
        Rule(
            "self.mode != 'Atlas' || has(self.atlas)",
            "mongo.atlas.connectionSecretRef is required when mongo.mode is Atlas",
            lambda m: m.mode != "Atlas" or m.atlas is not None,
        ),
        Rule(
            "self.mode == 'Atlas' || !has(self.atlas)",
            "mongo.atlas is only allowed when mongo.mode is Atlas: remove it or set the mode",
            lambda m: m.mode == "Atlas" or m.atlas is None,
        ),
        Rule(
            "self.mode == 'InCluster' || !has(self.inCluster)",
            "mongo.inCluster is only allowed when mongo.mode is InCluster: "
            "remove it or set the mode",
            lambda m: m.mode == "InCluster" or m.in_cluster is None,
        ),
        # Storage is fixed at creation even when the inCluster block was omitted (the defaults
        # applied): adding or removing the block must not change the effective storage.
        Rule(
            "has(oldSelf.inCluster) || !has(self.inCluster) || "
            f"(string(self.inCluster.storage.size) == '{DEFAULT_STORAGE_SIZE}' && "
            "!has(self.inCluster.storage.storageClassName))",
            "mongo.inCluster.storage is immutable: the volume was created with the default "
            f"size {DEFAULT_STORAGE_SIZE} and storage class; keep those",
        ),
        Rule(
            "!has(oldSelf.inCluster) || has(self.inCluster) || "
            f"(string(oldSelf.inCluster.storage.size) == '{DEFAULT_STORAGE_SIZE}' && "
            "!has(oldSelf.inCluster.storage.storageClassName))",
            "mongo.inCluster.storage is immutable: keep mongo.inCluster.storage as it is "
            "instead of removing the block",
        ),
    )


class IngressSpec(ApiModel):
    """Optional Ingress for the chat Service.

    WebSockets need long proxy timeouts; for ingress-nginx set annotations such as
    `nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"` and `proxy-send-timeout: "3600"`.
    """

    enabled: bool = Field(default=False, description="Create the Ingress.")
    host: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
        ]
        | None
    ) = Field(default=None, description="Host name clients connect to; required when enabled.")
    class_name: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None, description="IngressClass; the cluster's default class when unset."
    )
    tls_secret_name: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
        ]
        | None
    ) = Field(
        default=None,
        description="Secret with the TLS certificate and key for host; plain HTTP when unset.",
    )
    annotations: Annotated[dict[str, str], Field(max_length=MAX_ANNOTATIONS)] = Field(
        default_factory=dict,
        description="Annotations of the Ingress (controller settings such as proxy timeouts; "
        "at most 64).",
    )

    rules = (
        Rule(
            "!self.enabled || has(self.host)",
            "ingress.host is required when ingress.enabled is true",
            lambda i: not i.enabled or i.host is not None,
        ),
    )


class NetworkPolicySpec(ApiModel):
    """On by default: in-cluster Redis and MongoDB accept only this cluster's chat pods (no
    other pod of the cluster reaches them); chat pods accept only port 8080."""

    enabled: bool = Field(
        default=True,
        description=(
            "Create the NetworkPolicies (on by default: in-cluster Redis and MongoDB accept only "
            "the chat pods; chat pods only port 8080). Enforced only where the cluster's network "
            "plugin enforces NetworkPolicies."
        ),
    )


class MonitoringSpec(ApiModel):
    """Prometheus Operator objects, created only when their CRDs exist in the cluster."""

    service_monitor: bool = Field(
        default=False, description="Create a ServiceMonitor scraping the chat pods' /metrics."
    )
    prometheus_rule: bool = Field(
        default=False, description="Create a PrometheusRule with Hypersend's alerts."
    )
    interval: Annotated[str, StringConstraints(pattern=r"^[0-9]+(ms|s|m|h)$")] = Field(
        default="30s", description="Scrape interval, a duration such as '30s' or '1m'."
    )
    labels: Annotated[dict[str, LabelValue], Field(max_length=MAX_MONITORING_LABELS)] = Field(
        default_factory=dict,
        description=(
            "Extra labels on the ServiceMonitor and PrometheusRule, for the Prometheus that "
            "selects them (kube-prometheus-stack's default: release: <its release name>). "
            "app.kubernetes.io/ keys are the operator's."
        ),
    )

    rules = (
        # Only the reserved prefix: a regex over map keys (which a schema cannot bound in length)
        # costs too much for the API server's CEL budget; the key syntax is checked below.
        Rule(
            f"!has(self.labels) || !self.labels.exists(k, k.startsWith('{RESERVED_LABEL_PREFIX}'))",
            f"monitoring.labels: {RESERVED_LABEL_PREFIX} keys are the operator's",
            lambda m: not any(k.startswith(RESERVED_LABEL_PREFIX) for k in m.labels),
        ),
    )

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if len(key) > MAX_LABEL_KEY_LENGTH or not re.fullmatch(LABEL_KEY_PATTERN, key):
                raise ValueError(f"monitoring.labels: {key!r} is not a valid label key")
        return labels


class HypersendClusterSpec(ApiModel):
    """Desired state of a Hypersend chat backend."""

    chat: ChatSpec = Field(description="The chat server Deployment. Required.")
    autoscaling: AutoscalingSpec = _nested(AutoscalingSpec, "Autoscaling of the chat pods.")
    redis: RedisSpec = _nested(RedisSpec, "Redis: in-cluster or an external URL from a Secret.")
    mongo: MongoSpec = _nested(MongoSpec, "MongoDB: in-cluster or an Atlas URI from a Secret.")
    ingress: IngressSpec = _nested(
        IngressSpec,
        "Optional Ingress. It routes only the public paths: /api/v1, /ws and /openapi.json, "
        "plus /app and / with chat.webClient; /metrics, /healthz and /readyz are not routed.",
    )
    network_policy: NetworkPolicySpec = _nested(NetworkPolicySpec, "Optional NetworkPolicies.")
    monitoring: MonitoringSpec = _nested(MonitoringSpec, "Prometheus Operator integration.")

    rules = (
        Rule(
            "!self.autoscaling.enabled || "
            "self.autoscaling.targetConnectionsPerPod <= self.chat.websocket.maxConnectionsPerPod",
            "autoscaling.targetConnectionsPerPod must not exceed "
            "chat.websocket.maxConnectionsPerPod",
            lambda s: (
                not s.autoscaling.enabled
                or s.autoscaling.target_connections_per_pod
                <= s.chat.websocket.max_connections_per_pod
            ),
        ),
    )
