"""The hypersend-operator chart against a real API server (marker e2e, fixture kube_cluster).

`helm template` output passes the API server's server-side dry run (strict field validation) for
default and non-default values; `helm install` brings the operator Deployment to Ready (on kwok
nodes the pod turns Ready without running the image); `helm upgrade` after a CRD change updates
the CRD; `helm uninstall` keeps the CRD and existing HypersendClusters.

The CRD is cluster-wide and other tests (and `./dev up`) apply it with kubectl: the release takes it
over with `helm install --take-ownership`, as a user switching from `kubectl apply -f crds/` to Helm
would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_devenv import images

from tests.e2e.monitoring_crds import install_monitoring_crds
from tests.fixtures.kube import KubeCluster
from tests.unit.delivery import helm

pytestmark = pytest.mark.e2e

CRD_NAME = "hypersendclusters.hypersend.io"
# The image kind-e2e.sh loads; on kwok nothing pulls it.
IMAGE = os.environ.get("HYPERSEND_OPERATOR_IMAGE", images.OPERATOR_IMAGE)


class Helm:
    """helm against the test cluster, with its own cache/config dirs (nothing touches ~/.config)."""

    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(helm.binary()), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc


@pytest.fixture(scope="module")
def kube(kube_cluster: KubeCluster) -> KubeCluster:
    return kube_cluster


@pytest.fixture(scope="module")
def run_helm(kube_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(kube_cluster.kubeconfig, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def namespaces(kube: KubeCluster) -> Iterator[list[str]]:
    """Three fresh namespaces: the release's and two watched ones."""
    suffix = uuid.uuid4().hex[:6]
    names = [f"hs-helm-{suffix}", f"hs-team-a-{suffix}", f"hs-team-b-{suffix}"]
    for name in names:
        kube.kubectl("create", "namespace", name)
    yield names
    kube.kubectl("delete", "namespace", *names, "--wait=false", check=False)


def get_json(kube: KubeCluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl("get", *args, "-o", "json").stdout))


def dry_run(kube: KubeCluster, manifests: str) -> str:
    proc = kube.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict",
        "--field-manager=hypersend-helm-test", "--force-conflicts", "-f", "-",
        input=manifests, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"API server refused the chart:\n{proc.stderr}"
    return str(proc.stdout)


OWNER_KEYS = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")


def crd_as_kubectl_applied(kube: KubeCluster) -> dict[str, str]:
    """The CRD as `./dev up` or `kubectl apply --server-side -f crds/` leaves it, the state a user
    switching to Helm starts from; returns a previous Helm owner's annotations, if any (kind:
    hack/kind-e2e.sh's release), so that they can be given back."""
    previous: dict[str, str] = {}
    if kube.kubectl("get", "crd", CRD_NAME, check=False).returncode == 0:
        annotations = get_json(kube, "crd", CRD_NAME)["metadata"].get("annotations", {})
        previous = {k: annotations[k] for k in OWNER_KEYS if k in annotations}
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(helm.CRD_FILE))
    return previous


@pytest.fixture
def crd_owner(kube: KubeCluster) -> Iterator[dict[str, str]]:
    """Where the test records the CRD's previous Helm owner; given back after the test."""
    previous: dict[str, str] = {}
    yield previous
    if previous:
        pairs = [f"{k}={v}" for k, v in previous.items()]
        kube.kubectl("annotate", "crd", CRD_NAME, "--overwrite", *pairs, check=False)


def test_template_passes_server_side_dry_run_default_values(
    kube: KubeCluster, namespaces: list[str]
) -> None:
    out = dry_run(kube, helm.template_text({"image.repository": "x"}, namespace=namespaces[0]))
    applied = {line.split("/")[0] for line in out.splitlines()}
    assert applied == {
        "serviceaccount",
        "customresourcedefinition.apiextensions.k8s.io",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",  # the leader Lease's
        "rolebinding.rbac.authorization.k8s.io",
        "service",
        "deployment.apps",
        "poddisruptionbudget.policy",
    }


