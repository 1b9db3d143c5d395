"""One reconcile pass of a HypersendCluster, readable top to bottom.

    pause -> secrets -> config -> Redis -> MongoDB -> chat -> autoscaling -> PDB -> optional parts
    -> prune -> status

Every pass computes the whole desired state (pure builders) and brings the cluster to it with
server-side apply, writing a child only when its desired manifest changed or someone changed a
field we own (see `drift`). Each step returns conditions; `status` folds them. A failed read stops
the pass before anything is computed from it; transient API errors are retried inside `kube`, and
what is left is raised to the caller (kopf retries it with backoff).
"""

from __future__ import annotations

import base64
import logging
import secrets as pysecrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from hypersend_operator import drift, metrics
from hypersend_operator import status as st
from hypersend_operator.api import (
    API_VERSION,
    KIND,
    PAUSED_ANNOTATION,
    RESTARTED_AT_ANNOTATION,
    ROTATE_JWT_ANNOTATION,
    HypersendClusterSpec,
    HypersendClusterStatus,
)
from hypersend_operator.builders import (
    JWT_KEYS_KEY,
    JWT_SECRET_KEY,
    MONGO_APP_PASSWORD_KEY,
    MONGO_PASSWORD_KEY,
    REDIS_PASSWORD_KEY,
    BuildContext,
    GeneratedSecrets,
    OwnedKind,
    build_components,
    jwt_secret_name,
    jwtring,
    mongo_credentials_secret_name,
    mongo_pvc_names,
    owned_kinds,
    redis_credentials_secret_name,
    user_secret_refs,
)
from hypersend_operator.builders import labels as lb
from hypersend_operator.builders.hpa import CONNECTIONS_METRIC
from hypersend_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def prunable_kinds(capabilities: frozenset[str]) -> list[OwnedKind]:
    """Kinds the operator may delete when the spec stops asking for them. Never Secrets (they
    hold keys) and never PVCs (data): those only go with the CR, by policy."""
    return [
        k
        for k in owned_kinds()
        if k.kind != "Secret" and (k.capability is None or k.capability in capabilities)
    ]


class Component(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def manifests(self) -> Sequence[Mapping[str, Any]]: ...


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_paused(cr: Mapping[str, Any]) -> bool:
    annotations = cr.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(PAUSED_ANNOTATION, "")).lower() == "true"


def key_of(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


@dataclass
class Change:
    """A write this pass made to a child (for Events, metrics and logs; never holds values)."""

    action: str  # Created | Updated | Restarted | DriftCorrected | Deleted
    kind: str
    name: str
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.kind} {self.name}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class Pass:
    """What one pass found and did."""

    status: Obj
    changes: list[Change] = field(default_factory=list)
    live: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    ready: bool = False
    applied_generation: int | None = None


# --------------------------------------------------------------------------- secrets


def _decode(secret: Mapping[str, Any] | None, key: str) -> str | None:
    if secret is None:
        return None
    raw = (secret.get("data") or {}).get(key)
    if raw is None:
        return None
    return base64.b64decode(raw).decode()


# Objects already read this pass (None = absent), so a child is not fetched twice.
Reads = dict[tuple[str, str, str], Obj | None]


async def _read_secret(kube: Kube, namespace: str, secret_name: str, reads: Reads) -> Obj | None:
    """A generated Secret as it is now (None if absent), recorded in `reads` for the apply."""
    live = await kube.get("v1", "Secret", namespace, secret_name)  # raises on a failed read
    reads[("v1", "Secret", secret_name)] = live
    return live


async def _read_or_generate(
    kube: Kube, namespace: str, secret_name: str, keys: Sequence[str], reads: Reads
) -> list[str]:
    """The values of `keys` in one Secret (one read), each generated where absent."""
    live = await _read_secret(kube, namespace, secret_name, reads)
    values = [_decode(live, key) for key in keys]
    return [value if value else pysecrets.token_urlsafe(32) for value in values]


