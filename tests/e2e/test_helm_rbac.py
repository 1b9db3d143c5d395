"""The chart's RBAC is exactly what operator/hypersend_operator/rbac_needs.py declares, asked of the
real API server (SubjectAccessReview for every need and for every verb left out, and a
SelfSubjectRulesReview of the account for anything else), and that declaration is enough: the
operator process, with leader election, runs with the token of the chart's ServiceAccount (instead
of admin) and takes a HypersendCluster through create, Ready, edit, prune and delete, in both watch
modes, without a single Forbidden answer. The local API server enforces
OwnerReferencesPermissionEnforcement, so the finalizers rule is needed, not decorative.

The suite's operator (cluster-wide, admin) is stopped for the duration, so that exactly one
operator acts on each HypersendCluster; it is started again afterwards.
"""

from __future__ import annotations

import json
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
from hypersend_operator import rbac_needs
from hypersend_operator.rbac_needs import Scope

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


Perm = tuple[str, str, str, str]  # group, resource (with subresource), verb, resourceName or ""


def access_reviews(kube: KubeCluster, user: str, asks: list[tuple[Perm, str]]) -> dict[Any, bool]:
    """SubjectAccessReviews, all in one kubectl call: {(perm, namespace): allowed}."""
    items = []
    for (group, resource, verb, name), namespace in asks:
        res, _, sub = resource.partition("/")
        attrs = {"group": group, "resource": res, "verb": verb, "namespace": namespace}
        if sub:
            attrs["subresource"] = sub
        if name:
            attrs["name"] = name
        items.append(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "resourceAttributes": attrs,
                },
            }
        )
    doc = {"apiVersion": "v1", "kind": "List", "items": items}
    out = kube.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(doc)).stdout
    # One JSON document per item, one after the other.
    decoder, answers, at = json.JSONDecoder(), [], 0
    while out[at:].strip():
        answer, end = decoder.raw_decode(out, at + len(out[at:]) - len(out[at:].lstrip()))
        answers.append(answer)
        at = end
    assert len(answers) == len(asks)
    return {ask: bool(a["status"].get("allowed")) for ask, a in zip(asks, answers, strict=True)}


# What every authenticated user may do (the API server's own defaults), left out of the comparison.
SELF_REVIEWS = {"authentication.k8s.io", "authorization.k8s.io"}


def rules_review(kube: KubeCluster, user: str, namespace: str) -> set[Perm]:
    """Everything the account may do in `namespace`, as the API server lists it."""
    doc = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    out = kube.kubectl(
        # --validate=false: kubectl's client-side check would list CRDs as that user.
        "create", "-o", "json", "-f", "-", "--validate=false", "--as", user,
        input=yaml.safe_dump(doc),
    ).stdout  # fmt: skip
    status = yaml.safe_load(out)["status"]
    assert not status.get("incomplete"), status
    return {
        (group, resource, verb, name)
        for rule in status["resourceRules"]
        for group in rule.get("apiGroups") or [""]
        if group not in SELF_REVIEWS
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def check_exact_grants(
    kube: KubeCluster, user: str, lease: str, release_ns: str, app_ns: str, mode: str
) -> None:
    """Every declared need is granted where it applies; nothing else is, anywhere we look."""
    managed = rbac_needs.rules(Scope.MANAGED)
    own = rbac_needs.rules(Scope.OWN, lease=lease)
    cluster = rbac_needs.rules(Scope.CLUSTER) if mode == "all-namespaces" else set()
    elsewhere = f"hs-rbac-none-{uuid.uuid4().hex[:6]}"  # a namespace the operator does not manage

    def expected(namespace: str) -> set[Perm]:
        found = set(own) if namespace == release_ns else set()
        if mode == "all-namespaces" or namespace == app_ns:
            found |= managed
        return found | cluster

    asks: list[tuple[Perm, str]] = []
    for namespace in (app_ns, release_ns, elsewhere):
        for group, resource, _, name in managed | own | cluster:
            for verb in rbac_needs.ALL_VERBS:
                asks.append(((group, resource, verb, name), namespace))
        # Names outside the declared ones (another Lease) and kinds nobody declared.
        asks.append((("coordination.k8s.io", "leases", "update", "someone-elses"), namespace))
        for other in (
            ("", "pods"),
            ("", "pods/exec"),
            ("", "serviceaccounts/token"),
            ("", "nodes"),
        ):
            asks.append(((*other, "get", ""), namespace))
    answers = access_reviews(kube, user, asks)

    def allowed_by_table(perm: Perm, namespace: str) -> bool:
        group, resource, verb, _ = perm
        # A rule without resourceNames covers every name.
        return perm in expected(namespace) or (group, resource, verb, "") in expected(namespace)

    wrong = [
        f"{'granted' if allowed else 'refused'}: {verb} {group}/{resource}"
        f"{' ' + name if name else ''} in {namespace}"
        for ((group, resource, verb, name), namespace), allowed in answers.items()
        if allowed != allowed_by_table((group, resource, verb, name), namespace)
    ]
    assert not wrong, "\n".join(wrong)
    # Beyond the kinds asked about: the whole list the API server holds for the account.
    for namespace in (app_ns, release_ns):
        listed = rules_review(kube, user, namespace)
        assert listed == expected(namespace), (
            f"in {namespace}: more {sorted(listed - expected(namespace))}, "
            f"missing {sorted(expected(namespace) - listed)}"
        )


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
    lease = sa  # the chart's --leader-election-id: the release's full name
    check_exact_grants(
        kube, f"system:serviceaccount:{release_ns}:{sa}", lease, release_ns, app_ns, mode
    )
    token = kube.kubectl("create", "token", sa, "-n", release_ns, "--duration=1h").stdout.strip()
    kubeconfig = service_account_kubeconfig(kube.kubeconfig, token, tmp_path / "sa.kubeconfig")

    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "hypersend-operator"), "run", *scope, "--kubeconfig", str(kubeconfig),
                "--metrics-port", str(free_port()), "--health-port", str(free_port()),
                "--resync-seconds", "5",
                "--leader-election-namespace", release_ns, "--leader-election-id", lease,
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
        holder = kube.json("get", "lease", lease, "-n", release_ns)["spec"]["holderIdentity"]
        assert holder, "the operator did not take its Lease"
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
    # kopf words a refused scan as "Not enough permissions", the API server as Forbidden.
    forbidden = [
        line
        for line in output.splitlines()
        if "forbidden" in line.lower() or "enough permissions" in line.lower()
    ]
    assert not forbidden, "\n".join(forbidden[:20])
    assert token not in output, "the token leaked into the operator's log"
