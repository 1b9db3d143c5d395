"""The chart's RBAC is enough for the operator, and no more than it declares: the operator process
runs with the token of the chart's ServiceAccount (instead of admin) and brings a HypersendCluster
to Ready, in both watch modes, without a single Forbidden answer.

The suite's operator (cluster-wide, admin) is stopped for the duration, so that exactly one
operator acts on each HypersendCluster; it is started again afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_devenv import images

from tests.e2e.test_helm_chart import Helm
from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import OperatorProcess
from tests.unit.delivery import helm

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
TIMEOUT = 90.0
CHAT_IMAGE = os.environ.get("HYPERSEND_SERVER_IMAGE", images.SERVER_IMAGE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_account_kubeconfig(admin: Path, token: str, dest: Path) -> Path:
    """The admin kubeconfig's cluster (server, CA) with the ServiceAccount's token as the user."""
    config = yaml.safe_load(admin.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == current["context"]["cluster"])
    dest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": cluster["name"], "user": "operator"}}
                ],
                "current-context": "sa",
            }
        )
    )
    dest.chmod(0o600)
    return dest


@pytest.fixture
def no_suite_operator(hypersend_operator: OperatorProcess) -> Iterator[None]:
    hypersend_operator.stop()
    try:
        yield
    finally:
        hypersend_operator.start()


@pytest.fixture
def namespaces(kube_cluster: KubeCluster) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    names = (f"hs-rbac-op-{suffix}", f"hs-rbac-app-{suffix}")
    for name in names:
        kube_cluster.kubectl("create", "namespace", name)
    yield names
    kube_cluster.kubectl("delete", "namespace", *names, "--wait=false", check=False)


def cluster_manifest(
    namespace: str, name: str = "rbac", autoscaling: bool = False, local: bool = True
) -> dict[str, Any]:
    """Every optional child the operator can create without extra APIs: Ingress, NetworkPolicy,
    PDB (default), and an HPA when autoscaling is on. MongoDB via an Atlas Secret on the local
    cluster (fake pods), in-cluster on a real one (real chat pods need a reachable database)."""
    mongo: dict[str, Any] = {
        "mode": "Atlas",
        "atlas": {"connectionSecretRef": {"name": "atlas", "key": "uri"}},
    }
    if not local:
        mongo = {"mode": "InCluster", "deletePolicy": "Delete"}
    return {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "chat": {"image": CHAT_IMAGE, "replicas": 2},
            "autoscaling": {"enabled": autoscaling},
            "ingress": {"enabled": True, "host": f"{name}.example.test"},
            "networkPolicy": {"enabled": True},
            "redis": {"mode": "InCluster"},
            "mongo": mongo,
        },
    }


@pytest.mark.parametrize("mode", ["all-namespaces", "namespaced"])
def test_operator_works_with_exactly_the_charts_rbac(
    kube_cluster: KubeCluster,
    no_suite_operator: None,
    namespaces: tuple[str, str],
    tmp_path: Path,
    mode: str,
) -> None:
    kube = kube_cluster
    release_ns, app_ns = namespaces
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    values = ["--set", "crds.install=false"]  # the suite's fixture manages the CRD
    scope = ["--all-namespaces"]
    if mode == "namespaced":
        values += ["--set", f"watch.namespaces={{{app_ns}}}"]
        scope = ["--namespace", app_ns]
    run_helm = Helm(kube.kubeconfig, tmp_path / "helm-home")
    run_helm("install", release, str(helm.CHART), "-n", release_ns, *values, "--wait")
    sa = f"{release}-hypersend-operator"
    token = kube.kubectl("create", "token", sa, "-n", release_ns, "--duration=1h").stdout.strip()
    kubeconfig = service_account_kubeconfig(kube.kubeconfig, token, tmp_path / "sa.kubeconfig")

    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "hypersend-operator"), "run", *scope, "--kubeconfig", str(kubeconfig),
                "--metrics-port", str(free_port()), "--health-port", str(free_port()),
                "--resync-seconds", "5",
            ],
            env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        kube.kubectl(
            "create", "secret", "generic", "atlas", "-n", app_ns,
            "--from-literal=uri=mongodb+srv://user:pass@example.invalid/db",
        )  # fmt: skip
        kube.apply(cluster_manifest(app_ns, local=kube.is_local))

        def ready() -> bool:
            obj = kube.json("get", "hypersendcluster", "rbac", "-n", app_ns)
            status = obj.get("status") or {}
            return bool(
                status.get("phase") == "Ready"
                and status.get("observedGeneration") == obj["metadata"]["generation"]
            )

        try:
            kube.wait_for(ready, timeout=TIMEOUT, what=f"Ready under the chart's RBAC ({mode})")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text(errors='replace')[-4000:]}") from exc
        events = kube.json("get", "events", "-n", app_ns)["items"]
        assert any(e["reason"] == "Created" for e in events), "the operator could not post Events"
        for kind in ("ingress", "networkpolicy", "poddisruptionbudget"):
            assert kube.json("get", kind, "-n", app_ns)["items"], f"no {kind} was created"
        # An HPA too (without a metrics pipeline that cluster reads Degraded: not the point here).
        kube.apply(cluster_manifest(app_ns, "scaled", autoscaling=True, local=kube.is_local))
        kube.wait_for(
            lambda: (
                kube.kubectl("get", "hpa", "scaled-chat", "-n", app_ns, check=False).returncode == 0
            ),
            timeout=TIMEOUT,
            what="the HorizontalPodAutoscaler",
        )
        # Pruning (a child the spec no longer wants) and deletion (kopf's finalizer) need their
        # verbs too.
        kube.kubectl(
            "patch", "hypersendcluster", "rbac", "-n", app_ns, "--type=merge",
            "-p", '{"spec": {"ingress": {"enabled": false}}}',
        )  # fmt: skip
        mine = "app.kubernetes.io/instance=rbac"
        kube.wait_for(
            lambda: not kube.json("get", "ingress", "-n", app_ns, "-l", mine)["items"],
            timeout=TIMEOUT,
            what="the Ingress to be pruned",
        )
        kube.kubectl("delete", "hypersendcluster", "rbac", "scaled", "-n", app_ns, "--timeout=60s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        run_helm("uninstall", release, "-n", release_ns, check=False)
    output = log_path.read_text(errors="replace")
    forbidden = [line for line in output.splitlines() if "forbidden" in line.lower()]
    assert not forbidden, "\n".join(forbidden[:20])
    assert token not in output, "the token leaked into the operator's log"
