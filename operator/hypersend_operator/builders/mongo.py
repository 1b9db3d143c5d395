"""In-cluster MongoDB: one StatefulSet pod on a PVC, a headless Service, root credentials from the
generated Secret. Atlas mode builds nothing (the connection Secret is the user's, never touched).

PVCs come from volumeClaimTemplates and carry no owner reference to the CR, so data outlives the
cluster by default; `deletePolicy: Delete` turns on the StatefulSet's own PVC retention policy
(`whenDeleted: Delete`), which lets the garbage collector remove them with the StatefulSet.
"""

from __future__ import annotations

from typing import Any

from hypersend_operator.builders.context import BuildContext
from hypersend_operator.builders.labels import (
    MONGO,
    child_name,
    common_labels,
    metadata,
    selector_labels,
)
from hypersend_operator.builders.secrets import (
    MONGO_PASSWORD_KEY,
    MONGO_PORT,
    MONGO_USERNAME_KEY,
    mongo_credentials_secret_name,
)
from hypersend_operator.builders.security import (
    container_security_context,
    pod_security_context,
    resources,
)

MONGO_UID = 999  # the `mongodb` user of the official image
DATA_VOLUME = "data"


def mongo_name(ctx: BuildContext) -> str:
    return child_name(ctx, MONGO)


def mongo_pvc_names(ctx: BuildContext) -> list[str]:
    """Names of the PVCs the StatefulSet creates (one replica)."""
    return [f"{DATA_VOLUME}-{mongo_name(ctx)}-0"]


def mongo_headless_service(ctx: BuildContext) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ctx, mongo_name(ctx), MONGO),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(ctx, MONGO),
            "ports": [
                {"name": "mongo", "port": MONGO_PORT, "targetPort": "mongo", "protocol": "TCP"}
            ],
        },
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def mongo_statefulset(ctx: BuildContext) -> dict[str, Any]:
    mongo = ctx.spec.mongo
    settings = mongo.in_cluster_settings()
    credentials = mongo_credentials_secret_name(ctx.name)
    probe = {"tcpSocket": {"port": "mongo"}, "periodSeconds": 10, "timeoutSeconds": 5}
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": settings.storage.size}},
    }
    if settings.storage.storage_class_name is not None:
        claim_spec["storageClassName"] = settings.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(ctx, mongo_name(ctx), MONGO),
        "spec": {
            "replicas": 1,
            "serviceName": mongo_name(ctx),
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "revisionHistoryLimit": 3,
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete" if mongo.delete_policy == "Delete" else "Retain",
                "whenScaled": "Retain",
            },
            "selector": {"matchLabels": selector_labels(ctx, MONGO)},
            "template": {
                "metadata": {"labels": common_labels(ctx, MONGO)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": pod_security_context(MONGO_UID),
                    "containers": [
                        {
                            "name": "mongo",
                            "image": settings.image,
                            "args": ["mongod", "--bind_ip_all"],
                            "env": [
                                _secret_env(
                                    "MONGO_INITDB_ROOT_USERNAME", credentials, MONGO_USERNAME_KEY
                                ),
                                _secret_env(
                                    "MONGO_INITDB_ROOT_PASSWORD", credentials, MONGO_PASSWORD_KEY
                                ),
                            ],
                            "ports": [
                                {"name": "mongo", "containerPort": MONGO_PORT, "protocol": "TCP"}
                            ],
                            "resources": resources(
                                settings.resources.requests, settings.resources.limits
                            ),
                            "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
                            "readinessProbe": {**probe, "failureThreshold": 3},
                            "livenessProbe": {**probe, "failureThreshold": 6},
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": DATA_VOLUME, "mountPath": "/data/db"},
                                {"name": "configdb", "mountPath": "/data/configdb"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "configdb", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
            # No ownerReferences here: the PVCs must outlive the CR unless deletePolicy says so.
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": DATA_VOLUME, "labels": common_labels(ctx, MONGO)},
                    "spec": claim_spec,
                }
            ],
        },
    }


def build_mongo(ctx: BuildContext) -> list[dict[str, Any]]:
    if ctx.spec.mongo.mode != "InCluster":
        return []
    return [mongo_headless_service(ctx), mongo_statefulset(ctx)]
