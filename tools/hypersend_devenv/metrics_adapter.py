"""custom.metrics.k8s.io for the local cluster, served by custom-metrics-apiserver's test adapter.

The adapter runs on the host, on loopback, and delegates authentication and authorization to the
API server. The aggregator reaches it through an APIService backed by a Service of type
ExternalName with `externalName: localhost` (the API server's service resolver then dials
localhost:<port>; no cluster IP is involved). Tests set a pod's metric by POSTing to the adapter's
write endpoint, also on loopback.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

NAMESPACE = "custom-metrics"
SERVICE = "custom-metrics-apiserver"
GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta2"
APISERVICE = f"{VERSION}.{GROUP}"


SERVICE_DNS = f"{SERVICE}.{NAMESPACE}.svc"  # the name the aggregator verifies the cert against


def adapter_args(
    binary: str, kubeconfig: str, tls: tuple[str, str], secure_port: int, write_port: int
) -> list[str]:
    cert, key = tls
    return [
        binary,
        "--bind-address=127.0.0.1",
        f"--secure-port={secure_port}",
        f"--tls-cert-file={cert}",
        f"--tls-private-key-file={key}",
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--write-metrics-address=127.0.0.1:{write_port}",
    ]


def apiservice_manifests(secure_port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """Namespace, ExternalName Service to localhost, and the APIService that points at it.

    The aggregator dials localhost:<port> but verifies the serving certificate against the
    Service's DNS name (SERVICE_DNS) and `ca_bundle`.
    """
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": secure_port, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": GROUP,
                "version": VERSION,
                "service": {"namespace": NAMESPACE, "name": SERVICE, "port": secure_port},
                "caBundle": base64.b64encode(ca_bundle).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 200,
            },
        },
    ]


def quantity(value: float) -> str:
    """A Kubernetes quantity for `value`: whole numbers as is, others in milli-units."""
    if not math.isfinite(value):
        raise ValueError(f"metric value must be finite, got {value!r}")
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def write_metric_url(write_port: int, namespace: str, pod: str, metric: str) -> str:
    parts = [urllib.parse.quote(p, safe="") for p in (namespace, pod, metric)]
    return (
        f"http://127.0.0.1:{write_port}/write-metrics/namespaces/{parts[0]}/pods/{parts[1]}/"
        f"{parts[2]}"
    )


@dataclass(frozen=True)
class MetricsWriter:
    """Sets values the adapter reports for pods (its write endpoint, plain HTTP on loopback)."""

    write_port: int

    def set_pod_metric(self, namespace: str, pod: str, metric: str, value: float) -> None:
        body = json.dumps(quantity(value)).encode()
        request = urllib.request.Request(
            write_metric_url(self.write_port, namespace, pod, metric),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"metrics adapter refused {metric}={value}: {resp.status}")
