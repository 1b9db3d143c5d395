"""The operator as users run it (marker real_node): `helm install` of the chart with the operator
image built here; the operator pod passes its probes, reaches the API server through the
`kubernetes` Service, and brings an autoscaled HypersendCluster in its watched namespace to Ready
on real pods. The local Prometheus (pod discovery as docs/install.md configures it) scrapes the
chat pods and the operator pod, loads the chart's alert rules, and answers every query of the
chart's Grafana dashboard with data.

The session's host-process operator (``node_operator``) is stopped meanwhile, so that exactly one
operator acts on the cluster.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypersend_devenv import images
from hypersend_devenv import metrics as devmetrics

from bench.zero_loss import ZeroLossChecker
from tests.e2e.test_helm_chart import Helm
from tests.e2e.test_node_chat import CHAT_PORT, all_ready, finish, is_ready, serving
from tests.fixtures.kube import KubeCluster
from tests.fixtures.node import RESTRICTED, service_address
from tests.fixtures.operator import ClusterHelper, OperatorProcess
from tests.unit.delivery import helm
from tests.unit.monitoring.test_dashboard import dashboard, queries

pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.timeout(600)]

RELEASE = "hypersend"
OPERATOR_SELECTOR = "app.kubernetes.io/name=hypersend-operator"


@dataclass
class ChartInstall:
    release_namespace: str
    team: str
    cluster: ClusterHelper


@pytest.fixture(scope="module")
def host_operator_stopped(node_operator: OperatorProcess) -> Iterator[None]:
    node_operator.stop()
    try:
        yield
    finally:
        node_operator.start()


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def installed(
    node_cluster: KubeCluster,
    node_operator: OperatorProcess,
    node_metrics: None,
    host_operator_stopped: None,
    namespaces: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ChartInstall]:
    """The chart's operator pod and, in the namespace it watches, an autoscaled cluster Ready."""
    release_ns, team = namespaces
    run_helm = Helm(node_cluster.kubeconfig, tmp_path_factory.mktemp("helm-home"))
    run_helm(
        "install", RELEASE, str(helm.CHART), "-n", release_ns,
        "--set", f"image.repository={images.OPERATOR_REPOSITORY}",
        "--set", f"image.tag={images.VERSION}",
        "--set", "image.pullPolicy=Never",
        "--set", f"watch.namespaces={{{team}}}",
        "--take-ownership", "--wait", "--timeout=4m",
    )  # fmt: skip
    try:
        helper = ClusterHelper(
            node_cluster,
            team,
            node_operator,
            None,
            volume_dir=node_cluster.local.node.layout.volumes if node_cluster.local else None,
        )
        doc = helper.manifest()
        # The HPA reads the connection metric through the local metric path: Ready, not
        # Degraded, needs the whole loop to serve (status.py's autoscaling check).
        doc["spec"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 2}
        doc["spec"]["chat"]["rateLimit"] = {"requestsPerMinute": 6000}
        helper.apply(doc)
        helper.wait_phase("Ready", timeout=300)
        yield ChartInstall(release_ns, team, helper)
        node_cluster.kubectl(
            "delete", "hypersendcluster", helper.name, "-n", team, "--timeout=120s"
        )
        helper.cleanup()
    finally:
        run_helm("uninstall", RELEASE, "-n", release_ns, "--wait", "--timeout=3m")


def test_the_chart_runs_the_operator_image_and_it_reconciles_real_pods(
    node_cluster: KubeCluster, installed: ChartInstall
) -> None:
    pods = node_cluster.json(
        "get", "pods", "-n", installed.release_namespace, "-l", OPERATOR_SELECTOR
    )["items"]
    assert len(pods) == 2  # two replicas, one leader
    for pod in pods:
        assert is_ready(pod)
        assert pod["spec"]["containers"][0]["image"] == images.OPERATOR_IMAGE
    # The Lease (named after the release) is held by one of them: identity = hostname + suffix.
    lease = node_cluster.json(
        "get", "lease", f"{RELEASE}-hypersend-operator", "-n", installed.release_namespace
    )
    holder = lease["spec"]["holderIdentity"]
    assert any(holder.startswith(p["metadata"]["name"] + "_") for p in pods), holder
    assert all_ready(node_cluster, installed.team, "chat", 1)
    hpa = node_cluster.json("get", "hpa", f"{installed.cluster.name}-chat", "-n", installed.team)
    active = {c["type"]: c["status"] for c in hpa["status"]["conditions"]}
    assert active["ScalingActive"] == "True", hpa["status"]


@pytest.fixture
def prometheus(node_cluster: KubeCluster) -> Iterator[str]:
    with service_address(
        node_cluster, devmetrics.NAMESPACE, "prometheus", devmetrics.PROMETHEUS_PORT
    ) as address:
        yield f"http://{address}"


@pytest.fixture
async def traffic(node_cluster: KubeCluster, installed: ChartInstall) -> AsyncIterator[None]:
    """Members sending throughout, so rates and latency histograms have samples."""
    team, name = installed.team, installed.cluster.name
    with service_address(node_cluster, team, f"{name}-chat", CHAT_PORT) as address:
        url = f"http://{address}"
        await serving(url)
        checker = ZeroLossChecker([url], rooms=2, members=2, interval=0.5)
        await checker.setup()
        await checker.start(within=90)
        yield
        await finish(checker, "monitoring traffic")
        await checker.close()


async def api(http: httpx.AsyncClient, path: str, **params: str) -> Any:
    resp = await http.get(path, params=params)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]


def has_a_number(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


async def test_prometheus_loads_the_alert_rules_and_every_dashboard_query_has_data(
    prometheus: str, traffic: None
) -> None:
    async with httpx.AsyncClient(base_url=prometheus, trust_env=False, timeout=10) as http:
        groups = (await api(http, "/api/v1/rules"))["groups"]
        loaded = {g["name"]: g for g in groups}
        assert {"hypersend-chat", "hypersend-operator"} <= set(loaded), sorted(loaded)
        for group in groups:
            for rule in group["rules"]:
                assert rule["health"] == "ok", (group["name"], rule["name"], rule)
        print(f"\n[monitoring] {sum(len(g['rules']) for g in groups)} rules loaded")

        # Each query in turn until all have a finite number: rates need two scrapes (15 s
        # apart) of counters that moved, so a query may start empty.
        todo = queries(dashboard())
        total = len(todo)
        empty: list[tuple[str, str]] = []
        async with asyncio.timeout(240):
            while todo:
                empty = []
                for title, expr in todo:
                    found = await api(http, "/api/v1/query", query=expr)
                    if not has_a_number(found["result"]):
                        empty.append((title, expr))
                todo = empty
                if todo:
                    await asyncio.sleep(5)
        print(f"[monitoring] all {total} dashboard queries answered with data")


def test_a_query_for_a_series_nobody_exports_has_no_data() -> None:
    """has_a_number can fail: no samples, or only NaN (a quantile of empty buckets)."""
    assert not has_a_number([])
    assert not has_a_number([{"metric": {}, "value": [0, "NaN"]}])
    assert has_a_number([{"metric": {}, "value": [0, "0"]}])
