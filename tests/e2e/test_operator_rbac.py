"""deploy/operator.yaml's RBAC is enough and no more: the operator, authenticated as the
ServiceAccount the manifest binds and electing itself leader on the manifest's Lease, brings a
cluster to Ready; that account can neither update nor delete Secrets, nor touch another Lease.
(tests/e2e/test_helm_rbac.py compares the chart's grants with rbac_needs.py through the API
server; tests/unit/delivery/test_chart.py holds this manifest to the same table.)"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import REPO, ClusterHelper, OperatorProcess

pytestmark = pytest.mark.e2e

SA_NAMESPACE = "hypersend-system"
SA = "hypersend-operator"


def rbac_documents() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "operator.yaml").read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
    ]
    # The Deployment would only make fake pods here; the operator runs as a host process.
    return [d for d in docs if d["kind"] not in {"Deployment", "PodDisruptionBudget"}]


def service_account_kubeconfig(kube: KubeCluster, path: Path) -> Path:
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    token = kube.kubectl("create", "token", SA, "-n", SA_NAMESPACE, "--duration=1h").stdout.strip()
    if "certificate-authority" in cluster:
        ca = Path(cluster["certificate-authority"]).read_bytes()
        cluster = {
            "server": cluster["server"],
            "certificate-authority-data": base64.b64encode(ca).decode(),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": SA}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def least_privilege_operator(hsc: ClusterHelper, tmp_path: Path) -> Iterator[OperatorProcess]:
    kube = hsc.kube
    kube.apply(*rbac_documents())
    kubeconfig = service_account_kubeconfig(kube, tmp_path / "sa.kubeconfig")
    session = hsc.operator
    session.stop()  # one operator at a time
    restricted = OperatorProcess(
        kubeconfig=kubeconfig,
        log_path=tmp_path / "operator.log",
        # The manifest's Lease, in its namespace (the pod would learn it from POD_NAMESPACE).
        extra_args=(
            "--leader-election-namespace", SA_NAMESPACE,
            "--leader-election-id", "hypersend-operator",
        ),
    )  # fmt: skip
    try:
        restricted.start()
        hsc.operator = restricted
        yield restricted
    finally:
        restricted.stop()
        hsc.operator = session
        session.start()


def test_operator_works_with_the_deployed_rbac(
    hsc: ClusterHelper, least_privilege_operator: OperatorProcess
) -> None:
    hsc.apply(hsc.manifest())
    hsc.wait_phase("Ready", timeout=120)
    assert "Forbidden" not in least_privilege_operator.log_tail(400)
    assert least_privilege_operator.metrics().get("hypersend_operator_leader") == 1.0
    who = f"system:serviceaccount:{SA_NAMESPACE}:{SA}"

    def can(*args: str) -> str:
        proc = hsc.kube.kubectl("auth", "can-i", *args, "--as", who, check=False)
        return proc.stdout.strip()

    assert can("get", "secrets", "-n", hsc.namespace) == "yes"
    for verb in ("update", "delete", "deletecollection"):
        assert can(verb, "secrets", "-n", hsc.namespace) == "no", verb
    assert can("update", "leases/hypersend-operator", "-n", SA_NAMESPACE) == "yes"
    assert can("update", "leases/another", "-n", SA_NAMESPACE) == "no"
    assert can("create", "leases", "-n", hsc.namespace) == "no"
