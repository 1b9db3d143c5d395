"""The metric path on the real node, as a platform team runs it: Prometheus scraping the pods,
prometheus-adapter serving `custom.metrics.k8s.io` from it, and metrics-server serving
`metrics.k8s.io` from the kubelets, each a Deployment of pods on the node from images built here.

- Prometheus (3.16, built here with only Kubernetes service discovery) runs the scrape jobs of
  `charts/prometheus-scrape-config.yaml`, the file docs/install.md gives users without the
  Prometheus Operator (pod discovery with the prometheus.io annotations the chat and operator
  pods carry, and the kubelets' cAdvisor), and loads the chart's alert rule files.
  Only the intervals are the local cluster's own (LOCAL_SCRAPE_INTERVAL,
  LOCAL_ADAPTER_VALUES): a fresh cluster's first connection count comes in seconds, not minutes.
- prometheus-adapter runs with `charts/prometheus-adapter-values.yaml`, rendered as the
  prometheus-community chart renders it (its ConfigMap's `config.yaml` and its Deployment's
  arguments), with only `prometheus.url` pointed at this Prometheus, as a user's `--set` would.
- metrics-server verifies the kubelets' serving certificates with the cluster CA.

`install(cluster)` applies everything and waits until both APIServices are Available through the
API server's aggregator (which reaches the pods through the node relay's egress proxy);
`apply` and `wait_available` are its two halves, for callers with other work in between.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hypersend_devenv import images as devimages
from hypersend_devenv.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = REPO / "charts" / "prometheus-scrape-config.yaml"
ADAPTER_VALUES = REPO / "charts" / "prometheus-adapter-values.yaml"
# The alert rules as users without the Prometheus Operator load them (`rule_files:`).
RULE_FILES = sorted((REPO / "charts" / "hypersend-operator" / "files" / "rules").glob("*.yaml"))
PROMETHEUS_CONFIG_DIR = "/etc/prometheus"
NAMESPACE = "hypersend-monitoring"
PROMETHEUS_PORT = 9090
ADAPTER_PORT = 6443
METRICS_SERVER_PORT = 10250
NOBODY = 65534
CUSTOM_METRICS_API = "v1beta1.custom.metrics.k8s.io"
RESOURCE_METRICS_API = "v1beta1.metrics.k8s.io"
# The chart's defaults for what the values file leaves out (prometheus-adapter chart 4.x/5.x).
ADAPTER_CHART_DEFAULTS = {"metricsRelistInterval": "1m", "logLevel": 4}
# The local cluster's timing, set as a user's `--set` / edited interval would be (nothing else of
# the users' files changes). The adapter registers a metric only on a relist that finds its series,
# so with the chart's 1m a new cluster's first count waited up to a minute plus a 15 s scrape
# (./dev up and tests/e2e/test_node_autoscaling.py spent most of their waits there). The relist
# window must stay longer than the scrape interval, or a series can miss a relist and the
# metric disappear for a while (prometheus-adapter's docs on --metrics-relist-interval).
LOCAL_SCRAPE_INTERVAL = "5s"
LOCAL_ADAPTER_VALUES = {"metricsRelistInterval": "15s"}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class MetricImages:
    """The image references of the metric path's pods (built by hypersend_devenv.images)."""

    prometheus: str
    adapter: str
    metrics_server: str

    @classmethod
    def built_here(cls) -> MetricImages:
        return cls(
            prometheus=devimages.PROMETHEUS_IMAGE,
            adapter=devimages.PROMETHEUS_ADAPTER_IMAGE,
            metrics_server=devimages.METRICS_SERVER_IMAGE,
        )


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": {"app": name}, **extra}


def _restricted_pod(
    name: str, service_account: str, container: Manifest, volumes: list[Manifest]
) -> Manifest:
    """A one-container pod spec that the restricted Pod Security Standard admits."""
    return {
        "serviceAccountName": service_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NOBODY,
            "runAsGroup": NOBODY,
            "fsGroup": NOBODY,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": name,
                "imagePullPolicy": "Never",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                **container,
            }
        ],
        "volumes": volumes,
    }


