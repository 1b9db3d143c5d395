"""The middle step of a pass, pure: desired manifests + live objects -> what to write.

    read (caches) -> plan (here, no I/O) -> apply (reconcile.apply_plan)

For each desired child, in reconcile order, the plan says: leave it (nothing we declare
differs), write it (Created / Updated / Restarted / DriftCorrected, with the replicas hand-off when
the HPA takes over), or hold it back (a fleet rollout waiting for a slot). It also lists the
children to prune: those of this cluster the spec no longer asks for.

A *fleet rollout* is a pod-template change to a chat Deployment last written by another operator
version: an operator upgrade that changes the template would otherwise roll every cluster at once.
Those wait for one of a few rollout slots (`rollout_allowed`); a rollout the cluster's own spec or
annotations cause (the Deployment already carries this operator's version) never waits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypersend_operator import drift
from hypersend_operator.builders import Component
from hypersend_operator.builders import labels as lb

Obj = dict[str, Any]
ChildKey = tuple[str, str, str]  # (apiVersion, kind, name)

# Which operator version last wrote a chat Deployment (fleet rollouts are told apart by it).
OPERATOR_VERSION_ANNOTATION = "hypersend.io/operator-version"
HASH_PATH = f"metadata.annotations.{drift.HASH_ANNOTATION}"


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


@dataclass(frozen=True)
class Write:
    """One child to apply. `manifest` is final (normalised, hashed)."""

    component: str
    manifest: Obj
    action: str  # Created | Updated | Restarted | DriftCorrected
    detail: str
    live: Obj | None
    handoff: Obj | None = None

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass(frozen=True)
class Prune:
    api_version: str
    kind: str
    name: str


@dataclass
class Plan:
    """Ordered writes, the live objects left as they are, prunes, and held-back rollouts."""

    writes: list[Write] = field(default_factory=list)
    unchanged: dict[ChildKey, Obj] = field(default_factory=dict)
    prunes: list[Prune] = field(default_factory=list)
    queued_rollouts: list[Write] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.writes and not self.prunes


def is_chat_deployment(manifest: Mapping[str, Any]) -> bool:
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    return manifest.get("kind") == "Deployment" and labels.get(lb.COMPONENT) == lb.CHAT


def belongs_to(obj: Mapping[str, Any], cluster: str, uid: str) -> bool:
    """Whether a live object bearing one of a cluster's child names is that cluster's own: it has
    an owner reference to the cluster, or the operator's managed-by label with the cluster's
    instance label (builders/labels.py: every child carries both labels; a MongoDB credentials
    Secret kept under deletePolicy Retain has only the labels, and still names the old uid while
    the garbage collector catches up with a re-created cluster). Anything else is someone else's
    and never written."""
    meta = obj.get("metadata") or {}
    if any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or []):
        return True
    labels = meta.get("labels") or {}
    return labels.get(lb.MANAGED_BY_KEY) == lb.MANAGED_BY and labels.get(lb.INSTANCE) == cluster


def stamp_version(manifest: Mapping[str, Any], version: str) -> Obj:
    """The chat Deployment carries the version of the operator that wrote it."""
    out = dict(manifest)
    if is_chat_deployment(manifest):
        meta = dict(out["metadata"])
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            OPERATOR_VERSION_ANNOTATION: version,
        }
        out["metadata"] = meta
    return out


def written_by(live: Mapping[str, Any]) -> str | None:
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(OPERATOR_VERSION_ANNOTATION)
    return None if value is None else str(value)


def template_changed(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    want = desired.get("spec", {}).get("template")
    if want is None:
        return False
    return drift.first_difference(want, live.get("spec", {}).get("template", {})) is not None


def is_fleet_rollout(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None, version: str
) -> bool:
    """A template change to a chat Deployment another operator version wrote."""
    return (
        live is not None
        and is_chat_deployment(desired)
        and written_by(live) != version
        and template_changed(desired, live)
    )


def write_for(component: str, manifest: Mapping[str, Any], live: Obj | None) -> Write | None:
    """The write one desired child needs against its live object, or None."""
    desired = drift.with_hash(drift.normalize(manifest))
    if live is None:
        return Write(component, desired, "Created", "", None)
    where = drift.drift(desired, live)
    if where is None:
        return None
    if where.lstrip(".") != HASH_PATH:
        action, detail = "DriftCorrected", f"{where} was changed outside the operator"
    elif template_changed(desired, live):
        action, detail = "Restarted", "pod template changed; rolling the pods"
    else:
        action, detail = "Updated", "spec changed"
    return Write(component, desired, action, detail, live, drift.replicas_handoff(desired, live))


def plan_children(
    components: Sequence[Component],
    live: Mapping[ChildKey, Obj],
    *,
    operator_version: str,
    rollout_allowed: bool,
) -> Plan:
    """The writes that bring the children to `components`, in order."""
    plan = Plan()
    for component in components:
        for manifest in component.manifests:
            stamped = stamp_version(manifest, operator_version)
            key = child_key(stamped)
            current = live.get(key)
            write = write_for(component.name, stamped, current)
            if write is None:
                assert current is not None
                plan.unchanged[key] = current
            elif not rollout_allowed and is_fleet_rollout(
                write.manifest, current, operator_version
            ):
                assert current is not None
                plan.queued_rollouts.append(write)
                plan.unchanged[key] = current
            else:
                plan.writes.append(write)
    return plan


# Writes go out in waves; the writes of one wave are independent and are sent together. What a
# pod needs (its Secrets and config), or should never run without (its NetworkPolicy), exists
# before the workloads; what refers to a workload (the HPA's target, an Ingress's backends)
# comes after it. Kinds not named here go last.
WAVES: tuple[frozenset[str], ...] = (
    frozenset({"Secret", "ConfigMap", "Service", "NetworkPolicy", "PodDisruptionBudget"}),
    frozenset({"Deployment", "StatefulSet"}),
)


def wave_of(kind: str) -> int:
    for n, kinds in enumerate(WAVES):
        if kind in kinds:
            return n
    return len(WAVES)


def write_waves(writes: Sequence[Write]) -> list[list[Write]]:
    """`writes` in waves, each wave in plan order; empty waves left out."""
    waves: list[list[Write]] = [[] for _ in range(len(WAVES) + 1)]
    for write in writes:
        waves[wave_of(write.kind)].append(write)
    return [wave for wave in waves if wave]


def prunes_for(
    desired: Iterable[ChildKey], children: Iterable[Mapping[str, Any]], prunable: set[str]
) -> list[Prune]:
    """Children of this cluster (as found in the caches) that no desired manifest names.
    Only kinds in `prunable`: never Secrets (keys) or PVCs (data)."""
    wanted = set(desired)
    out = []
    for obj in children:
        if obj["kind"] not in prunable or child_key(obj) in wanted:
            continue
        out.append(Prune(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]))
    return sorted(out, key=lambda p: (p.kind, p.name))


# --------------------------------------------------------------------------- rollouts


def deployment_rolling(dep: Mapping[str, Any]) -> bool:
    """Whether a Deployment is still replacing pods (the `kubectl rollout status` test)."""
    meta, spec, status = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status", {})
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return True
    desired = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    return bool(
        updated < desired
        or status.get("replicas", 0) > updated
        or status.get("availableReplicas", 0) < updated
    )


def clusters_rolling(
    deployments: Iterable[Mapping[str, Any]], version: str
) -> set[tuple[str, str]]:
    """(namespace, cluster) of the chat Deployments this operator version rolls right now."""
    out = set()
    for dep in deployments:
        if not is_chat_deployment(dep) or written_by(dep) != version:
            continue
        if deployment_rolling(dep):
            meta = dep["metadata"]
            out.add((meta.get("namespace", ""), (meta.get("labels") or {}).get(lb.INSTANCE, "")))
    return out


class RolloutSlots:
    """At most `limit` clusters in a fleet rollout at once (in-process bookkeeping).

    In flight: the clusters whose chat Deployment this operator version is rolling right now (as
    the caches show them, so a new leader counts its predecessor's rollouts), plus those granted a
    slot by a pass still running. A pass releases its grant when it ends: by then the Deployment
    it wrote is in the caches (reconcile records what it writes) and counts as rolling."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._granted: set[tuple[str, str]] = set()

    def try_acquire(self, cluster: tuple[str, str], rolling: set[tuple[str, str]]) -> bool:
        in_flight = rolling | self._granted
        if cluster in in_flight:
            return True
        if len(in_flight) >= self.limit:
            return False
        self._granted.add(cluster)
        return True

    def release(self, cluster: tuple[str, str]) -> None:
        self._granted.discard(cluster)
