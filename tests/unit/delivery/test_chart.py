"""The hypersend-operator chart, rendered by the real helm: lint, values schema, CRD in sync with
crds/, the operator Deployment's shape and least-privilege RBAC in both watch modes,
the optional ServiceMonitor, PrometheusRule and Grafana dashboard."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypersend_operator import rbac_needs
from hypersend_operator.rbac_needs import Scope

from tests.unit.delivery import helm

pytestmark = pytest.mark.unit


def test_lint_is_clean() -> None:
    out = helm.helm("lint", "--strict", str(helm.CHART)).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"watch.namespaces[0]": "Not_A_Namespace"}, "/watch/namespaces/0"),
        ({"operator.logLevel": "loud"}, "/operator/logLevel"),
        ({"operator.metricsPort": "80"}, "/operator/metricsPort"),
        ({"unknownKey": "1"}, "unknownKey"),
        ({"metrics.serviceMonitor.interval": "often"}, "/metrics/serviceMonitor/interval"),
    ],
)
def test_values_schema_refuses_bad_values(values: dict[str, str], complaint: str) -> None:
    proc = helm.helm("template", "hs", str(helm.CHART), *helm.set_args(values), check=False)
    assert proc.returncode != 0
    assert complaint in proc.stderr


def test_crd_is_the_generated_one_and_kept_on_uninstall() -> None:
    crd = helm.one(helm.render(), "CustomResourceDefinition")
    source = yaml.safe_load(helm.CRD_FILE.read_text())
    assert crd["spec"] == source["spec"], "chart CRD differs from crds/ (files/ must link to it)"
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # ArgoCD ignores Helm's resource policy: its own options keep the CRD (and so every cluster).
    options = crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"].split(",")
    assert {"Prune=false", "Delete=false", "ServerSideApply=true"} <= set(options)


def test_crd_can_be_left_to_someone_else() -> None:
    kinds = {o["kind"] for o in helm.render({"crds.install": "false"})}
    assert "CustomResourceDefinition" not in kinds


def test_operator_deployment_shape() -> None:
    dep = helm.one(helm.render(), "Deployment")
    spec = dep["spec"]
    # Two replicas, one leader; a rolling update starts the new pod before stopping an old one.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "hs-hypersend-operator"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/hypersend/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
        {"name": "health", "containerPort": 8081, "protocol": "TCP"},
    ]
    # `hypersend-operator run` flags (the image's entry point supplies `run`).
    assert container["args"] == [
        "--listen=0.0.0.0",
        "--metrics-port=8080",
        "--health-port=8081",
        "--log-level=info",
        "--max-concurrent-rollouts=3",
        "--workers=4",
        "--all-namespaces",
        "--leader-election",
        "--leader-election-id=hs-hypersend-operator",
    ]
    # The Lease's namespace (the operator's own) through the downward API.
    assert {
        "name": "POD_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in (container["env"])
    assert container["resources"]["limits"]
    assert container["resources"]["requests"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    (term,) = spread
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    )


def test_disruption_budget_keeps_one_replica_through_a_drain() -> None:
    objs = helm.render()
    pdb = helm.one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    dep = helm.one(objs, "Deployment")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert not any(
        o["kind"] == "PodDisruptionBudget"
        for o in helm.render({"podDisruptionBudget.enabled": "false"})
    )


def test_one_replica_without_leader_election_recreates() -> None:
    values = {"replicaCount": "1", "leaderElection.enabled": "false"}
    objs = helm.render(values)
    dep = helm.one(objs, "Deployment")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "--no-leader-election" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(o["kind"] == "Role" for o in objs)
    proc = helm.helm(
        "template", "hs", str(helm.CHART), *helm.set_args({"leaderElection.enabled": "false"}),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "needs leaderElection.enabled" in proc.stderr


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = helm.one(helm.render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the images' USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
    assert not any("hostPath" in v for v in pod.get("volumes", []))


def rules_text(role: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted(
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    )


def test_cluster_wide_watch_uses_one_cluster_role() -> None:
    objs = helm.render()
    role = helm.one(objs, "ClusterRole")
    perms = rules_text(role)
    assert ("hypersend.io", "hypersendclusters/status", "patch") in perms
    assert ("", "secrets", "create") in perms
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "list") in perms
    assert ("hypersend.io", "hypersendclusters/finalizers", "update") in perms
    # Only the leader-election Role, in the release namespace.
    roles = [o for o in objs if o["kind"] in {"Role", "RoleBinding"}]
    assert {(o["kind"], o["metadata"]["namespace"]) for o in roles} == {
        ("Role", "hypersend-system"),
        ("RoleBinding", "hypersend-system"),
    }
    # Least privilege: nothing may escalate, impersonate, or read pods' logs / exec into them.
    assert not any(verb in {"*", "escalate", "bind", "impersonate"} for _, _, verb in perms)
    assert not any(res in {"*", "pods/exec", "pods/log", "nodes"} for _, res, _ in perms)
    # Secrets: read, apply, and list/watch for the generated Secrets' cache; never update or delete.
    secrets = {verb for _, res, verb in perms if res == "secrets"}
    assert secrets == {"get", "list", "watch", "create", "patch"}
    # Server-side apply patches; update only where the owner-reference check asks for it.
    assert {res for _, res, verb in perms if verb == "update"} == {"hypersendclusters/finalizers"}
    binding = helm.one(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hs-hypersend-operator", "namespace": "hypersend-system"}
    ]


def test_namespace_scoped_watch_grants_only_those_namespaces() -> None:
    objs = helm.render({"watch.namespaces": "{team-a,team-b}"})
    # Nothing cluster-wide: kopf's scanning (CRDs, namespaces) is off in a namespaced run.
    assert not any(o["kind"] in {"ClusterRole", "ClusterRoleBinding"} for o in objs)
    for ns in ("team-a", "team-b"):
        role = helm.one(objs, "Role", ns)
        assert ("", "secrets", "create") in rules_text(role)
        binding = helm.one(objs, "RoleBinding", ns)
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
    args = helm.one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_the_operator_pod_carries_scrape_annotations_for_its_metrics_port() -> None:
    """Pod discovery (charts/prometheus-scrape-config.yaml) finds the operator by them."""
    pod = helm.one(helm.render({"operator.metricsPort": "9999"}), "Deployment")["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9999"
    assert "--metrics-port=9999" in pod["spec"]["containers"][0]["args"]
    off = helm.render({"metrics.scrapeAnnotations": "false", "podAnnotations.team": "chat"})
    annotations = helm.one(off, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"team": "chat"}


def test_metrics_service_and_optional_service_monitor() -> None:
    objs = helm.render()
    svc = helm.one(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert not any(o["kind"] == "ServiceMonitor" for o in objs)
    objs = helm.render({"metrics.serviceMonitor.enabled": "true"})
    monitor = helm.one(objs, "ServiceMonitor")
    svc_labels = helm.one(objs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc_labels.items()
    assert monitor["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]


def test_service_monitor_without_service_is_refused() -> None:
    values = {"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"}
    proc = helm.helm("template", "hs", str(helm.CHART), *helm.set_args(values), check=False)
    assert proc.returncode != 0
    assert "needs metrics.service.enabled" in proc.stderr


def test_operator_accepts_the_charts_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Deployment's args parse with the operator's own command line (after `run`)."""
    from hypersend_operator.__main__ import parse_args

    monkeypatch.setenv("POD_NAMESPACE", "hypersend-system")  # the downward API's value
    for values in ({}, {"watch.namespaces": "{team-a,team-b}", "operator.logLevel": "debug"}):
        pod = helm.one(helm.render(values), "Deployment")["spec"]["template"]["spec"]
        args = parse_args(["run", *pod["containers"][0]["args"]])
        assert args.listen == "0.0.0.0"
        assert (args.metrics_port, args.health_port) == (8080, 8081)
        assert args.all_namespaces is not bool(values)
        assert args.namespace == (["team-a", "team-b"] if values else [])
        assert args.leader_election is True
        assert args.leader_election_namespace == "hypersend-system"
        assert args.leader_election_id == "hs-hypersend-operator"


