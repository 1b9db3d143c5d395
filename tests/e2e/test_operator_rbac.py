"""deploy/operator.yaml's RBAC is enough and no more: the operator, authenticated as the
ServiceAccount the manifest binds, brings a cluster to Ready; that account cannot list Secrets."""

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
        "Deployment",
    ]
    # The Deployment would only make a fake pod here; the operator runs as a host process.
    return [d for d in docs if d["kind"] != "Deployment"]


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
    restricted = OperatorProcess(kubeconfig=kubeconfig, log_path=tmp_path / "operator.log")
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
    who = f"system:serviceaccount:{SA_NAMESPACE}:{SA}"
    can = hsc.kube.kubectl(
        "auth", "can-i", "list", "secrets", "-n", hsc.namespace, "--as", who, check=False
    )
    assert can.stdout.strip() == "no"