def _deployment(name: str, pod: Manifest, config_hash: str = "") -> Manifest:
    annotations = {"hypersend.io/config-hash": config_hash} if config_hash else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": pod,
            },
        },
    }


def _service(name: str, port: int, target: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name),
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]},
    }


def _service_account(name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)}


def _cluster_role(name: str, rules: list[Manifest]) -> list[Manifest]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"hypersend:{name}"},
            "rules": rules,
        },
        _binding(
            "ClusterRoleBinding", f"hypersend:{name}", "ClusterRole", f"hypersend:{name}", name
        ),
    ]


def _binding(
    kind: str, name: str, role_kind: str, role: str, account: str, namespace: str = ""
) -> Manifest:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
    }


def _aggregated_api_access(account: str) -> list[Manifest]:
    """What every aggregated API server needs: delegated authn/authz and the auth ConfigMap."""
    return [
        _binding(
            "ClusterRoleBinding", f"hypersend:{account}:auth-delegator", "ClusterRole",
            "system:auth-delegator", account,
        ),
        _binding(
            "RoleBinding", f"hypersend:{account}:auth-reader", "Role",
            "extension-apiserver-authentication-reader", account, namespace="kube-system",
        ),
    ]  # fmt: skip


def _apiservice(name: str, service: str) -> Manifest:
    """As the upstream manifests register them: the servers make self-signed serving certs."""
    version, group = name.split(".", 1)
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "version": version,
            "service": {"name": service, "namespace": NAMESPACE, "port": 443},
            "insecureSkipTLSVerify": True,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }


# ---------------------------------------------------------------------------------------------
# Prometheus


def prometheus_config(
    scrape_file: Path = SCRAPE_CONFIG,
    rule_files: list[Path] = RULE_FILES,
    scrape_interval: str | None = None,
) -> Manifest:
    """The users' scrape jobs and rule files; `scrape_interval` replaces every job's interval
    (and the global one) when given."""
    jobs = yaml.safe_load(scrape_file.read_text())["scrape_configs"]
    if scrape_interval is not None:
        jobs = [{**job, "scrape_interval": scrape_interval} for job in jobs]
    interval = scrape_interval or "15s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [f"{PROMETHEUS_CONFIG_DIR}/{path.name}" for path in rule_files],
        "scrape_configs": jobs,
    }


def prometheus_files(config: Manifest, rule_files: list[Path] = RULE_FILES) -> dict[str, str]:
    """The files of Prometheus's config directory: prometheus.yml and the rule files it names."""
    files = {"prometheus.yml": yaml.safe_dump(config, sort_keys=False)}
    files.update({path.name: path.read_text() for path in rule_files})
    return files