def granted(role: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, resourceName or "") of a Role or ClusterRole."""
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def test_cluster_wide_rbac_is_exactly_the_declared_needs() -> None:
    """The chart grants what rbac_needs declares, no more, no less (cluster-wide install)."""
    objs = helm.render()
    cluster = granted(helm.one(objs, "ClusterRole"))
    assert cluster == rbac_needs.rules(Scope.MANAGED) | rbac_needs.rules(Scope.CLUSTER)
    lease = granted(helm.one(objs, "Role", "hypersend-system"))
    assert lease == rbac_needs.rules(Scope.OWN, lease="hs-hypersend-operator")


def test_namespaced_rbac_is_exactly_the_declared_needs() -> None:
    objs = helm.render({"watch.namespaces": "{team-a}"})
    assert granted(helm.one(objs, "Role", "team-a")) == rbac_needs.rules(Scope.MANAGED)
    lease = granted(helm.one(objs, "Role", "hypersend-system"))
    assert lease == rbac_needs.rules(Scope.OWN, lease="hs-hypersend-operator")


def test_kubectl_install_rbac_is_exactly_the_declared_needs() -> None:
    """deploy/operator.yaml grants the same as the chart (its Lease is `hypersend-operator`)."""
    docs = [
        d for d in yaml.safe_load_all((helm.ROOT / "deploy" / "operator.yaml").read_text()) if d
    ]
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    (lease_role,) = [d for d in docs if d["kind"] == "Role"]
    assert granted(cluster_role) == rbac_needs.rules(Scope.MANAGED) | rbac_needs.rules(
        Scope.CLUSTER
    )
    assert lease_role["metadata"]["namespace"] == "hypersend-system"
    assert granted(lease_role) == rbac_needs.rules(Scope.OWN, lease="hypersend-operator")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-election-id=hypersend-operator" in args
    assert dep["spec"]["replicas"] == 2
    assert any(d["kind"] == "PodDisruptionBudget" for d in docs)


def test_every_declared_need_says_why() -> None:
    for need in rbac_needs.NEEDS:
        assert need.why
        assert set(need.verbs) <= set(rbac_needs.ALL_VERBS)
        assert not (need.names and "create" in need.verbs), "create cannot be limited by name"


def test_service_monitor_takes_the_prometheus_selector_labels() -> None:
    objs = helm.render(
        {"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.release": "kps"}
    )
    labels = helm.one(objs, "ServiceMonitor")["metadata"]["labels"]
    assert labels["release"] == "kps"
    assert labels["app.kubernetes.io/instance"] == "hs"


def _rule_groups(name: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(
        (helm.CHART / "files" / "rules" / name).read_text()
    )["groups"]
    return groups


def test_prometheus_rule_embeds_the_rule_files() -> None:
    assert not any(o["kind"] == "PrometheusRule" for o in helm.render())
    operator_groups = _rule_groups("hypersend-operator.rules.yaml")
    objs = helm.render(
        {"metrics.prometheusRule.enabled": "true", "metrics.prometheusRule.labels.release": "kps"}
    )
    rule = helm.one(objs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == "hypersend-system"
    assert rule["spec"]["groups"] == operator_groups
    objs = helm.render(
        {"metrics.prometheusRule.enabled": "true", "metrics.prometheusRule.chatAlerts": "true"}
    )
    chat_groups = _rule_groups("hypersend-chat.rules.yaml")
    assert helm.one(objs, "PrometheusRule")["spec"]["groups"] == operator_groups + chat_groups
    # Alert templates ({{ $labels.pod }}) reach Prometheus as they are, not expanded by Helm.
    summaries = [r["annotations"]["summary"] for g in chat_groups for r in g["rules"]]
    assert any("{{ $labels.pod }}" in s for s in summaries)


def test_grafana_dashboard_config_map() -> None:
    assert not any(o["kind"] == "ConfigMap" for o in helm.render())
    objs = helm.render(
        {
            "metrics.grafanaDashboard.enabled": "true",
            "metrics.grafanaDashboard.namespace": "monitoring",
        }
    )
    cm = helm.one(objs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((helm.CHART / "dashboards" / "hypersend.json").read_text())
    assert json.loads(cm["data"]["hypersend.json"]) == shipped
