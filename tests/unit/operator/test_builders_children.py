"""Secrets, Redis, MongoDB, HPA, PDB, Ingress, NetworkPolicy and monitoring builders, and the
assembly: reconcile order, labels and owner references on everything the CR owns."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from hypersend_operator.builders import (
    COMPONENT_NAMES,
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
    BuildContext,
    build_all,
    build_components,
    decode_secret_value,
    managed_selector,
    mongo_pvc_names,
    owned_kinds,
    user_secret_refs,
)

from tests.unit.operator.support import (
    JWT_KEY,
    MONGO_APP_PASSWORD,
    MONGO_PASSWORD,
    REDIS_PASSWORD,
    ctx,
    find,
    kinds,
)

pytestmark = pytest.mark.unit

ATLAS = {
    "mode": "Atlas",
    "atlas": {"connectionSecretRef": {"name": "hypersend-atlas", "key": "uri"}},
}
EXTERNAL_REDIS = {"mode": "External", "external": {"urlSecretRef": {"name": "cache", "key": "url"}}}
MONITORING_CAPS = frozenset({SERVICE_MONITOR, PROMETHEUS_RULE})


def test_default_children_in_reconcile_order() -> None:
    components = build_components(ctx())
    assert [c.name for c in components] == list(COMPONENT_NAMES)
    assert COMPONENT_NAMES == (
        "secrets", "config", "redis", "mongo", "chat",
        "autoscaling", "disruption", "ingress", "network", "monitoring",
    )  # fmt: skip
    assert kinds(ctx()) == [
        ("Secret", "demo-jwt"),
        ("Secret", "demo-mongo-credentials"),
        ("Secret", "demo-redis-credentials"),
        ("ConfigMap", "demo-chat"),
        ("Service", "demo-redis"),
        ("Deployment", "demo-redis"),
        ("PodDisruptionBudget", "demo-redis"),
        ("ConfigMap", "demo-mongo-init"),
        ("Service", "demo-mongo"),
        ("StatefulSet", "demo-mongo"),
        ("Service", "demo-chat"),
        ("Deployment", "demo-chat"),
        ("HorizontalPodAutoscaler", "demo-chat"),
        ("PodDisruptionBudget", "demo-chat"),
        ("NetworkPolicy", "demo-chat"),
        ("NetworkPolicy", "demo-redis"),
        ("NetworkPolicy", "demo-mongo"),
    ]


def test_every_child_is_labelled_and_owned_by_the_cluster() -> None:
    c = ctx(
        ingress={"enabled": True, "host": "chat.example.com"},
        networkPolicy={"enabled": True},
        monitoring={"serviceMonitor": True, "prometheusRule": True},
        # Under the default Retain the MongoDB credentials outlive the CR (tested below).
        mongo={"deletePolicy": "Delete"},
        capabilities=MONITORING_CAPS,
    )
    manifests = build_all(c)
    assert len(manifests) == 20
    owned = {(k.api_version, k.kind) for k in owned_kinds()}
    for m in manifests:
        meta = m["metadata"]
        assert meta["namespace"] == "team-a"
        assert (m["apiVersion"], m["kind"]) in owned
        assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "hypersend-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "hypersend"
        assert meta["labels"]["app.kubernetes.io/name"] == "hypersend"
        assert meta["labels"]["app.kubernetes.io/component"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "hypersend.io/v1alpha1",
                "kind": "HypersendCluster",
                "name": "demo",
                "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert managed_selector("demo") == (
        "app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=hypersend-operator"
    )


def test_builders_are_deterministic_and_do_not_share_state() -> None:
    c = ctx()
    first = build_all(c)
    first[0]["metadata"]["labels"]["mutated"] = "yes"
    assert "mutated" not in build_all(c)[0]["metadata"]["labels"]
    assert build_all(c) == build_all(ctx())


# --- secrets


def test_generated_secrets_render_the_given_values() -> None:
    manifests = build_all(ctx())
    jwt = find(manifests, "Secret", "demo-jwt")
    assert decode_secret_value(jwt, "jwt-keys") == JWT_KEY
    creds = find(manifests, "Secret", "demo-mongo-credentials")
    assert decode_secret_value(creds, "username") == "root"
    assert decode_secret_value(creds, "password") == MONGO_PASSWORD
    assert decode_secret_value(creds, "app-username") == "hypersend-chat"
    assert decode_secret_value(creds, "app-password") == MONGO_APP_PASSWORD
    # The chat pods' URL: the application user against the chat database, never root.
    url = decode_secret_value(creds, "url")
    assert url == (
        "mongodb://hypersend-chat:%40pp%2Fp%3Ass@demo-mongo-0.demo-mongo.team-a.svc:27017"
        "/hypersend?authSource=hypersend"
    )
    assert decode_secret_value(creds, "missing") is None
    assert base64.b64decode(jwt["data"]["jwt-keys"]).decode() == JWT_KEY


def test_mongo_credentials_outlive_the_cr_under_retain_and_go_with_it_under_delete() -> None:
    """Issue #11: under Retain the volume survives the CR, so must the passwords it was
    initialised with (no owner reference, like the PVCs); under Delete the CR owns them."""
    retained = find(build_all(ctx()), "Secret", "demo-mongo-credentials")
    assert "ownerReferences" not in retained["metadata"]
    assert retained["metadata"]["annotations"] == {"hypersend.io/generated": "true"}
    deleted = find(
        build_all(ctx(mongo={"deletePolicy": "Delete"})), "Secret", "demo-mongo-credentials"
    )
    assert [o["uid"] for o in deleted["metadata"]["ownerReferences"]] == [
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    ]
    # Only the owner reference differs: the same values, the same name.
    del deleted["metadata"]["ownerReferences"]
    assert deleted == retained
    # The other Secrets are the cluster's whatever the policy.
    for name in ("demo-jwt", "demo-redis-credentials"):
        assert find(build_all(ctx()), "Secret", name)["metadata"]["ownerReferences"]


def test_a_recreated_cluster_renders_the_same_credentials_and_claim() -> None:
    """Same name and passwords, another uid: the retained Secret needs no write (nothing in it
    names the CR) and the StatefulSet asks for the same claim."""
    first = ctx()
    again = dataclasses.replace(first, uid="00000000-0000-0000-0000-000000000002")
    name = "demo-mongo-credentials"
    assert find(build_all(again), "Secret", name) == find(build_all(first), "Secret", name)
    assert mongo_pvc_names(again) == mongo_pvc_names(first) == ["data-demo-mongo-0"]
    sts = find(build_all(again), "StatefulSet", "demo-mongo")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_chat_pods_never_see_the_root_password() -> None:
    manifests = build_all(ctx())
    creds = find(manifests, "Secret", "demo-mongo-credentials")
    chat = find(manifests, "Deployment", "demo-chat")["spec"]["template"]["spec"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for e in chat["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    mongo_refs = [r for r in refs if r["name"] == "demo-mongo-credentials"]
    assert mongo_refs == [{"name": "demo-mongo-credentials", "key": "url"}]
    assert MONGO_PASSWORD not in (decode_secret_value(creds, "url") or "")
    assert "root" not in (decode_secret_value(creds, "url") or "")


def test_mongo_init_script_creates_the_app_user_from_the_environment() -> None:
    c = ctx(mongo={"database": "chatdb"})
    manifests = build_all(c)
    init = find(manifests, "ConfigMap", "demo-mongo-init")
    assert init["metadata"]["ownerReferences"][0]["kind"] == "HypersendCluster"
    assert list(init["data"]) == ["create-app-user.js"]
    script = init["data"]["create-app-user.js"]
    for variable in (
        "HYPERSEND_MONGO_APP_DATABASE",
        "HYPERSEND_MONGO_APP_USERNAME",
        "HYPERSEND_MONGO_APP_PASSWORD",
    ):
        assert f"process.env.{variable}" in script
    assert 'role: "readWrite", db: database' in script
    assert "createUser" in script
    assert "updateUser" in script  # safe to run again by hand
    # No value in the ConfigMap: the passwords stay in the Secret.
    dumped = json.dumps(init)
    for secret in (MONGO_PASSWORD, MONGO_APP_PASSWORD, "hypersend-chat", "chatdb"):
        assert secret not in dumped

    pod = find(manifests, "StatefulSet", "demo-mongo")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {
        "name": "init",
        "mountPath": "/docker-entrypoint-initdb.d",
        "readOnly": True,
    } in container["volumeMounts"]
    assert {"name": "init", "configMap": {"name": "demo-mongo-init"}} in pod["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HYPERSEND_MONGO_APP_DATABASE"] == {
        "name": "HYPERSEND_MONGO_APP_DATABASE",
        "value": "chatdb",
    }
    url = decode_secret_value(find(manifests, "Secret", "demo-mongo-credentials"), "url")
    assert url is not None
    assert url.endswith("/chatdb?authSource=chatdb")


def test_atlas_mode_builds_no_mongo_and_never_the_atlas_secret() -> None:
    names = kinds(ctx(mongo=ATLAS))
    assert ("Secret", "demo-mongo-credentials") not in names
    assert ("StatefulSet", "demo-mongo") not in names
    assert ("Service", "demo-mongo") not in names
    assert ("ConfigMap", "demo-mongo-init") not in names
    assert all(name != "hypersend-atlas" for _, name in names)


def test_user_secret_refs_lists_what_the_user_must_provide() -> None:
    assert user_secret_refs(ctx().spec) == []
    refs = user_secret_refs(ctx(mongo=ATLAS, redis=EXTERNAL_REDIS).spec)
    assert [(r.component, r.field, r.ref.name, r.ref.key) for r in refs] == [
        ("redis", "redis.external.urlSecretRef", "cache", "url"),
        ("mongo", "mongo.atlas.connectionSecretRef", "hypersend-atlas", "uri"),
    ]


def test_secrets_repr_hides_values() -> None:
    assert JWT_KEY not in repr(ctx())
    assert MONGO_PASSWORD not in repr(ctx())


# --- redis


def test_in_cluster_redis() -> None:
    manifests = build_all(ctx(redis={"inCluster": {"image": "redis:7.4.2"}}))
    dep = find(manifests, "Deployment", "demo-redis")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "redis:7.4.2"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    svc = find(manifests, "Service", "demo-redis")
    assert svc["spec"]["ports"][0]["port"] == 6379
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_in_cluster_redis_probes_ask_redis_and_a_pdb_never_blocks_drains() -> None:
    manifests = build_all(ctx())
    dep = find(manifests, "Deployment", "demo-redis")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    for name in ("readinessProbe", "livenessProbe"):
        probe = container[name]
        # A frozen Redis keeps its port open: only an answered PING counts.
        assert "tcpSocket" not in probe
        # As the chat user (the default user is off); REDISCLI_AUTH holds its password.
        assert probe["exec"]["command"] == [
            "sh",
            "-c",
            "redis-cli --user hypersend-chat -p 6379 ping | grep -qx PONG",
        ]
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    # Out of the Service well before the liveness probe restarts it.
    assert (
        readiness["periodSeconds"] * readiness["failureThreshold"]
        < liveness["periodSeconds"] * liveness["failureThreshold"]
    )
    pdb = find(manifests, "PodDisruptionBudget", "demo-redis")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    chat_pdb = find(manifests, "PodDisruptionBudget", "demo-chat")
    assert chat_pdb["spec"]["selector"] != pdb["spec"]["selector"]


def test_default_redis_image_is_pinned() -> None:
    dep = find(build_all(ctx()), "Deployment", "demo-redis")
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ":" in image
    assert not image.endswith(":latest")


def test_external_redis_builds_nothing() -> None:
    names = kinds(ctx(redis=EXTERNAL_REDIS))
    assert not [n for n in names if n[1] == "demo-redis"]
    components = {c.name: c.manifests for c in build_components(ctx(redis=EXTERNAL_REDIS))}
    assert components["redis"] == []


# --- mongo


def test_in_cluster_mongo_statefulset() -> None:
    c = ctx(mongo={"inCluster": {"storage": {"size": "5Gi", "storageClassName": "fast"}}})
    manifests = build_all(c)
    sts = find(manifests, "StatefulSet", "demo-mongo")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "demo-mongo"
    (template,) = sts["spec"]["volumeClaimTemplates"]
    assert "ownerReferences" not in template["metadata"]  # data outlives the CR
    assert template["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "fast",
    }
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env == {
        "MONGO_INITDB_ROOT_USERNAME": {"name": "demo-mongo-credentials", "key": "username"},
        "MONGO_INITDB_ROOT_PASSWORD": {"name": "demo-mongo-credentials", "key": "password"},
        "HYPERSEND_MONGO_APP_USERNAME": {"name": "demo-mongo-credentials", "key": "app-username"},
        "HYPERSEND_MONGO_APP_PASSWORD": {"name": "demo-mongo-credentials", "key": "app-password"},
        "HYPERSEND_MONGO_APP_DATABASE": None,
    }
    database = next(
        e for e in pod["containers"][0]["env"] if e["name"] == "HYPERSEND_MONGO_APP_DATABASE"
    )
    assert database["value"] == "hypersend"
    assert "readinessProbe" in pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    svc = find(manifests, "Service", "demo-mongo")
    assert svc["spec"]["clusterIP"] == "None"
    assert mongo_pvc_names(c) == ["data-demo-mongo-0"]


def test_mongo_without_storage_class_leaves_the_default() -> None:
    sts = find(build_all(ctx()), "StatefulSet", "demo-mongo")
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert "storageClassName" not in claim
    assert claim["resources"]["requests"]["storage"] == "10Gi"


def test_delete_policy_delete_lets_the_statefulset_remove_pvcs() -> None:
    sts = find(build_all(ctx(mongo={"deletePolicy": "Delete"})), "StatefulSet", "demo-mongo")
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }


# --- autoscaling and disruption


def test_hpa_defaults() -> None:
    hpa = find(build_all(ctx()), "HorizontalPodAutoscaler", "demo-chat")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo-chat",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    pods, cpu, memory = spec["metrics"]
    assert pods == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "hypersend_websocket_connections"},
            "target": {"type": "AverageValue", "averageValue": "1000"},
        },
    }
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert memory["resource"]["target"]["averageUtilization"] == 80
    assert spec["behavior"] == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 30},
                {"type": "Pods", "value": 2, "periodSeconds": 30},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        },
    }


def test_hpa_follows_the_spec() -> None:
    c = ctx(
        autoscaling={
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetConnectionsPerPod": 250,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 60,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        }
    )
    spec = find(build_all(c), "HorizontalPodAutoscaler", "demo-chat")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 3)
    assert spec["metrics"][0]["pods"]["target"]["averageValue"] == "250"
    assert spec["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 60}
    ]
    assert spec["behavior"]["scaleUp"]["policies"][1]["value"] == 2  # untouched default


def test_autoscaling_off_builds_no_hpa() -> None:
    components = {
        c.name: c.manifests for c in build_components(ctx(autoscaling={"enabled": False}))
    }
    assert components["autoscaling"] == []


@pytest.mark.parametrize("value", [1, 0, "25%"])
def test_pdb(value: Any) -> None:
    c = ctx(chat={"podDisruptionBudget": {"maxUnavailable": value}})
    pdb = find(build_all(c), "PodDisruptionBudget", "demo-chat")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == value
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "chat"


def test_pdb_disabled() -> None:
    assert ("PodDisruptionBudget", "demo-chat") not in kinds(
        ctx(chat={"podDisruptionBudget": {"enabled": False}})
    )


# --- ingress and network policy


def test_ingress_off_by_default() -> None:
    assert not [k for k, _ in kinds(ctx()) if k == "Ingress"]


def test_ingress_with_tls_class_and_annotations() -> None:
    c = ctx(
        ingress={
            "enabled": True,
            "host": "chat.example.com",
            "className": "nginx",
            "tlsSecretName": "chat-tls",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
        }
    )
    ing = find(build_all(c), "Ingress", "demo-chat")
    assert ing["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"
    }
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "chat.example.com"
    backend = rule["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "demo-chat", "port": {"name": "http"}}}


def test_ingress_without_tls() -> None:
    ing = find(
        build_all(ctx(ingress={"enabled": True, "host": "a.example"})), "Ingress", "demo-chat"
    )
    assert "tls" not in ing["spec"]
    assert "ingressClassName" not in ing["spec"]
    assert "annotations" not in ing["metadata"]


def test_network_policies() -> None:
    manifests = build_all(ctx(networkPolicy={"enabled": True}))
    chat = find(manifests, "NetworkPolicy", "demo-chat")
    assert chat["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    chat_pods = {"podSelector": {"matchLabels": chat["spec"]["podSelector"]["matchLabels"]}}
    redis = find(manifests, "NetworkPolicy", "demo-redis")
    assert redis["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 6379}], "from": [chat_pods]}
    ]
    mongo = find(manifests, "NetworkPolicy", "demo-mongo")
    assert mongo["spec"]["ingress"][0]["from"] == [chat_pods]
    assert mongo["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 27017}]


def test_network_policies_skip_external_datastores() -> None:
    c = ctx(networkPolicy={"enabled": True}, redis=EXTERNAL_REDIS, mongo=ATLAS)
    assert [n for k, n in kinds(c) if k == "NetworkPolicy"] == ["demo-chat"]


def test_network_policies_by_default() -> None:
    """Issue #11: the in-cluster datastores are closed to every pod but the chat pods unless
    the spec opts out."""
    names = [n for k, n in kinds(ctx()) if k == "NetworkPolicy"]
    assert names == ["demo-chat", "demo-redis", "demo-mongo"]
    off = kinds(ctx(networkPolicy={"enabled": False}))
    assert not [k for k, _ in off if k == "NetworkPolicy"]


# --- monitoring


def _monitoring_kinds(c: BuildContext) -> list[str]:
    return [k for k, _ in kinds(c) if k in ("ServiceMonitor", "PrometheusRule")]


def test_monitoring_needs_both_the_flag_and_the_capability() -> None:
    wanted: dict[str, Any] = {"monitoring": {"serviceMonitor": True, "prometheusRule": True}}
    assert _monitoring_kinds(ctx(**wanted)) == []  # CRDs absent
    assert _monitoring_kinds(ctx(capabilities=MONITORING_CAPS)) == []  # not asked for
    only_sm = ctx(capabilities=frozenset({SERVICE_MONITOR}), **wanted)
    assert _monitoring_kinds(only_sm) == ["ServiceMonitor"]
    both = ctx(capabilities=MONITORING_CAPS, **wanted)
    assert _monitoring_kinds(both) == ["ServiceMonitor", "PrometheusRule"]


def test_service_monitor_and_rules() -> None:
    c = ctx(
        capabilities=MONITORING_CAPS,
        monitoring={"serviceMonitor": True, "prometheusRule": True, "interval": "15s"},
    )
    manifests = build_all(c)
    sm = find(manifests, "ServiceMonitor", "demo-chat")
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    chat_svc = find(manifests, "Service", "demo-chat")
    assert sm["spec"]["selector"]["matchLabels"].items() <= chat_svc["metadata"]["labels"].items()
    rule = find(manifests, "PrometheusRule", "demo-chat")
    (group,) = rule["spec"]["groups"]
    assert group["name"] == "hypersend-chat.team-a.demo"
    alerts = {r["alert"]: r for r in group["rules"]}
    assert list(alerts) == [
        "HypersendHighErrorRate",
        "HypersendHighLatency",
        "HypersendChatHighCPU",
        "HypersendChatHighMemory",
        "HypersendMongoPoolSaturated",
        "HypersendChatNearConnectionLimit",
        "HypersendPubSubLag",
        "HypersendGapFills",
        "HypersendSlowConsumerDisconnects",
        "HypersendClusterNotReady",
        "HypersendChatNoTargets",
        "HypersendChatAtMaxReplicas",
    ]
    pods = 'namespace="team-a", pod=~"demo-chat-[a-z0-9]+-[a-z0-9]+"'
    assert alerts["HypersendChatNearConnectionLimit"]["expr"] == (
        f"hypersend_websocket_connections{{{pods}}}"
        f" / hypersend_websocket_max_connections{{{pods}}} > 0.9"
    )
    # The spec's limits (default cpu 1, memory 1Gi), so no kube-state-metrics series is needed.
    assert alerts["HypersendChatHighMemory"]["expr"].endswith(" / (1073741824) > 0.9)")
    assert all(r["labels"]["hypersendcluster"] == "demo" for r in alerts.values())
    assert alerts["HypersendClusterNotReady"]["expr"] == (
        'hypersend_operator_cluster_ready{hypersendcluster_namespace="team-a", '
        'hypersendcluster="demo"} == 0'
    )


def test_rules_follow_the_spec_limits_and_autoscaling() -> None:
    c = ctx(
        capabilities=MONITORING_CAPS,
        monitoring={"prometheusRule": True},
        chat={"resources": {"limits": {"cpu": "1500m"}}},
        autoscaling={"enabled": False},
    )
    rule = find(build_all(c), "PrometheusRule", "demo-chat")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts["HypersendChatHighCPU"].endswith(" / (1.5) > 0.85)")
    assert "HypersendChatHighMemory" not in alerts  # no memory limit: no fraction of it
    assert "HypersendChatAtMaxReplicas" not in alerts


def test_monitoring_labels_go_on_both_objects_without_replacing_the_operators() -> None:
    c = ctx(
        capabilities=MONITORING_CAPS,
        monitoring={
            "serviceMonitor": True,
            "prometheusRule": True,
            "labels": {"release": "kube-prometheus-stack", "team": "chat"},
        },
    )
    manifests = build_all(c)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        labels = find(manifests, kind, "demo-chat")["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack"
        assert labels["team"] == "chat"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "hypersend-operator"
    # Only the monitoring objects get them.
    assert "release" not in find(manifests, "Service", "demo-chat")["metadata"]["labels"]


def test_owned_kinds_cover_every_built_kind_and_not_pvcs() -> None:
    names = {k.kind for k in owned_kinds()}
    assert "PersistentVolumeClaim" not in names
    assert {k.plural for k in owned_kinds() if k.capability} == {
        "servicemonitors",
        "prometheusrules",
    }
    sm = next(k for k in owned_kinds() if k.kind == "ServiceMonitor")
    assert (sm.group, sm.version) == ("monitoring.coreos.com", "v1")
    core = next(k for k in owned_kinds() if k.kind == "Secret")
    assert (core.group, core.version) == ("", "v1")


def test_in_cluster_redis_has_a_password_acl_and_protected_mode() -> None:
    """Issue #11: no unauthenticated access; the chat user runs only the chat server's commands
    on its key and channel prefix."""
    manifests = build_all(ctx())
    secret = find(manifests, "Secret", "demo-redis-credentials")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["password"] == REDIS_PASSWORD
    assert data["url"] == ("redis://hypersend-chat:r3d%21s%2Fp%40ss@demo-redis.team-a.svc:6379/0")
    default, chat = data["users.acl"].splitlines()
    assert default == "user default off resetpass resetkeys resetchannels -@all"
    assert REDIS_PASSWORD not in data["users.acl"]
    assert chat.startswith("user hypersend-chat on #")
    assert " ~hypersend:* &hypersend:* -@all +ping +publish " in chat
    dep = find(manifests, "Deployment", "demo-redis")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--protected-mode") + 1] == "yes"
    assert args[args.index("--aclfile") + 1] == "/etc/hypersend-redis/users.acl"
    assert container["env"] == [
        {
            "name": "REDISCLI_AUTH",
            "valueFrom": {"secretKeyRef": {"name": "demo-redis-credentials", "key": "password"}},
        }
    ]
    assert not [k for k, n in kinds(ctx(redis=EXTERNAL_REDIS)) if n == "demo-redis-credentials"]