@dataclass(frozen=True)
class JwtRotation:
    """A JWT key rotation asked for on the CR (ROTATE_JWT_ANNOTATION) and its timing."""

    request: str
    activation_delay: int
    token_lifetime: int


def jwt_rotation(cr: Mapping[str, Any], spec: HypersendClusterSpec) -> JwtRotation | None:
    request = (cr["metadata"].get("annotations") or {}).get(ROTATE_JWT_ANNOTATION)
    if not request:
        return None
    return JwtRotation(
        request=request,
        activation_delay=spec.chat.jwt_key_activation_delay_seconds,
        token_lifetime=jwtring.access_token_lifetime(spec.chat.env),
    )


def _new_jwt_key() -> tuple[str, str]:
    return pysecrets.token_hex(8), pysecrets.token_urlsafe(32)


async def read_or_rotate_jwt_ring(
    kube: Kube, namespace: str, name: str, reads: Reads, rotation: JwtRotation | None
) -> str:
    """The JWT key ring's JSON: as stored, or moved from a pre-ring single key, or new; then
    acted on `rotation` if it is a request not acted on before (builders/jwtring.py)."""
    live = await _read_secret(kube, namespace, jwt_secret_name(name), reads)
    stored, legacy = _decode(live, JWT_KEYS_KEY), _decode(live, JWT_SECRET_KEY)
    if stored:
        ring = jwtring.parse_ring(stored)  # raises: never replace keys we cannot read
    elif legacy:
        ring = jwtring.legacy_ring(legacy)
    else:
        # A new ring has nothing to rotate: a request already on the CR counts as acted on.
        ring = jwtring.new_ring(*_new_jwt_key(), rotation=rotation.request if rotation else None)
    if rotation is not None:
        ring = jwtring.rotate(
            ring,
            request=rotation.request,
            now=int(datetime.now(UTC).timestamp()),
            activation_delay=rotation.activation_delay,
            token_lifetime=rotation.token_lifetime,
            new_key=_new_jwt_key(),
        )
    return jwtring.ring_json(ring)


async def read_or_generate_secrets(
    kube: Kube,
    namespace: str,
    name: str,
    reads: Reads | None = None,
    jwt: JwtRotation | None = None,
) -> GeneratedSecrets:
    """The generated secret values: read from their Secrets, generated only where absent; the
    JWT key ring also rotates when `jwt` asks anew.

    A failed read raises (never generate over a Secret we merely failed to read: that would
    rotate keys by accident). Values are never logged.
    """
    seen: Reads = {} if reads is None else reads
    ring = await read_or_rotate_jwt_ring(kube, namespace, name, seen, jwt)
    # The MongoDB credentials may be older than this CR (kept under deletePolicy Retain, owned by
    # nobody): they are read back like any other, so a re-created cluster keeps its passwords.
    # A Secret from before the application user gets its password added, root's kept.
    mongo, mongo_app = await _read_or_generate(
        kube,
        namespace,
        mongo_credentials_secret_name(name),
        [MONGO_PASSWORD_KEY, MONGO_APP_PASSWORD_KEY],
        seen,
    )
    (redis,) = await _read_or_generate(
        kube, namespace, redis_credentials_secret_name(name), [REDIS_PASSWORD_KEY], seen
    )
    return GeneratedSecrets(
        jwt_keys=ring,
        mongo_root_password=mongo,
        mongo_app_password=mongo_app,
        redis_password=redis,
    )


async def read_secret_ref(
    kube: Kube, namespace: str, name: str, key: str
) -> tuple[st.SecretRef, str | None]:
    """Existence and key of a user-provided Secret, and the key's value as stored (base64;
    None if absent). It only goes into the chat pod template's hash (deployment.config_hash)."""
    secret = await kube.get("v1", "Secret", namespace, name)
    has_key = secret is not None and key in (secret.get("data") or {})
    # As stored (base64): compared, never decoded, so binary values cannot trip a pass.
    raw = (secret.get("data") or {}).get(key) if secret is not None else None
    value = raw if isinstance(raw, str) else None
    return st.SecretRef(name, key, namespace, secret is not None, has_key), value


