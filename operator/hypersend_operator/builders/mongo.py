"""In-cluster MongoDB: one StatefulSet pod on a PVC, a headless Service, root credentials from the
generated Secret, and an init script that creates the chat pods' own user. Atlas mode builds
nothing (the connection Secret is the user's, never touched).

PVCs come from volumeClaimTemplates and carry no owner reference to the CR, so data outlives the
cluster by default; `deletePolicy: Delete` turns on the StatefulSet's own PVC retention policy
(`whenDeleted: Delete`), which lets the garbage collector remove them with the StatefulSet. The
credentials Secret follows the same policy (secrets.mongo_credentials_owned), and the claim name
depends only on the cluster's name, so a re-created cluster reattaches the retained volume with
the passwords it was initialised with.

Root is only for the MongoDB container. The official image runs `/docker-entrypoint-initdb.d/*.js`
with mongosh as root once, when it initialises an empty volume; the script mounted there from
the init ConfigMap creates the application user with role readWrite on the chat database only,
from environment variables the container takes from the credentials Secret. A volume initialised
before that script existed has no application user: docs/install.md says how to create it.
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
    MONGO_APP_PASSWORD_KEY,
    MONGO_APP_USERNAME_KEY,
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
INIT_VOLUME = "init"
INIT_DIR = "/docker-entrypoint-initdb.d"
INIT_SCRIPT_KEY = "create-app-user.js"
# The application user, for the init script (and the dev image's FerretDB entry point,
# tools/gomod/ferretdb-server/mongod, which creates it without mongosh).
APP_USERNAME_ENV = "HYPERSEND_MONGO_APP_USERNAME"
APP_PASSWORD_ENV = "HYPERSEND_MONGO_APP_PASSWORD"
APP_DATABASE_ENV = "HYPERSEND_MONGO_APP_DATABASE"

# mongosh, run by the official image's entry point as root, once, on an empty volume. Values
# come from the environment so the script holds no secret; it is idempotent, so running it by
# hand on a volume initialised without it (docs/install.md) is safe.
INIT_SCRIPT = f"""\
// Created by hypersend-operator: the chat pods' user, limited to the chat database.
const database = process.env.{APP_DATABASE_ENV};
const user = process.env.{APP_USERNAME_ENV};
const pwd = process.env.{APP_PASSWORD_ENV};
const target = db.getSiblingDB(database);
const roles = [{{ role: "readWrite", db: database }}];
if (target.getUser(user) === null) {{
  target.createUser({{ user: user, pwd: pwd, roles: roles }});
}} else {{
  target.updateUser(user, {{ pwd: pwd, roles: roles }});
}}
"""


def mongo_name(ctx: BuildContext) -> str:
    return child_name(ctx, MONGO)


def mongo_pvc_names(ctx: BuildContext) -> list[str]:
    """Names of the PVCs the StatefulSet creates (one replica)."""
    return [f"{DATA_VOLUME}-{mongo_name(ctx)}-0"]


def mongo_init_name(ctx: BuildContext) -> str:
    return child_name(ctx, f"{MONGO}-init")


def mongo_init_config_map(ctx: BuildContext) -> dict[str, Any]:
    """The init script (no secret in it: the values come from the container's environment)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ctx, mongo_init_name(ctx), MONGO),
        "data": {INIT_SCRIPT_KEY: INIT_SCRIPT},
    }


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
                                _secret_env(APP_USERNAME_ENV, credentials, MONGO_APP_USERNAME_KEY),
                                _secret_env(APP_PASSWORD_ENV, credentials, MONGO_APP_PASSWORD_KEY),
                                {"name": APP_DATABASE_ENV, "value": mongo.database},
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
                                {"name": INIT_VOLUME, "mountPath": INIT_DIR, "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "configdb", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": INIT_VOLUME, "configMap": {"name": mongo_init_name(ctx)}},
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
    return [mongo_init_config_map(ctx), mongo_headless_service(ctx), mongo_statefulset(ctx)]
