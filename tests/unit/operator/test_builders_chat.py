"""Chat Deployment, Service and ConfigMap builders."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypersend_operator.api import RESTARTED_AT_ANNOTATION
from hypersend_operator.builders import (
    CONFIG_HASH_ANNOTATION,
    BuildContext,
    build_all,
    config_hash,
)
from hypersend_operator.builders.configmap import chat_config_data, chat_config_map
from hypersend_operator.builders.deployment import chat_deployment
from hypersend_operator.builders.service import chat_service

from tests.unit.operator.support import IMAGE, ctx, env_of

pytestmark = pytest.mark.unit


def container_of(c: BuildContext) -> dict[str, Any]:
    dep = chat_deployment(c)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_default_deployment_shape() -> None:
    dep = chat_deployment(ctx())
    assert dep["apiVersion"] == "apps/v1"
    assert dep["metadata"]["name"] == "demo-chat"
    assert dep["metadata"]["namespace"] == "team-a"
    spec = dep["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "hypersend",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "chat",
    }
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    keys = [(t["topologyKey"], t["whenUnsatisfiable"]) for t in pod["topologySpreadConstraints"]]
    assert keys == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ("kubernetes.io/hostname", "ScheduleAnyway"),
    ]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"


def test_autoscaling_on_leaves_replicas_to_the_hpa() -> None:
    assert "replicas" not in chat_deployment(ctx())["spec"]


def test_autoscaling_off_sets_replicas() -> None:
    dep = chat_deployment(ctx(autoscaling={"enabled": False}, chat={"replicas": 4}))
    assert dep["spec"]["replicas"] == 4


def test_container_image_port_probes_and_resources() -> None:
    c = container_of(ctx())
    assert c["image"] == IMAGE
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert c["envFrom"] == [{"configMapRef": {"name": "demo-chat"}}]


def test_security_context_is_restricted() -> None:
    dep = chat_deployment(ctx())
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] == 10001


def test_drain_prestop_and_grace_period() -> None:
    c = ctx(chat={"websocket": {"drainDelaySeconds": 7, "drainSeconds": 45}})
    dep = chat_deployment(c)
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
    assert pod["terminationGracePeriodSeconds"] >= 7 + 45
    assert pod["terminationGracePeriodSeconds"] == 62


def test_zero_drain_delay_has_no_prestop() -> None:
    c = container_of(ctx(chat={"websocket": {"drainDelaySeconds": 0}}))
    assert "lifecycle" not in c


def test_in_cluster_env_wiring() -> None:
    env = env_of(container_of(ctx()))
    assert env["HYPERSEND_JWT_KEYS"]["valueFrom"] == {
        "secretKeyRef": {"name": "demo-jwt", "key": "jwt-keys"}
    }
    assert env["HYPERSEND_MONGO_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "demo-mongo-credentials", "key": "url"}
    }
    assert env["HYPERSEND_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Issue #11: the in-cluster Redis has a password, so its URL is a Secret too.
    assert env["HYPERSEND_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "demo-redis-credentials", "key": "url"}
    }
    assert "HYPERSEND_REDIS_URL" not in chat_config_data(ctx())


def test_external_redis_and_atlas_env_wiring() -> None:
    c = ctx(
        redis={"mode": "External", "external": {"urlSecretRef": {"name": "cache", "key": "url"}}},
        mongo={"mode": "Atlas", "atlas": {"connectionSecretRef": {"name": "atl", "key": "uri"}}},
    )
    env = env_of(container_of(c))
    assert env["HYPERSEND_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "cache", "key": "url"}
    }
    assert env["HYPERSEND_MONGO_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "atl", "key": "uri"}
    }
    assert "HYPERSEND_REDIS_URL" not in chat_config_data(c)


def test_extra_env_follows_operator_env() -> None:
    c = ctx(chat={"env": [{"name": "HYPERSEND_MAX_MESSAGE_BYTES", "value": "32768"}]})
    env = container_of(c)["env"]
    assert env[-1] == {"name": "HYPERSEND_MAX_MESSAGE_BYTES", "value": "32768"}


def test_config_map_carries_the_env_contract() -> None:
    c = ctx(
        chat={
            "logLevel": "debug",
            "rateLimit": {"requestsPerMinute": 50},
            "websocket": {"pingIntervalSeconds": 20, "maxConnectionsPerPod": 3000},
        },
        mongo={"database": "chat", "pool": {"minSize": 5, "maxSize": 20}},
    )
    cm = chat_config_map(c)
    assert cm["metadata"]["name"] == "demo-chat"
    assert cm["data"] == {
        "HYPERSEND_DRAIN_DELAY_SECONDS": "0",  # the preStop sleep waits instead
        "HYPERSEND_DRAIN_SECONDS": "30",
        "HYPERSEND_HOST": "0.0.0.0",
        "HYPERSEND_LOG_LEVEL": "debug",
        "HYPERSEND_MONGO_DB": "chat",
        "HYPERSEND_MONGO_MAX_POOL": "20",
        "HYPERSEND_MONGO_MIN_POOL": "5",
        "HYPERSEND_PORT": "8080",
        "HYPERSEND_RATE_LIMIT_PER_MINUTE": "50",
        # Ingress controllers on pod networks: their X-Forwarded-For names the client.
        "HYPERSEND_TRUSTED_PROXIES": "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, "
        "fc00::/7",
        "HYPERSEND_WS_IDLE_TIMEOUT_SECONDS": "300",
        "HYPERSEND_WS_MAX_CONNECTIONS": "3000",
        "HYPERSEND_WS_PING_INTERVAL_SECONDS": "20",
        "HYPERSEND_WEB_CLIENT": "false",
    }
    assert all(isinstance(v, str) for v in cm["data"].values())
    web = chat_config_map(ctx(chat={"webClient": True}))
    assert web["data"]["HYPERSEND_WEB_CLIENT"] == "true"


def test_config_hash_is_stable_and_on_the_pod_template() -> None:
    first, second = ctx(), ctx()
    assert config_hash(first) == config_hash(second)
    assert len(config_hash(first)) == 64
    annotations = chat_deployment(first)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[CONFIG_HASH_ANNOTATION] == config_hash(first)
    assert build_all(first) == build_all(second)


def test_config_hash_follows_secret_values() -> None:
    """Issue #11: a rotated Secret rolls the pods; the values never show in a manifest."""
    replace = dataclasses.replace
    base = ctx()
    rotated_jwt = replace(base, secrets=replace(base.secrets, jwt_keys="j" * 43))
    rotated_mongo = replace(base, secrets=replace(base.secrets, mongo_app_password="other"))
    assert config_hash(rotated_jwt) != config_hash(base)
    assert config_hash(rotated_mongo) != config_hash(base)
    # Root is the MongoDB container's alone: the chat pods do not read it.
    rotated_root = replace(base, secrets=replace(base.secrets, mongo_root_password="other"))
    assert config_hash(rotated_root) == config_hash(base)

    ref = {"urlSecretRef": {"name": "r", "key": "u"}}
    external = ctx(redis={"mode": "External", "external": ref})
    one, two = "redis://:one@redis:6379/0", "redis://:two@redis:6379/0"
    first = replace(external, user_secret_values={"r/u": one})
    assert config_hash(first) == config_hash(replace(external, user_secret_values={"r/u": one}))
    assert config_hash(first) != config_hash(replace(external, user_secret_values={"r/u": two}))
    # An unrelated Secret's value does not matter.
    other = replace(external, user_secret_values={"r/u": one, "x/y": "z"})
    assert config_hash(other) == config_hash(first)
    # The user's value is in no manifest (the generated ones are, in their own Secrets).
    assert one not in json.dumps(build_all(first))


