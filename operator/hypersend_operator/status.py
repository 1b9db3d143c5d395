"""Pure status logic: one function per condition, read from the children's status.

Nothing here does I/O. Each component function looks at one child object (as the API server returned
it, or None when absent) and says whether that part of the cluster is ready, still converging, or
broken, with a reason a human can act on. `summarize` folds them into the summary conditions, a
phase, and the conditions list with Kubernetes' lastTransitionTime semantics.

The summary follows the kstatus conventions (sigs.k8s.io/cli-utils `pkg/kstatus`, what Flux, kpt
and cli-utils read; docs/architecture.md, "The status contract"):

- `Reconciling` is True while the operator still has work it expects to finish by itself;
- `Stalled` is True when progress needs a human (a missing Secret, a spec the models refuse, a
  write the API server refuses, a rollout past its deadline), with that reason and message;
- `Ready` is the summary; never both `Reconciling` and `Stalled` True.

`Progressing` and `Degraded` say the same for ArgoCD and existing dashboards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hypersend_operator.builders.hpa import CONNECTIONS_METRIC
from hypersend_operator.quantity import parse_quantity

Obj = Mapping[str, Any]

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CHAT_READY = "ChatReady"
REDIS_READY = "RedisReady"
MONGO_READY = "MongoReady"
AUTOSCALING_READY = "AutoscalingReady"
RECONCILIATION_PAUSED = "ReconciliationPaused"

COMPONENT_CONDITIONS = (CHAT_READY, REDIS_READY, MONGO_READY, AUTOSCALING_READY)
# The order conditions are written in; stable so that an unchanged status compares equal.
CONDITION_ORDER = (
    READY,
    RECONCILING,
    STALLED,
    PROGRESSING,
    DEGRADED,
    *COMPONENT_CONDITIONS,
    RECONCILIATION_PAUSED,
)


class Health(Enum):
    """How a component is doing; decides how it feeds Ready / Progressing / Degraded."""

    OK = "ok"
    CONVERGING = "converging"  # not ready yet, expected to get there by itself
    FAILED = "failed"  # will not get there without someone acting on the reason


@dataclass(frozen=True)
class Check:
    """One condition as computed this pass (no timestamps: those come from `merge_conditions`)."""

    type: str
    health: Health
    reason: str
    message: str

    @property
    def status(self) -> str:
        return "True" if self.health is Health.OK else "False"


def ok(type_: str, reason: str, message: str) -> Check:
    return Check(type_, Health.OK, reason, message)


def converging(type_: str, reason: str, message: str) -> Check:
    return Check(type_, Health.CONVERGING, reason, message)


def failed(type_: str, reason: str, message: str) -> Check:
    return Check(type_, Health.FAILED, reason, message)


# --------------------------------------------------------------------------- workload helpers


def _cond(obj: Obj, type_: str) -> Obj | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def _generation_observed(obj: Obj) -> bool:
    generation = obj.get("metadata", {}).get("generation")
    observed = obj.get("status", {}).get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def deployment_health(type_: str, what: str, dep: Obj | None) -> Check:
    """Readiness of a Deployment the way `kubectl rollout status` judges it."""
    if dep is None:
        return converging(type_, "Creating", f"{what} Deployment does not exist yet")
    name = dep.get("metadata", {}).get("name", "?")
    status = dep.get("status", {})
    if not _generation_observed(dep):
        return converging(
            type_, "RollingOut", f"Deployment {name}: controller has not seen the latest spec yet"
        )
    progressing = _cond(dep, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return failed(
            type_,
            "ProgressDeadlineExceeded",
            f"Deployment {name} made no progress: {progressing.get('message', '')}".strip(),
        )
    desired = dep.get("spec", {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    ready = status.get("readyReplicas", 0)
    available = status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    if updated < desired:
        return converging(
            type_, "RollingOut", f"Deployment {name} rolling out: {updated}/{desired} updated"
        )
    if total > updated:
        return converging(
            type_,
            "RollingOut",
            f"Deployment {name} rolling out: {total - updated} old pod(s) terminating",
        )
    if available < desired or ready < desired:
        return converging(type_, "PodsNotReady", f"Deployment {name} not ready {ready}/{desired}")
    return ok(type_, "DeploymentReady", f"Deployment {name} ready {ready}/{desired}")


def statefulset_health(type_: str, what: str, sts: Obj | None) -> Check:
    if sts is None:
        return converging(type_, "Creating", f"{what} StatefulSet does not exist yet")
    name = sts.get("metadata", {}).get("name", "?")
    status = sts.get("status", {})
    if not _generation_observed(sts):
        return converging(
            type_, "RollingOut", f"StatefulSet {name}: controller has not seen the latest spec yet"
        )
    desired = sts.get("spec", {}).get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    current_rev = status.get("currentRevision")
    update_rev = status.get("updateRevision")
    updated = status.get("updatedReplicas", 0)
    if update_rev and current_rev != update_rev and updated < desired:
        return converging(
            type_, "RollingOut", f"StatefulSet {name} rolling out: {updated}/{desired} updated"
        )
    if ready < desired:
        return converging(type_, "PodsNotReady", f"StatefulSet {name} not ready {ready}/{desired}")
    return ok(type_, "StatefulSetReady", f"StatefulSet {name} ready {ready}/{desired}")


# --------------------------------------------------------------------------- secret references


@dataclass(frozen=True)
class SecretRef:
    """A user-provided Secret the cluster depends on, as the reconciler found it."""

    name: str
    key: str
    namespace: str
    exists: bool
    has_key: bool


def secret_ref_problem(type_: str, reason_prefix: str, ref: SecretRef) -> Check | None:
    """A FAILED check when a referenced Secret or its key is missing, else None."""
    if not ref.exists:
        return failed(
            type_,
            f"{reason_prefix}SecretMissing",
            f"secret {ref.name} not found in namespace {ref.namespace}; "
            f"create it with key {ref.key}",
        )
    if not ref.has_key:
        return failed(
            type_,
            f"{reason_prefix}SecretKeyMissing",
            f"secret {ref.name} in namespace {ref.namespace} has no key {ref.key}; add it",
        )
    return None


# ------------------------------------------------------------------ one function per condition


def chat_ready(deployment: Obj | None) -> Check:
    return deployment_health(CHAT_READY, "chat", deployment)


def redis_ready(mode: str, deployment: Obj | None, external: SecretRef | None) -> Check:
    if mode == "External":
        if external is None:
            return failed(REDIS_READY, "ExternalRedisNotConfigured", "redis.external is not set")
        problem = secret_ref_problem(REDIS_READY, "RedisUrl", external)
        if problem:
            return problem
        return ok(
            REDIS_READY,
            "ExternalRedisConfigured",
            f"using the Redis URL in secret {external.name} key {external.key}",
        )
    return deployment_health(REDIS_READY, "Redis", deployment)


def mongo_ready(
    mode: str,
    statefulset: Obj | None,
    atlas: SecretRef | None,
    pending_claims: Sequence[str] = (),
) -> Check:
    if mode == "Atlas":
        if atlas is None:
            return failed(MONGO_READY, "AtlasNotConfigured", "mongo.atlas is not set")
        problem = secret_ref_problem(MONGO_READY, "Atlas", atlas)
        if problem:
            return problem
        return ok(
            MONGO_READY,
            "AtlasConfigured",
            f"using the connection string in secret {atlas.name} key {atlas.key}",
        )
    check = statefulset_health(MONGO_READY, "MongoDB", statefulset)
    if check.health is not Health.OK and pending_claims:
        # The usual reason a fresh StatefulSet pod never schedules: its volume is not bound.
        names = ", ".join(pending_claims)
        return converging(
            MONGO_READY,
            "VolumeClaimPending",
            f"{check.message}: PersistentVolumeClaim {names} is Pending (no volume bound yet; "
            "check its storageClassName and that a provisioner or a matching PersistentVolume "
            "exists)",
        )
    return check


def autoscaling_ready(enabled: bool, hpa: Obj | None) -> Check:
    if not enabled:
        return ok(
            AUTOSCALING_READY, "AutoscalingDisabled", "autoscaling is off; replicas are fixed"
        )
    if hpa is None:
        return converging(
            AUTOSCALING_READY, "Creating", "HorizontalPodAutoscaler does not exist yet"
        )
    name = hpa.get("metadata", {}).get("name", "?")
    able = _cond(hpa, "AbleToScale")
    active = _cond(hpa, "ScalingActive")
    if able is None and active is None:
        return converging(
            AUTOSCALING_READY,
            "WaitingForController",
            f"HorizontalPodAutoscaler {name} has not been evaluated yet",
        )
    for c in (able, active):
        if c is not None and c.get("status") == "False":
            return failed(
                AUTOSCALING_READY,
                str(c.get("reason") or "ScalingInactive"),
                f"HorizontalPodAutoscaler {name}: {c.get('message', '')}".strip(),
            )
    current = hpa.get("status", {}).get("currentReplicas")
    desired = hpa.get("status", {}).get("desiredReplicas")
    return ok(
        AUTOSCALING_READY,
        "ScalingActive",
        f"HorizontalPodAutoscaler {name} active: {current} current, {desired} desired replicas",
    )


def paused_check() -> Check:
    return Check(
        RECONCILIATION_PAUSED,
        Health.OK,
        "PausedByAnnotation",
        'annotation hypersend.io/paused is "true"; no changes are applied. '
        "Remove it to resume reconciliation",
    )


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Summary:
    conditions: tuple[Check, ...]
    phase: str


def summarize(
    components: Sequence[Check],
    *,
    paused: bool,
    generation: int | None,
    observed_generation: int | None,
    blocking: Check | None = None,
) -> Summary:
    """Fold component checks into Ready / Progressing / Degraded and a phase.

    `observed_generation` is the generation this pass fully applied (None when the pass did not
    finish). A lag against `generation` always reads as Progressing. `blocking` is a pass-level
    problem (a spec that cannot work, an API error) that keeps the pass from finishing.
    """
    by_health = {h: [c for c in components if c.health is h] for h in Health}
    broken = list(by_health[Health.FAILED])
    if blocking is not None and blocking.health is Health.FAILED:
        broken.insert(0, blocking)
    waiting = list(by_health[Health.CONVERGING])
    if blocking is not None and blocking.health is Health.CONVERGING:
        waiting.insert(0, blocking)
    lagging = generation is not None and (
        observed_generation is None or observed_generation < generation
    )

    if broken:
        degraded = Check(DEGRADED, Health.OK, broken[0].reason, _join(broken))
    else:
        degraded = Check(DEGRADED, Health.FAILED, "AsExpected", "no component reports a failure")

    if lagging and not waiting and not broken:
        progressing = Check(
            PROGRESSING,
            Health.OK,
            "NewGeneration",
            f"generation {generation} not yet applied (observed {observed_generation})",
        )
    elif waiting:
        progressing = Check(PROGRESSING, Health.OK, waiting[0].reason, _join(waiting))
    elif lagging:
        progressing = Check(
            PROGRESSING,
            Health.OK,
            "NewGeneration",
            f"generation {generation} not yet applied (observed {observed_generation})",
        )
    else:
        progressing = Check(PROGRESSING, Health.FAILED, "AsExpected", "all changes applied")

    if not broken and not waiting and not lagging:
        ready = ok(READY, "AllComponentsReady", "chat, Redis, MongoDB and autoscaling are ready")
    elif broken:
        ready = failed(READY, broken[0].reason, _join(broken))
    else:
        reason = waiting[0].reason if waiting else "NewGeneration"
        ready = converging(READY, reason, _join(waiting) or progressing.message)

    if broken:
        stalled = Check(STALLED, Health.OK, broken[0].reason, _join(broken))
        reconciling = Check(
            RECONCILING, Health.FAILED, "Stalled", "progress needs a human: see Stalled"
        )
    else:
        stalled = Check(STALLED, Health.FAILED, "AsExpected", "nothing needs a human")
        if paused:
            reconciling = Check(
                RECONCILING,
                Health.FAILED,
                "Paused",
                "reconciliation is paused: see ReconciliationPaused",
            )
        elif progressing.health is Health.OK:
            reconciling = Check(RECONCILING, Health.OK, progressing.reason, progressing.message)
        else:
            reconciling = Check(RECONCILING, Health.FAILED, "AsExpected", "all changes applied")

    checks: list[Check] = [ready, reconciling, stalled, progressing, degraded, *components]
    if paused:
        checks.append(paused_check())

    if paused:
        phase = "Paused"
    elif broken:
        phase = "Degraded"
    elif ready.health is Health.OK:
        phase = "Ready"
    elif any(c.type == CHAT_READY and c.reason == "Creating" for c in components):
        phase = "Pending"  # nothing of the chat service exists yet
    else:
        phase = "Progressing"
    return Summary(tuple(checks), phase)


def initial_summary() -> Summary:
    """What a cluster the operator has just seen, before its first pass, reports."""
    message = "the operator is creating the cluster's resources"
    return Summary(
        (
            converging(READY, "Reconciling", message),
            Check(RECONCILING, Health.OK, "Creating", message),
            Check(STALLED, Health.FAILED, "AsExpected", "nothing needs a human"),
            Check(PROGRESSING, Health.OK, "Creating", message),
            Check(DEGRADED, Health.FAILED, "AsExpected", "no component reports a failure"),
        ),
        "Pending",
    )


def _join(checks: Iterable[Check]) -> str:
    return "; ".join(f"{c.type}: {c.message}" for c in checks)


# --------------------------------------------------------------------------- conditions list


def merge_conditions(
    previous: Sequence[Obj] | None,
    checks: Sequence[Check],
    *,
    now: str,
    observed_generation: int | None,
) -> list[dict[str, Any]]:
    """The conditions list to write: lastTransitionTime moves only when a status flips.

    Conditions not computed this pass (for example `ReconciliationPaused` after resuming) are
    dropped; their absence is the signal.
    """
    old = {c.get("type"): c for c in previous or []}
    order = {t: i for i, t in enumerate(CONDITION_ORDER)}
    result: list[dict[str, Any]] = []
    for check in sorted(checks, key=lambda c: order.get(c.type, len(order))):
        before = old.get(check.type)
        if before is not None and before.get("status") == check.status:
            transition = before.get("lastTransitionTime") or now
        else:
            transition = now
        cond: dict[str, Any] = {
            "type": check.type,
            "status": check.status,
            "reason": check.reason,
            "message": check.message,
            "lastTransitionTime": transition,
        }
        if observed_generation is not None:
            cond["observedGeneration"] = observed_generation
        result.append(cond)
    return result


def chat_summary(
    deployment: Obj | None, hpa: Obj | None, pod_metrics: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """`status.chat`: replica counts, the selector the HPA/scale use, and open connections.

    `pod_metrics` are the chat pods' `hypersend_websocket_connections` values from the custom
    metrics API (None when it could not be read): their sum is the real count. Without them the
    HPA's per-pod average times its replicas is the estimate, which overcounts while new pods
    have no sample yet."""
    if deployment is None:
        return {"replicas": 0, "readyReplicas": 0}
    spec = deployment.get("spec", {})
    st = deployment.get("status", {})
    summary: dict[str, Any] = {
        "replicas": int(spec.get("replicas", st.get("replicas", 0)) or 0),
        "readyReplicas": int(st.get("readyReplicas", 0) or 0),
        "selector": pod_selector(deployment),
    }
    if pod_metrics is not None and hpa is not None:
        summary["connections"] = connections_from_pod_metrics(pod_metrics)
    else:
        connections = connections_from_hpa(hpa)
        if connections is not None:
            summary["connections"] = connections
    return summary


def pod_selector(deployment: Obj) -> str:
    """A Deployment's matchLabels as a label selector string (what the HPA and scale read)."""
    labels = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def connections_from_pod_metrics(items: Sequence[Mapping[str, Any]]) -> int:
    """The sum of a custom metrics API MetricValueList's per-pod values."""
    return round(sum(parse_quantity(str(item.get("value", "0"))) for item in items))


def connections_from_hpa(hpa: Obj | None) -> int | None:
    """Open WebSockets estimated as the HPA's observed per-pod average x current replicas."""
    if hpa is None:
        return None
    st = hpa.get("status", {})
    for metric in st.get("currentMetrics") or []:
        pods = metric.get("pods") or {}
        if pods.get("metric", {}).get("name") == CONNECTIONS_METRIC:
            avg = parse_quantity(str(pods.get("current", {}).get("averageValue", "0")))
            return round(avg * int(st.get("currentReplicas", 0) or 0))
    return None


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` (removed keys become null)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = status_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch
