"""The operator as users run it (marker real_node): `helm install` of the chart with the operator
image built here; the operator pod passes its probes, reaches the API server through the
`kubernetes` Service, and brings a HypersendCluster in its watched namespace to Ready on real pods.

The session's host-process operator (``node_operator``) is stopped meanwhile, so that exactly one
operator acts on the cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypersend_devenv import images

from tests.e2e.test_helm_chart import Helm
from tests.e2e.test_node_chat import all_ready, is_ready
from tests.fixtures.kube import KubeCluster
from tests.fixtures.node import RESTRICTED
from tests.fixtures.operator import ClusterHelper, OperatorProcess
from tests.unit.delivery import helm

pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.timeout(600)]


@pytest.fixture
def host_operator_stopped(node_operator: OperatorProcess) -> Iterator[None]:
    node_operator.stop()
    try:
        yield
    finally:
        node_operator.start()


@pytest.fixture
def namespaces(node_cluster: KubeCluster) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    names = (f"hs-op-{suffix}", f"hs-team-{suffix}")
    for name in names:
        node_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {RESTRICTED: "restricted"}},
            }
        )
    yield names
    for name in names:
        node_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_chart_runs_the_operator_image_and_it_reconciles_real_pods(
    node_cluster: KubeCluster,
    node_operator: OperatorProcess,
    host_operator_stopped: None,
    namespaces: tuple[str, str],
    tmp_path: Path,
) -> None:
    release_ns, team = namespaces
    run_helm = Helm(node_cluster.kubeconfig, tmp_path / "helm-home")
    release = "hypersend"
    run_helm(
        "install", release, str(helm.CHART), "-n", release_ns,
        "--set", f"image.repository={images.OPERATOR_REPOSITORY}",
        "--set", f"image.tag={images.VERSION}",
        "--set", "image.pullPolicy=Never",
        "--set", f"watch.namespaces={{{team}}}",
        "--take-ownership", "--wait", "--timeout=4m",
    )  # fmt: skip
    try:
        selector = "app.kubernetes.io/name=hypersend-operator"
        (operator_pod,) = node_cluster.json("get", "pods", "-n", release_ns, "-l", selector)[
            "items"
        ]
        assert is_ready(operator_pod)
        assert operator_pod["spec"]["containers"][0]["image"] == images.OPERATOR_IMAGE
        helper = ClusterHelper(
            node_cluster,
            team,
            node_operator,
            None,
            volume_dir=node_cluster.local.node.layout.volumes if node_cluster.local else None,
        )
        doc = helper.manifest()
        # A fixed replica count: the HPA's connection metric needs the local Prometheus, which
        # cannot discover pods yet (tests/e2e/test_node_autoscaling.py says why).
        doc["spec"]["autoscaling"] = {"enabled": False}
        doc["spec"]["chat"]["replicas"] = 1
        helper.apply(doc)
        helper.wait_phase("Ready", timeout=300)
        assert all_ready(node_cluster, team, "chat", 1)
        node_cluster.kubectl(
            "delete", "hypersendcluster", helper.name, "-n", team, "--timeout=120s"
        )
        helper.cleanup()
    finally:
        run_helm("uninstall", release, "-n", release_ns, "--wait", "--timeout=3m")
