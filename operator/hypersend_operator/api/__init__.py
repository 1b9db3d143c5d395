"""HypersendCluster v1alpha1 API (group hypersend.io): pydantic spec and status models.

`HypersendClusterSpec.model_validate(body["spec"])` reads a CR;
`HypersendClusterStatus(...).model_dump(by_alias=True, exclude_none=True)` writes its status.
"""

from hypersend_operator.api.base import ApiModel, Rule, SecretKeyRef
from hypersend_operator.api.spec import (
    DEFAULT_MONGO_IMAGE,
    DEFAULT_REDIS_IMAGE,
    OPERATOR_ENV_NAMES,
    AutoscalingSpec,
    ChatSpec,
    EnvVar,
    HypersendClusterSpec,
    IngressSpec,
    MongoAtlas,
    MongoInCluster,
    MongoPool,
    MongoSpec,
    MongoStorage,
    MonitoringSpec,
    NetworkPolicySpec,
    PodDisruptionBudgetSpec,
    RateLimit,
    RedisExternal,
    RedisInCluster,
    RedisSpec,
    Resources,
    ScalingBehavior,
    ScalingPolicy,
    ScalingRules,
    WebSocketSettings,
)
from hypersend_operator.api.status import (
    CONDITION_TYPES,
    ChatStatus,
    Condition,
    ConditionStatus,
    HypersendClusterStatus,
    Phase,
)

GROUP = "hypersend.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HypersendCluster"
PLURAL = "hypersendclusters"
SINGULAR = "hypersendcluster"
SHORT_NAMES = ("hsc",)
CRD_NAME = f"{PLURAL}.{GROUP}"
PAUSED_ANNOTATION = "hypersend.io/paused"
# Set on the CR (ArgoCD's restart action can only patch the CR); carried onto the chat pod
# template, so a new value rolls the chat pods once, like `kubectl rollout restart`.
RESTARTED_AT_ANNOTATION = "hypersend.io/restartedAt"
# Set on the CR by `kubectl hypersend rotate-jwt`: each new value adds a JWT signing key
# (builders/jwtring.py).
ROTATE_JWT_ANNOTATION = "hypersend.io/jwtRotationRequestedAt"

__all__ = [
    "API_VERSION",
    "CONDITION_TYPES",
    "CRD_NAME",
    "DEFAULT_MONGO_IMAGE",
    "DEFAULT_REDIS_IMAGE",
    "GROUP",
    "KIND",
    "OPERATOR_ENV_NAMES",
    "PAUSED_ANNOTATION",
    "PLURAL",
    "RESTARTED_AT_ANNOTATION",
    "ROTATE_JWT_ANNOTATION",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "ApiModel",
    "AutoscalingSpec",
    "ChatSpec",
    "ChatStatus",
    "Condition",
    "ConditionStatus",
    "EnvVar",
    "HypersendClusterSpec",
    "HypersendClusterStatus",
    "IngressSpec",
    "MongoAtlas",
    "MongoInCluster",
    "MongoPool",
    "MongoSpec",
    "MongoStorage",
    "MonitoringSpec",
    "NetworkPolicySpec",
    "Phase",
    "PodDisruptionBudgetSpec",
    "RateLimit",
    "RedisExternal",
    "RedisInCluster",
    "RedisSpec",
    "Resources",
    "Rule",
    "ScalingBehavior",
    "ScalingPolicy",
    "ScalingRules",
    "SecretKeyRef",
    "WebSocketSettings",
]