def test_template_passes_server_side_dry_run_namespaced_and_service_monitor(
    kube: KubeCluster, namespaces: list[str]
) -> None:
    release_ns, team_a, team_b = namespaces
    install_monitoring_crds(kube)
    values = {
        "watch.namespaces": f"{{{team_a},{team_b}}}",
        "metrics.serviceMonitor.enabled": "true",
        "metrics.serviceMonitor.labels.release": "prometheus",
        "metrics.prometheusRule.enabled": "true",
        "metrics.prometheusRule.chatAlerts": "true",
        "metrics.prometheusRule.labels.release": "prometheus",
        "metrics.grafanaDashboard.enabled": "true",
        "crds.install": "false",
        "operator.logLevel": "debug",
        "serviceAccount.annotations.example\\.com/role": "operator",
        "tolerations[0].operator": "Exists",
    }
    out = dry_run(kube, helm.template_text(values, namespace=release_ns))
    kinds = [line.split("/")[0] for line in out.splitlines()]
    # One per watched namespace and the leader Lease's; nothing cluster-wide.
    assert kinds.count("role.rbac.authorization.k8s.io") == 3
    assert kinds.count("rolebinding.rbac.authorization.k8s.io") == 3
    assert "clusterrole.rbac.authorization.k8s.io" not in kinds
    assert "clusterrolebinding.rbac.authorization.k8s.io" not in kinds
    assert "servicemonitor.monitoring.coreos.com" in kinds
    assert "prometheusrule.monitoring.coreos.com" in kinds
    assert "configmap" in kinds  # the Grafana dashboard
    assert "customresourcedefinition.apiextensions.k8s.io" not in kinds


def test_dry_run_catches_a_broken_manifest(kube: KubeCluster, namespaces: list[str]) -> None:
    """The check above can fail: a misspelt field is refused under strict validation."""
    text = helm.template_text(namespace=namespaces[0]).replace("strategy:", "strategee:", 1)
    proc = kube.kubectl(
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
        input=text, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "strategee" in proc.stderr


def crd_with_extra_column(source: Path) -> str:
    crd = yaml.safe_load(source.read_text())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Generation", "type": "integer", "jsonPath": ".metadata.generation"}
    )
    return yaml.safe_dump(crd, sort_keys=False)


def printer_columns(kube: KubeCluster) -> list[str]:
    crd = get_json(kube, "crd", CRD_NAME)
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_install_upgrade_uninstall(
    kube: KubeCluster,
    run_helm: Helm,
    namespaces: list[str],
    tmp_path: Path,
    crd_owner: dict[str, str],
) -> None:
    release_ns, team_a, team_b = namespaces
    release = f"hs-{uuid.uuid4().hex[:6]}"
    repository, _, tag = IMAGE.rpartition(":")
    values = ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
    if not kube.is_local:
        # A real cluster may already run an operator for everything: this one watches only its own.
        values += ["--set", f"watch.namespaces={{{team_a}}}"]
    crd_owner.update(crd_as_kubectl_applied(kube))

    # install, taking over the kubectl-applied CRD: the operator Deployment becomes Ready (kwok
    # marks the pod Ready without running the image)
    run_helm(
        "install", release, str(helm.CHART), "-n", release_ns, *values,
        "--take-ownership", "--wait", "--timeout=3m",
    )  # fmt: skip
    deployment = f"{release}-hypersend-operator"
    dep = get_json(kube, "deployment", deployment, "-n", release_ns)
    # Two replicas, one leader (kwok pods run nothing, so no Lease is taken here).
    assert dep["status"].get("readyReplicas") == 2, dep["status"]
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = get_json(kube, "poddisruptionbudget", deployment, "-n", release_ns)
    assert pdb["spec"]["maxUnavailable"] == 1
    kube.wait_crd_established(CRD_NAME)
    crd = get_json(kube, "crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "Generation" not in printer_columns(kube)

    # a HypersendCluster that must outlive the release
    cluster = {
        "apiVersion": "hypersend.io/v1alpha1",
        "kind": "HypersendCluster",
        # Outside the watched namespace of a release that runs for real (kind): one operator only.
        "metadata": {"name": "survivor", "namespace": team_b},
        "spec": {"chat": {"image": images.SERVER_IMAGE}},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(cluster))

    # upgrade with a changed CRD: Helm updates it (the CRD is a template, not under crds/)
    changed = tmp_path / "chart"
    shutil.copytree(helm.CHART, changed, symlinks=False)
    crd_file = changed / "files" / helm.CRD_FILE.name
    crd_file.write_text(crd_with_extra_column(helm.CRD_FILE))
    run_helm("upgrade", release, str(changed), "-n", release_ns, *values, "--wait", "--timeout=3m")
    assert "Generation" in printer_columns(kube)

    # back to the real chart (leaves the CRD exactly as crds/ has it), then uninstall
    run_helm("upgrade", release, str(helm.CHART), "-n", release_ns, *values, "--wait")
    assert "Generation" not in printer_columns(kube)
    run_helm("uninstall", release, "-n", release_ns, "--wait", "--timeout=3m")
    assert kube.kubectl("get", "deployment", deployment, "-n", release_ns, check=False).returncode
    assert kube.kubectl("get", "clusterrole", deployment, check=False).returncode
    kept = get_json(kube, "crd", CRD_NAME)
    assert kept["metadata"]["uid"] == crd["metadata"]["uid"], "the CRD was deleted and recreated"
    survivor = get_json(kube, "hypersendcluster", "survivor", "-n", team_b)
    assert survivor["spec"]["chat"]["image"] == images.SERVER_IMAGE