# --------------------------------------------------------------------------- applying children


def _template_changed(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    want = desired.get("spec", {}).get("template")
    if want is None:
        return False
    return drift.first_difference(want, live.get("spec", {}).get("template", {})) is not None


async def apply_child(
    kube: Kube, manifest: Mapping[str, Any], reads: Reads | None = None
) -> tuple[Obj, Change | None]:
    """Bring one child to `manifest`; write only when it differs. Returns the live object."""
    desired = drift.with_hash(drift.normalize(manifest))
    api_version, kind, name = key_of(desired)
    namespace = desired["metadata"].get("namespace")
    if reads is not None and key_of(desired) in reads:
        live = reads.pop(key_of(desired))
    else:
        live = await kube.get(api_version, kind, namespace, name)
    if live is not None:
        where = drift.drift(desired, live)
        if where is None:
            return live, None
        hash_path = f"metadata.annotations.{drift.HASH_ANNOTATION}"
        if where.lstrip(".") != hash_path:
            action, detail = "DriftCorrected", f"{where} was changed outside the operator"
            metrics.DRIFT_CORRECTIONS.labels(kind).inc()
        elif _template_changed(desired, live):
            action, detail = "Restarted", "pod template changed; rolling the pods"
        else:
            action, detail = "Updated", "spec changed"
    else:
        action, detail = "Created", ""
    handoff = drift.replicas_handoff(desired, live)
    if handoff is not None:
        await kube.apply(handoff, manager=drift.HANDOFF_MANAGER)
    applied = await _apply_taking_back_lists(kube, desired, live)
    before = (live or {}).get("metadata", {}).get("resourceVersion")
    if before is not None and applied.get("metadata", {}).get("resourceVersion") == before:
        # The server found nothing to change (our comparison was stricter than SSA): not a write.
        log.debug("apply of %s %s was a no-op (differed at %s)", kind, name, detail)
        return applied, None
    metrics.CHILD_WRITES.labels(action, kind).inc()
    return applied, Change(action, kind, name, detail)


async def _apply_taking_back_lists(kube: Kube, desired: Obj, live: Obj | None) -> Obj:
    """Server-side apply; if the result still differs from what we declare, merge-patch first.

    SSA never removes fields other managers own, so an edited entry of a keyed list (a Service
    port changed with `kubectl patch`) would stay beside ours, or make the apply invalid (a
    duplicate port name). A JSON merge patch replaces our declared lists whole; the second
    apply then owns them again.
    """
    try:
        applied = await kube.apply(desired)
        if live is None or drift.first_difference(drift.declared_view(desired), applied) is None:
            return applied
    except ApiError as e:
        if e.code != 422 or live is None:
            raise
    await kube.merge_patch(drift.declared_view(desired))
    return await kube.apply(desired)


async def prune(
    kube: Kube,
    cr: Mapping[str, Any],
    desired: set[tuple[str, str, str]],
    capabilities: frozenset[str],
) -> list[Change]:
    """Delete children of this cluster that the spec no longer asks for (HPA after autoscaling
    is turned off, in-cluster Redis after switching to External, ...)."""
    meta = cr["metadata"]
    selector = lb.managed_selector(meta["name"])
    changes: list[Change] = []
    for owned in prunable_kinds(capabilities):
        api_version, kind = owned.api_version, owned.kind
        for obj in await kube.list(api_version, kind, meta["namespace"], selector):
            owners = obj.get("metadata", {}).get("ownerReferences") or []
            if not any(o.get("uid") == meta["uid"] for o in owners):
                continue  # same labels, but not ours: leave it alone
            if key_of(obj) in desired:
                continue
            if await kube.delete(api_version, kind, meta["namespace"], obj["metadata"]["name"]):
                metrics.CHILD_WRITES.labels("Deleted", kind).inc()
                changes.append(Change("Deleted", kind, obj["metadata"]["name"], "no longer needed"))
    return changes


# --------------------------------------------------------------------------- status


def _find(live: Mapping[tuple[str, str, str], Obj], kind: str, component: str) -> Obj | None:
    for (_, k, _), obj in live.items():
        labels = obj.get("metadata", {}).get("labels") or {}
        if k == kind and labels.get(lb.COMPONENT) == component:
            return obj
    return None


def component_checks(
    spec: HypersendClusterSpec,
    live: Mapping[tuple[str, str, str], Obj],
    refs: Mapping[str, st.SecretRef],
    pending_claims: Sequence[str] = (),
) -> list[st.Check]:
    mongo = _find(live, "StatefulSet", lb.MONGO)
    return [
        st.chat_ready(_find(live, "Deployment", lb.CHAT)),
        st.redis_ready(spec.redis.mode, _find(live, "Deployment", lb.REDIS), refs.get("redis")),
        st.mongo_ready(spec.mongo.mode, mongo, refs.get("mongo"), pending_claims),
        st.autoscaling_ready(
            spec.autoscaling.enabled, _find(live, "HorizontalPodAutoscaler", lb.CHAT)
        ),
    ]


def observed_generation(
    previous: Mapping[str, Any],
    generation: int | None,
    applied_generation: int | None,
    blocking: st.Check | None,
) -> int | None:
    """The generation the status speaks for: the one this pass fully applied, or the one it
    stopped at because progress needs a human (kstatus reads Stalled only for an observed
    generation; a lag reads as work in progress). A pass that did not finish for a reason that
    goes away by itself (paused, a transient error) keeps the previous one."""
    if applied_generation is not None:
        return applied_generation
    if blocking is not None and blocking.health is st.Health.FAILED and generation is not None:
        return int(generation)
    observed = previous.get("observedGeneration")
    return None if observed is None else int(observed)


def initial_status(cr: Mapping[str, Any], now: str | None = None) -> Obj:
    """The status a brand-new CR gets before its first pass does anything: Reconciling, not Ready.

    Without it the CR has no conditions until the first pass ends, which kstatus reads as Current
    and ArgoCD as Progressing with no reason."""
    summary = st.initial_summary()
    conditions = st.merge_conditions(
        None, summary.conditions, now=now or now_rfc3339(), observed_generation=None
    )
    model = HypersendClusterStatus.model_validate(
        {"phase": summary.phase, "conditions": conditions}
    )
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def build_status(
    cr: Mapping[str, Any],
    checks: Sequence[st.Check],
    live: Mapping[tuple[str, str, str], Obj],
    *,
    paused: bool,
    applied_generation: int | None,
    blocking: st.Check | None = None,
    pod_connections: Sequence[Obj] | None = None,
    now: str | None = None,
) -> Obj:
    """The full status document for this pass (validated against the API model)."""
    previous = cr.get("status") or {}
    generation = cr.get("metadata", {}).get("generation")
    observed = observed_generation(previous, generation, applied_generation, blocking)
    summary = st.summarize(
        checks,
        paused=paused,
        generation=generation,
        observed_generation=observed,
        blocking=blocking,
    )
    conditions = st.merge_conditions(
        previous.get("conditions"),
        summary.conditions,
        now=now or now_rfc3339(),
        observed_generation=observed,
    )
    chat = st.chat_summary(
        _find(live, "Deployment", lb.CHAT),
        _find(live, "HorizontalPodAutoscaler", lb.CHAT),
        pod_connections,
    )
    chat["ready"] = f"{chat.get('readyReplicas', 0)}/{chat.get('replicas', 0)}"
    model = HypersendClusterStatus.model_validate(
        {
            "observedGeneration": observed,
            "phase": summary.phase,
            "conditions": conditions,
            "chat": chat,
        }
    )
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- the pass


async def apply_component(
    kube: Kube, component: Component, result: Pass, reads: Reads | None = None
) -> st.Check | None:
    """Apply one component's children in order; a refused write becomes a blocking check."""
    for manifest in component.manifests:
        try:
            obj, change = await apply_child(kube, manifest, reads)
        except ApiError as e:
            if e.transient:
                raise
            # A refused write (invalid object, forbidden, immutable field) will not fix itself.
            # The server's message can quote field values: never for a Secret.
            detail = e.reason if manifest["kind"] == "Secret" else f"{e.reason}: {e.message}"
            what = f"{manifest['kind']} {manifest['metadata']['name']}"
            return st.failed(
                st.READY,
                "ApplyFailed",
                f"applying {component.name} ({what}) failed: {e.code} {detail}",
            )
        result.live[key_of(manifest)] = obj
        if change is not None:
            result.changes.append(change)
    return None


async def pending_mongo_claims(
    kube: Kube, ctx: BuildContext, live: Mapping[tuple[str, str, str], Obj]
) -> list[str]:
    """Names of the in-cluster MongoDB's PVCs still Pending, read only while it is not ready."""
    if ctx.spec.mongo.mode != "InCluster":
        return []
    sts = _find(live, "StatefulSet", lb.MONGO)
    if sts is None or st.statefulset_health(st.MONGO_READY, "", sts).health is st.Health.OK:
        return []
    pending = []
    for claim in mongo_pvc_names(ctx):
        pvc = await kube.get("v1", "PersistentVolumeClaim", ctx.namespace, claim)
        if pvc is not None and pvc.get("status", {}).get("phase") == "Pending":
            pending.append(claim)
    return pending


async def read_pod_connections(
    kube: Kube, namespace: str, live: Mapping[tuple[str, str, str], Obj]
) -> list[Obj] | None:
    """The chat pods' open WebSockets as the HPA sees them (None when there is no HPA or no
    custom metrics API to ask)."""
    deployment = _find(live, "Deployment", lb.CHAT)
    if deployment is None or _find(live, "HorizontalPodAutoscaler", lb.CHAT) is None:
        return None
    try:
        return await kube.pod_metric(namespace, CONNECTIONS_METRIC, st.pod_selector(deployment))
    except ApiError as e:
        log.debug("connections of %s unknown: %s", namespace, e)
        return None


async def observe(
    kube: Kube, manifests: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, str, str], Obj]:
    """Read the children without changing them (used while paused)."""
    live: dict[tuple[str, str, str], Obj] = {}
    for m in manifests:
        obj = await kube.get(
            m["apiVersion"], m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]
        )
        if obj is not None:
            live[key_of(m)] = obj
    return live