def test_config_hash_ignores_generated_passwords_of_datastores_not_in_the_cluster() -> None:
    """With Atlas and an external Redis no Secret keeps the generated passwords: each pass
    generates new ones, which must not roll the pods (a rollout on every pass, found in e2e)."""
    replace = dataclasses.replace
    ref = {"urlSecretRef": {"name": "r", "key": "u"}}
    atlas = {"mode": "Atlas", "atlas": {"connectionSecretRef": {"name": "a", "key": "uri"}}}
    outside = ctx(mongo=atlas, redis={"mode": "External", "external": ref})
    regenerated = replace(
        outside,
        secrets=replace(
            outside.secrets, mongo_root_password="x", mongo_app_password="z", redis_password="y"
        ),
    )
    assert config_hash(regenerated) == config_hash(outside)


def test_config_hash_ignores_what_pods_do_not_read() -> None:
    base = config_hash(ctx())
    assert config_hash(ctx(autoscaling={"maxReplicas": 20})) == base
    assert config_hash(ctx(chat={"image": "ghcr.io/hypersend/chatserver:0.2.0"})) == base
    assert config_hash(ctx(chat={"resources": {"requests": {"cpu": "1"}}})) == base
    assert config_hash(ctx(ingress={"enabled": True, "host": "a.example"})) == base


@pytest.mark.parametrize(
    "blocks",
    [
        {"chat": {"logLevel": "warning"}},
        {"chat": {"rateLimit": {"requestsPerMinute": 10}}},
        {"chat": {"env": [{"name": "X", "value": "1"}]}},
        {"mongo": {"pool": {"maxSize": 40}}},
        {"redis": {"mode": "External", "external": {"urlSecretRef": {"name": "r", "key": "u"}}}},
    ],
)
def test_config_hash_changes_with_config(blocks: dict[str, Any]) -> None:
    assert config_hash(ctx(**blocks)) != config_hash(ctx())


def test_config_hash_does_not_contain_secret_values() -> None:
    dep = chat_deployment(ctx())
    assert "k" * 43 not in str(dep)


def test_service() -> None:
    svc = chat_service(ctx())
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0]["name"] == "http"
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert svc["spec"]["selector"] == chat_deployment(ctx())["spec"]["selector"]["matchLabels"]


def test_restart_stamp_goes_on_the_chat_pod_template_only() -> None:
    stamp = "2026-01-01T00:00:00Z"
    stamped_ctx = dataclasses.replace(ctx(), restarted_at=stamp)
    stamped = {
        m["metadata"]["name"]
        for m in build_all(stamped_ctx)
        if m["kind"] in ("Deployment", "StatefulSet")
        and m["spec"]["template"]["metadata"].get("annotations", {}).get(RESTARTED_AT_ANNOTATION)
        == stamp
    }
    assert stamped == {f"{stamped_ctx.name}-chat"}
    # Without a stamp nothing changes, so an unstamped cluster never rolls.
    assert build_all(ctx()) == build_all(dataclasses.replace(ctx(), restarted_at=None))


def test_trusted_proxies_reach_the_chat_server() -> None:
    """Issue #11: the per-address limits need the client's address from the Ingress."""
    data = chat_config_data(ctx(chat={"trustedProxies": ["10.42.0.0/16", "2001:db8::1"]}))
    assert data["HYPERSEND_TRUSTED_PROXIES"] == "10.42.0.0/16, 2001:db8::1"
    assert chat_config_data(ctx(chat={"trustedProxies": []}))["HYPERSEND_TRUSTED_PROXIES"] == ""
    with pytest.raises(ValueError, match="not an IP or CIDR"):
        ctx(chat={"trustedProxies": ["10.0.0.0/99"]})
