"""What every builder gets: the CR's identity, its validated spec, the generated secret values
and the cluster's optional capabilities. Builders render from this alone (pure functions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hypersend_operator.api import HypersendClusterSpec

# Capabilities: "<group>/<version>/<Kind>" of optional APIs found in the cluster.
SERVICE_MONITOR = "monitoring.coreos.com/v1/ServiceMonitor"
PROMETHEUS_RULE = "monitoring.coreos.com/v1/PrometheusRule"


@dataclass(frozen=True)
class GeneratedSecrets:
    """Secret values the reconciler read from the existing Secrets, or generated once if absent.

    Keep them out of logs, events and status; `repr` is masked for that reason.
    """

    jwt_keys: str = field(repr=False)  # the key ring's JSON (builders/jwtring.py)
    mongo_root_password: str = field(repr=False)
    mongo_app_password: str = field(repr=False)  # the chat pods' MongoDB user
    redis_password: str = field(repr=False)


@dataclass(frozen=True)
class BuildContext:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: HypersendClusterSpec
    secrets: GeneratedSecrets
    capabilities: frozenset[str] = frozenset()
    # The CR's hypersend.io/restartedAt annotation, if any (see deployment.chat_deployment).
    restarted_at: str | None = None
    # Values of the user Secrets the chat pods read ("<secret>/<key>" -> value, None when
    # absent): only hashed into the pod template (deployment.config_hash), never rendered.
    user_secret_values: Mapping[str, str | None] = field(default_factory=dict, repr=False)

    def has(self, capability: str) -> bool:
        return capability in self.capabilities