async def reconcile(
    kube: Kube,
    cr: Mapping[str, Any],
    *,
    capabilities: frozenset[str],
    prune_children: bool = True,
    now: str | None = None,
) -> Pass:
    """One full pass. Writes children (unless paused); the caller writes the returned status."""
    meta = cr["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    paused = is_paused(cr)

    # Spec: the CRD validates it; a spec the models still refuse (an older CRD) cannot work.
    try:
        spec = HypersendClusterSpec.model_validate(cr.get("spec") or {})
    except ValidationError as e:
        problem = st.failed(st.READY, "InvalidSpec", _validation_message(e))
        return Pass(
            build_status(
                cr, [], {}, paused=paused, applied_generation=None, blocking=problem, now=now
            )
        )

    # Secrets: read what exists, generate only what is missing; rotate only the JWT key ring,
    # once per request.
    reads: Reads = {}
    secrets = await read_or_generate_secrets(kube, namespace, name, reads, jwt_rotation(cr, spec))
    # User-provided Secrets the spec points at: checked, never modified; their values roll
    # the chat pods when they change.
    refs: dict[str, st.SecretRef] = {}
    user_values: dict[str, str | None] = {}
    for user_ref in user_secret_refs(spec):
        refs[user_ref.component], value = await read_secret_ref(
            kube, namespace, user_ref.ref.name, user_ref.ref.key
        )
        user_values[f"{user_ref.ref.name}/{user_ref.ref.key}"] = value
    ctx = BuildContext(
        name=name,
        namespace=namespace,
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        spec=spec,
        secrets=secrets,
        capabilities=capabilities,
        restarted_at=(meta.get("annotations") or {}).get(RESTARTED_AT_ANNOTATION),
        user_secret_values=user_values,
    )
    components = build_components(ctx)

    if paused:
        live = await observe(kube, [m for c in components for m in c.manifests])
        checks = component_checks(spec, live, refs, await pending_mongo_claims(kube, ctx, live))
        connections = await read_pod_connections(kube, namespace, live)
        return Pass(
            build_status(
                cr,
                checks,
                live,
                paused=True,
                applied_generation=None,
                now=now,
                pod_connections=connections,
            ),
            live=live,
        )

    # Ordered steps: secrets, config, redis, mongo, chat, autoscaling, disruption, ingress, ...
    result = Pass(status={})
    blocking: st.Check | None = None
    for component in components:
        blocking = await apply_component(kube, component, result, reads)
        if blocking is not None:
            break

    if blocking is None and prune_children:
        desired = {key_of(m) for c in components for m in c.manifests}
        result.changes.extend(await prune(kube, cr, desired, capabilities))

    pending = await pending_mongo_claims(kube, ctx, result.live)
    checks = component_checks(spec, result.live, refs, pending)
    result.applied_generation = ctx.generation if blocking is None else None
    result.status = build_status(
        cr,
        checks,
        result.live,
        paused=False,
        applied_generation=result.applied_generation,
        blocking=blocking,
        now=now,
        pod_connections=await read_pod_connections(kube, namespace, result.live),
    )
    result.ready = result.status.get("phase") == "Ready"
    return result


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


async def write_status(kube: Kube, cr: Mapping[str, Any], new_status: Mapping[str, Any]) -> bool:
    """Patch the CR's status if (and only if) it differs. True when written."""
    patch = st.status_patch(cr.get("status") or {}, new_status)
    if not patch:
        return False
    meta = cr["metadata"]
    await kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], dict(patch))
    return True