def prometheus_manifests(
    image: str, config: Manifest, rule_files: list[Path] = RULE_FILES
) -> list[Manifest]:
    name = "prometheus"
    files = prometheus_files(config, rule_files)
    text = "".join(f"{key}\n{value}" for key, value in sorted(files.items()))
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name),
        "data": files,
    }
    pod = _restricted_pod(
        name,
        name,
        {
            "image": image,
            "args": [
                f"--config.file={PROMETHEUS_CONFIG_DIR}/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                "--storage.tsdb.retention.time=2h",
                f"--web.listen-address=:{PROMETHEUS_PORT}",
            ],
            "ports": [{"name": "http", "containerPort": PROMETHEUS_PORT}],
            "readinessProbe": {
                "httpGet": {"path": "/-/ready", "port": PROMETHEUS_PORT},
                "periodSeconds": 2,
            },
            "volumeMounts": [
                {"name": "config", "mountPath": PROMETHEUS_CONFIG_DIR},
                {"name": "data", "mountPath": "/prometheus"},
            ],
        },
        [{"name": "config", "configMap": {"name": name}}, {"name": "data", "emptyDir": {}}],
    )
    rules = [
        {
            "apiGroups": [""],
            "resources": ["pods", "nodes", "services", "endpoints"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
    ]
    return [
        _service_account(name),
        *_cluster_role(name, rules),
        config_map,
        _deployment(name, pod, _hash(text)),
        _service(name, PROMETHEUS_PORT, PROMETHEUS_PORT),
    ]


def prometheus_url() -> str:
    return f"http://prometheus.{NAMESPACE}.svc"


# ---------------------------------------------------------------------------------------------
# prometheus-adapter


def adapter_values(values_file: Path = ADAPTER_VALUES) -> Manifest:
    """The values file with `prometheus.url` pointed at this cluster's Prometheus."""
    values: Manifest = copy.deepcopy(yaml.safe_load(values_file.read_text()))
    values.setdefault("prometheus", {})["url"] = prometheus_url()
    values["prometheus"]["port"] = PROMETHEUS_PORT
    return values


def adapter_config(values: Mapping[str, Any]) -> Manifest:
    """The chart's `config.yaml`: `rules` from rules.custom (the values turn defaults off),
    `externalRules` and `resourceRules` when given."""
    rules = values.get("rules", {})
    if rules.get("default"):
        raise ValueError("the values file turns the chart's default rules on; render them too")
    config: Manifest = {}
    if rules.get("custom"):
        config["rules"] = rules["custom"]
    if rules.get("external"):
        config["externalRules"] = rules["external"]
    if rules.get("resource"):
        config["resourceRules"] = rules["resource"]
    return config


def adapter_args(values: Mapping[str, Any]) -> list[str]:
    """The chart's container arguments for these values."""
    prometheus = values["prometheus"]
    merged = {**ADAPTER_CHART_DEFAULTS, **values}
    return [
        "/adapter",
        "--secure-port=6443",
        "--cert-dir=/tmp/cert",
        f"--prometheus-url={prometheus['url']}:{prometheus['port']}{prometheus.get('path', '')}",
        f"--metrics-relist-interval={merged['metricsRelistInterval']}",
        f"--v={merged['logLevel']}",
        "--config=/etc/adapter/config.yaml",
    ]


def adapter_manifests(image: str, values: Mapping[str, Any]) -> list[Manifest]:
    name = "prometheus-adapter"
    text = yaml.safe_dump(adapter_config(values), sort_keys=False)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name),
        "data": {"config.yaml": text},
    }
    args = adapter_args(values)
    pod = _restricted_pod(
        name,
        name,
        {
            "image": image,
            "command": args[:1],
            "args": args[1:],
            "ports": [{"name": "https", "containerPort": ADAPTER_PORT}],
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": ADAPTER_PORT, "scheme": "HTTPS"},
                "periodSeconds": 2,
            },
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/adapter"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        },
        [{"name": "config", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}}],
    )
    reader = [
        {
            "apiGroups": [""],
            "resources": ["namespaces", "pods", "services", "configmaps"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    return [
        _service_account(name),
        *_cluster_role(name, reader),
        *_aggregated_api_access(name),
        # The HPA controller reads the custom metrics API.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "hypersend:custom-metrics-reader"},
            "rules": [
                {
                    "apiGroups": ["custom.metrics.k8s.io"],
                    "resources": ["*"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "hypersend:hpa-custom-metrics"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "hypersend:custom-metrics-reader",
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": "horizontal-pod-autoscaler",
                    "namespace": "kube-system",
                }
            ],
        },
        config_map,
        _deployment(name, pod, _hash(text)),
        _service(name, 443, ADAPTER_PORT),
        _apiservice(CUSTOM_METRICS_API, name),
    ]


# ---------------------------------------------------------------------------------------------
# metrics-server


def metrics_server_manifests(image: str, kubelet_ca_pem: bytes) -> list[Manifest]:
    name = "metrics-server"
    ca_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("kubelet-ca"),
        "data": {"ca.crt": kubelet_ca_pem.decode()},
    }
    pod = _restricted_pod(
        name,
        name,
        {
            "image": image,
            "command": ["/metrics-server"],
            "args": [
                "--cert-dir=/tmp",
                f"--secure-port={METRICS_SERVER_PORT}",
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",
                "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt",
                "--metric-resolution=15s",
            ],
            "ports": [{"name": "https", "containerPort": METRICS_SERVER_PORT}],
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": METRICS_SERVER_PORT, "scheme": "HTTPS"},
                "periodSeconds": 2,
            },
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "kubelet-ca", "mountPath": "/etc/kubelet-ca"},
            ],
        },
        [
            {"name": "tmp", "emptyDir": {}},
            {"name": "kubelet-ca", "configMap": {"name": "kubelet-ca"}},
        ],
    )
    rules = [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    ]
    aggregated_reader = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": "hypersend:aggregated-metrics-reader",
            "labels": {
                "rbac.authorization.k8s.io/aggregate-to-view": "true",
                "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                "rbac.authorization.k8s.io/aggregate-to-admin": "true",
            },
        },
        "rules": [
            {
                "apiGroups": ["metrics.k8s.io"],
                "resources": ["pods", "nodes"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    return [
        _service_account(name),
        *_cluster_role(name, rules),
        *_aggregated_api_access(name),
        aggregated_reader,
        ca_map,
        _deployment(name, pod),
        _service(name, 443, METRICS_SERVER_PORT),
        _apiservice(RESOURCE_METRICS_API, name),
    ]


def namespace() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_stream(manifests: list[Manifest]) -> str:
    return "\n".join(json.dumps(m) for m in manifests)


def manifests(
    prometheus_image: str, adapter_image: str, metrics_server_image: str, kubelet_ca_pem: bytes
) -> list[Manifest]:
    """Everything of the metric path, in apply order."""
    return [
        namespace(),
        *prometheus_manifests(
            prometheus_image, prometheus_config(scrape_interval=LOCAL_SCRAPE_INTERVAL)
        ),
        *adapter_manifests(adapter_image, {**adapter_values(), **LOCAL_ADAPTER_VALUES}),
        *metrics_server_manifests(metrics_server_image, kubelet_ca_pem),
    ]


def apiservice_available(apiservice: Mapping[str, Any]) -> bool:
    conditions = apiservice.get("status", {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def apply(cluster: LocalCluster, images: MetricImages) -> float:
    """Apply the metric path to a cluster with a real node (its pods start in the background);
    returns the monotonic time it was applied, for `wait_available`."""
    started = time.monotonic()
    objects = manifests(
        images.prometheus,
        images.adapter,
        images.metrics_server,
        cluster.layout.pki.ca_cert.read_bytes(),
    )
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=hypersend-devenv",
        "-f", "-", input=to_stream(objects),
    )  # fmt: skip
    return started


def wait_available(cluster: LocalCluster, started: float, timeout: float = 240.0) -> float:
    """Wait until the API server serves both metrics APIs through the applied metric path;
    returns the seconds since `started`."""
    deadline = started + timeout
    for name in (CUSTOM_METRICS_API, RESOURCE_METRICS_API):
        while not apiservice_available(
            cluster.api_get(f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
        ):
            if time.monotonic() > deadline:
                pods = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False)
                raise TimeoutError(f"{name} not Available after {timeout:.0f}s:\n{pods.stdout}")
            time.sleep(1)
    return time.monotonic() - started


def install(cluster: LocalCluster, images: MetricImages, timeout: float = 240.0) -> float:
    """Apply the metric path to a cluster with a real node and wait until the API server serves
    both metrics APIs through it; returns the seconds that took."""
    return wait_available(cluster, apply(cluster, images), timeout)
