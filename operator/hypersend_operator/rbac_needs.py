"""Every API permission the operator uses, and why: the one table its RBAC is checked against.

The chart (charts/hypersend-operator/templates/_helpers.tpl) and deploy/operator.yaml must grant
exactly this (tests/unit/delivery/test_chart.py); tests/e2e/test_helm_rbac.py asks the real API
server (SubjectAccessReview) that each need is granted and nothing beyond it, and runs the
operator under that account through a cluster's life without a Forbidden answer.

Data only: no I/O, imported by nothing at run time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.Enum):
    MANAGED = "managed"  # in every namespace whose HypersendClusters the operator manages
    OWN = "own"  # in the operator's own namespace (the leader Lease)
    CLUSTER = "cluster"  # cluster-scoped reads, only for a cluster-wide install


@dataclass(frozen=True)
class Need:
    group: str
    resource: str
    verbs: tuple[str, ...]
    scope: Scope
    why: str
    # Restricted to these names (Role resourceNames); "create" can never be.
    names: tuple[str, ...] = ()


# Every verb RBAC knows for a resource; what a Need leaves out must be refused.
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# Server-side apply PATCHes, and creates through that PATCH (the API server then checks
# "create" too); children are read, watched to wake their parent, and deleted when pruned.
CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")
LEASE_NAME_VALUE = "<the Lease>"  # the chart's --leader-election-id, filled in by the caller

NEEDS: tuple[Need, ...] = (
    Need(
        "hypersend.io",
        "hypersendclusters",
        ("get", "list", "watch", "patch"),
        Scope.MANAGED,
        "watched; kopf patches its bookkeeping annotations and the delete-data finalizer",
    ),
    Need(
        "hypersend.io",
        "hypersendclusters/status",
        ("get", "patch"),
        Scope.MANAGED,
        "the status is merge-patched only when it changed",
    ),
    Need(
        "hypersend.io",
        "hypersendclusters/finalizers",
        ("update",),
        Scope.MANAGED,
        "children carry blockOwnerDeletion owner references to the cluster: "
        "OwnerReferencesPermissionEnforcement (OpenShift, and the local test cluster) "
        "requires update on the owner's finalizers",
    ),
    Need("", "configmaps", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("", "services", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("apps", "deployments", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("apps", "statefulsets", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("autoscaling", "horizontalpodautoscalers", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("policy", "poddisruptionbudgets", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("networking.k8s.io", "ingresses", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("networking.k8s.io", "networkpolicies", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("monitoring.coreos.com", "servicemonitors", CHILD_VERBS, Scope.MANAGED, "children"),
    Need("monitoring.coreos.com", "prometheusrules", CHILD_VERBS, Scope.MANAGED, "children"),
    Need(
        "",
        "secrets",
        ("get", "list", "watch", "create", "patch"),
        Scope.MANAGED,
        "generated Secrets applied (create + patch) and read back; user Secrets (Atlas URI, "
        "Redis URL) read by name; list + watch with the operator's label selector feed the "
        "cache of generated Secrets. Never update or delete (owner references let the GC)",
    ),
    Need(
        "",
        "persistentvolumeclaims",
        ("get", "list", "delete"),
        Scope.MANAGED,
        "a Pending MongoDB claim explains itself; removed only under mongo.deletePolicy: Delete",
    ),
    Need("", "events", ("create",), Scope.MANAGED, "one Event per kind of change in a pass"),
    Need(
        "custom.metrics.k8s.io",
        "pods/hypersend_websocket_connections",
        ("get",),
        Scope.MANAGED,
        "status.chat.connections: the chat pods' values of the HPA's metric",
    ),
    Need(
        "coordination.k8s.io",
        "leases",
        ("create",),
        Scope.OWN,
        "the leader Lease is created by the first replica",
    ),
    Need(
        "coordination.k8s.io",
        "leases",
        ("get", "update"),
        Scope.OWN,
        "the leader Lease is read and renewed (PUT with its resourceVersion)",
        names=(LEASE_NAME_VALUE,),
    ),
    Need(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        ("get", "list", "watch"),
        Scope.CLUSTER,
        "kopf's scanning notices the CRD appearing after the operator (cluster-wide only; "
        "a namespaced install turns scanning off and reads nothing cluster-wide)",
    ),
)


def rules(scope: Scope, lease: str = LEASE_NAME_VALUE) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, resourceName or "") for every permission needed in `scope`."""
    return {
        (n.group, n.resource, verb, name.replace(LEASE_NAME_VALUE, lease))
        for n in NEEDS
        if n.scope is scope
        for verb in n.verbs
        for name in (n.names or ("",))
    }