async def post_events(kube: Kube, cr: Mapping[str, Any], changes: Sequence[Change]) -> None:
    """One Event per kind of change in this pass (Created, Updated, Restarted, DriftCorrected,
    Deleted), listing the children it touched."""
    involved = {"apiVersion": API_VERSION, "kind": KIND, "metadata": cr["metadata"]}
    by_action: dict[str, list[str]] = {}
    for change in changes:
        by_action.setdefault(change.action, []).append(change.describe())
    for action, what in by_action.items():
        await kube.post_event(involved, "Normal", action, "; ".join(what))


async def delete_data(kube: Kube, cr: Mapping[str, Any]) -> list[str]:
    """On CR deletion with `mongo.deletePolicy: Delete`: remove the in-cluster MongoDB PVCs.

    Everything else goes by owner references; the Atlas Secret is never touched.
    """
    meta = cr["metadata"]
    selector = ",".join(f"{k}={v}" for k, v in lb.selector_labels(meta["name"], lb.MONGO).items())
    deleted = []
    for pvc in await kube.list("v1", "PersistentVolumeClaim", meta["namespace"], selector):
        if await kube.delete(
            "v1", "PersistentVolumeClaim", meta["namespace"], pvc["metadata"]["name"]
        ):
            deleted.append(pvc["metadata"]["name"])
    return deleted
