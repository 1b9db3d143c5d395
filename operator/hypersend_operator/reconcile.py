"""One reconcile pass of a HypersendCluster, in three steps.

    read   the CR (as watched), the children from the watch-fed caches (cache.py), the generated
           Secrets' values, the user's Secrets the spec names (GETs: those are not ours to watch)
    plan   pure (plan.py): desired manifests vs live objects -> writes, hand-offs, prunes
    apply  the plan's writes in waves (plan.write_waves), then the prunes; then the status (pure,
           from the objects as written)

A child is written only when its desired manifest changed or someone changed a field we own
(drift.py). Each component's health becomes a condition; `status` folds them. A failed read stops
the pass before anything is computed from it; transient API errors are retried inside `kube`, and
what is left is raised to the caller, which retries the pass.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
from collections.abc import Callable, Mapping, Sequence
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
    decode_secret_value,
    jwt_secret_name,
    jwtring,
    mongo_credentials_secret_name,
    mongo_pvc_names,
    owned_kinds,
    redis_credentials_secret_name,
    user_secret_refs,
)
from hypersend_operator.builders import labels as lb
from hypersend_operator.kube import ApiError, Kube
from hypersend_operator.plan import (
    Prune,
    Write,
    belongs_to,
    is_fleet_rollout,
    plan_children,
    prunes_for,
    write_waves,
)

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


# The Ready condition's reason while a fleet rollout waits for a slot (plan.py).
ROLLOUT_QUEUED = "RolloutQueued"


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
    queued_rollout: bool = False
    # Problems this pass is the first to report: one Warning Event each (post_events).
    warnings: list[st.Check] = field(default_factory=list)


# --------------------------------------------------------------------------- secrets

# Reasons of a pass stopped by a generated Secret (SecretProblem).
SECRET_CONFLICT = "SecretConflict"
JWT_KEY_RING_MALFORMED = "JwtKeyRingMalformed"
SECRET_UNREADABLE = "SecretUnreadable"


class SecretProblem(Exception):
    """A generated Secret the pass may neither use nor write: someone else's Secret under the
    generated name, or content the operator cannot read. Needs a human, so it becomes a
    condition and an Event (`reconcile`), not an error the pass retries. Names only: never a
    value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def conflict_message(secret_name: str, cluster: str) -> str:
    return (
        f"Secret {secret_name} exists but is not this cluster's: it has neither the labels "
        f"{lb.MANAGED_BY_KEY}={lb.MANAGED_BY} and {lb.INSTANCE}={cluster} nor an owner "
        "reference to this HypersendCluster. The operator neither reads nor writes it and "
        "creates nothing until the name is free: delete or rename that Secret, or give it those "
        "two labels to have this cluster adopt it and its keys"
    )


def _decode(secret: Mapping[str, Any] | None, key: str) -> str | None:
    if secret is None:
        return None
    try:
        return decode_secret_value(secret, key)
    except ValueError:  # binascii.Error, UnicodeDecodeError: kept, never replaced by a new value
        name = (secret.get("metadata") or {}).get("name")
        raise SecretProblem(
            SECRET_UNREADABLE,
            f"Secret {name} key {key} is not UTF-8 text; the operator does not replace a value "
            "it cannot read. Restore the value, or delete the key to have a new one generated",
        ) from None


class Reader(Protocol):
    """Reads one object, None when absent: the API server (Kube) or a cache in front of it."""

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None: ...


# Objects already read this pass (None = absent), so a child is not fetched twice.
Reads = dict[tuple[str, str, str], Obj | None]


@dataclass(frozen=True)
class SecretOwner:
    """The cluster whose generated Secrets a pass reads: a Secret of a generated name is used
    (and later written) only when it is this cluster's (plan.belongs_to)."""

    namespace: str
    name: str
    uid: str


async def _read_secret(
    reader: Reader, owner: SecretOwner, secret_name: str, reads: Reads
) -> Obj | None:
    """A generated Secret as it is now (None if absent), recorded in `reads` for the apply.
    SecretProblem when a Secret of that name is someone else's."""
    live = await reader.get("v1", "Secret", owner.namespace, secret_name)  # raises if it fails
    if live is not None and not belongs_to(live, owner.name, owner.uid):
        raise SecretProblem(SECRET_CONFLICT, conflict_message(secret_name, owner.name))
    reads[("v1", "Secret", secret_name)] = live
    return live


async def _read_or_generate(
    reader: Reader, owner: SecretOwner, secret_name: str, keys: Sequence[str], reads: Reads
) -> list[str]:
    """The values of `keys` in one Secret (one read), each generated where absent."""
    live = await _read_secret(reader, owner, secret_name, reads)
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
    reader: Reader, owner: SecretOwner, reads: Reads, rotation: JwtRotation | None
) -> str:
    """The JWT key ring's JSON: as stored, or moved from a pre-ring single key, or new; then
    acted on `rotation` if it is a request not acted on before (builders/jwtring.py).
    SecretProblem for a ring that cannot be read: its keys are never replaced (that would sign
    every user out), and nothing is built from it."""
    secret_name = jwt_secret_name(owner.name)
    live = await _read_secret(reader, owner, secret_name, reads)
    stored, legacy = _decode(live, JWT_KEYS_KEY), _decode(live, JWT_SECRET_KEY)
    if stored:
        try:
            ring = jwtring.parse_ring(stored)
        except ValueError as e:  # its message names the problem, never a key
            raise SecretProblem(
                JWT_KEY_RING_MALFORMED,
                f"Secret {secret_name} key {JWT_KEYS_KEY}: {e}. The operator does not replace "
                "keys it cannot read (that would sign every user out): restore the ring, or "
                "delete the key to have a new one generated",
            ) from None
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
    reader: Reader,
    owner: SecretOwner,
    reads: Reads | None = None,
    jwt: JwtRotation | None = None,
    *,
    mongo_in_cluster: bool = True,
    redis_in_cluster: bool = True,
) -> GeneratedSecrets:
    """The generated secret values: read from their Secrets, generated only where absent; the
    JWT key ring also rotates when `jwt` asks anew. The MongoDB and Redis credentials only when
    the spec runs them in the cluster (else their Secret is not built, nor read: the values are
    empty and no builder uses them).

    A failed read raises (never generate over a Secret we merely failed to read: that would
    rotate keys by accident); so does SecretProblem, for a Secret of a generated name that is
    someone else's or cannot be read. Values are never logged.
    """
    seen: Reads = {} if reads is None else reads
    ring = await read_or_rotate_jwt_ring(reader, owner, seen, jwt)
    # The MongoDB credentials may be older than this CR (kept under deletePolicy Retain, owned by
    # nobody): they are read back like any other, so a re-created cluster keeps its passwords.
    # A Secret from before the application user gets its password added, root's kept.
    mongo, mongo_app = "", ""
    if mongo_in_cluster:
        mongo, mongo_app = await _read_or_generate(
            reader,
            owner,
            mongo_credentials_secret_name(owner.name),
            [MONGO_PASSWORD_KEY, MONGO_APP_PASSWORD_KEY],
            seen,
        )
    redis = ""
    if redis_in_cluster:
        (redis,) = await _read_or_generate(
            reader, owner, redis_credentials_secret_name(owner.name), [REDIS_PASSWORD_KEY], seen
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


# --------------------------------------------------------------------------- applying the plan


class ChildRecorder(Protocol):
    """Where written children are recorded, so the next pass sees them before their events."""

    def record(self, obj: Obj) -> None: ...

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...


async def apply_write(kube: Kube, write: Write) -> tuple[Obj, Change | None]:
    """Apply one planned write. Returns the object as the server stored it."""
    if write.handoff is not None:
        await kube.apply(write.handoff, manager=drift.HANDOFF_MANAGER)
    applied = await _apply_taking_back_lists(kube, write.manifest, write.live)
    before = (write.live or {}).get("metadata", {}).get("resourceVersion")
    if before is not None and applied.get("metadata", {}).get("resourceVersion") == before:
        # The server found nothing to change (our comparison was stricter than SSA): not a write.
        log.debug("apply of %s %s was a no-op (%s)", write.kind, write.name, write.detail)
        return applied, None
    if write.action == "DriftCorrected":
        metrics.DRIFT_CORRECTIONS.labels(write.kind).inc()
    metrics.CHILD_WRITES.labels(write.action, write.kind).inc()
    return applied, Change(write.action, write.kind, write.name, write.detail)


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


async def apply_writes(
    kube: Kube, writes: Sequence[Write], result: Pass, recorder: ChildRecorder
) -> st.Check | None:
    """Apply the writes wave by wave (plan.write_waves), each wave's writes at once. A refused
    write stops the later waves and becomes a blocking check; the first error of a wave is
    raised after its successful writes are recorded."""
    for wave in write_waves(writes):
        outcomes = await asyncio.gather(
            *(apply_write(kube, write) for write in wave), return_exceptions=True
        )
        refused: st.Check | None = None
        error: BaseException | None = None
        for write, outcome in zip(wave, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, ApiError) and not outcome.transient:
                    refused = refused or _refused(write, outcome)
                else:
                    error = error or outcome
                continue
            obj, change = outcome
            recorder.record(obj)
            result.live[key_of(write.manifest)] = obj
            if change is not None:
                result.changes.append(change)
        if error is not None:
            raise error
        if refused is not None:
            return refused
    return None


def _refused(write: Write, e: ApiError) -> st.Check:
    """A refused write (invalid object, forbidden, immutable field) will not fix itself. The
    server's message can quote field values: never for a Secret."""
    detail = e.reason if write.kind == "Secret" else f"{e.reason}: {e.message}"
    return st.failed(
        st.READY,
        "ApplyFailed",
        f"applying {write.component} ({write.kind} {write.name}) failed: {e.code} {detail}",
    )


async def apply_prunes(
    kube: Kube, namespace: str, prunes: Sequence[Prune], recorder: ChildRecorder
) -> list[Change]:
    """Delete children the spec no longer asks for (HPA after autoscaling is turned off,
    in-cluster Redis after switching to External, ...)."""
    changes = []
    for p in prunes:
        if await kube.delete(p.api_version, p.kind, namespace, p.name):
            metrics.CHILD_WRITES.labels("Deleted", p.kind).inc()
            changes.append(Change("Deleted", p.kind, p.name, "no longer needed"))
        recorder.forget(p.api_version, p.kind, namespace, p.name)
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


def reported(previous: Mapping[str, Any], problem: st.Check) -> bool:
    """Whether the status already reports `problem` (its Ready condition has the reason and
    carries the message): its Warning Event went out with the pass that first wrote it."""
    for cond in previous.get("conditions") or []:
        if cond.get("type") == st.READY:
            return bool(
                cond.get("status") == "False"
                and cond.get("reason") == problem.reason
                and problem.message in str(cond.get("message") or "")
            )
    return False


# --------------------------------------------------------------------------- the pass


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


def connections_selector(live: Mapping[tuple[str, str, str], Obj]) -> str | None:
    """The chat pods' label selector when the HPA exists (the connection count is the HPA's
    metric), else None: nothing to ask for."""
    deployment = _find(live, "Deployment", lb.CHAT)
    if deployment is None or _find(live, "HorizontalPodAutoscaler", lb.CHAT) is None:
        return None
    return st.pod_selector(deployment)


class Connections(Protocol):
    """The chat pods' open WebSockets as the HPA sees them (cache.PodMetricCache): the last value
    read, never waited for (None: not known yet)."""

    def current(self, namespace: str, cluster: str, selector: str | None) -> list[Obj] | None: ...


class Children(Protocol):
    """The read side of the child caches (cache.ChildCache), as a pass uses it."""

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None: ...

    async def confirm(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> Obj | None: ...

    def owned_by(self, namespace: str, cluster: str, uid: str) -> list[Obj] | None: ...

    def record(self, obj: Obj) -> None: ...

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...


class _Confirming:
    """Generated Secrets: from the cache, but absence confirmed with a GET. A Secret of that name
    without our labels is invisible to the watch; generating over it would replace its keys (the
    pass stops at it instead: SecretConflict)."""

    def __init__(self, children: Children) -> None:
        self._children = children

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        return await self._children.confirm(api_version, kind, namespace, name)


@dataclass(frozen=True)
class Rollouts:
    """How this pass may start a fleet rollout (plan.py): the operator's version, and a slot
    asked for only when the plan needs one."""

    operator_version: str
    try_acquire: Callable[[], bool] = field(default=lambda: True)


async def read_live(
    children: Children, components: Sequence[Component], reads: Reads
) -> dict[tuple[str, str, str], Obj]:
    """The live object of every desired child (cache reads; what `reads` already holds is
    reused)."""
    live: dict[tuple[str, str, str], Obj] = {}
    for component in components:
        for m in component.manifests:
            key = key_of(m)
            if key in reads:
                obj = reads[key]
            else:
                obj = await children.get(
                    m["apiVersion"], m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]
                )
            if obj is not None:
                live[key] = obj
    return live


def stopped_by_secret(
    cr: Mapping[str, Any],
    spec: HypersendClusterSpec,
    children: Children,
    refs: Mapping[str, st.SecretRef],
    problem: SecretProblem,
    *,
    paused: bool,
    connections: Connections,
    now: str | None,
) -> Pass:
    """A pass stopped before it built anything by a generated Secret it may not use: nothing is
    written; the status says what a human must do next to the components as they are."""
    meta = cr["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    live = {key_of(obj): obj for obj in children.owned_by(namespace, name, meta["uid"]) or []}
    blocking = st.failed(st.READY, problem.reason, problem.message)
    status = build_status(
        cr,
        component_checks(spec, live, refs),
        live,
        paused=paused,
        applied_generation=None,
        blocking=blocking,
        now=now,
        pod_connections=connections.current(namespace, name, connections_selector(live)),
    )
    first = not reported(cr.get("status") or {}, blocking)
    return Pass(status, live=live, warnings=[blocking] if first else [])


async def read_user_secrets(
    kube: Kube, namespace: str, spec: HypersendClusterSpec
) -> tuple[dict[str, st.SecretRef], dict[str, str | None]]:
    """The user's Secrets the spec points at (checked, never modified), by component, and their
    values as stored by "name/key" (they roll the chat pods when they change)."""
    refs: dict[str, st.SecretRef] = {}
    values: dict[str, str | None] = {}
    for user_ref in user_secret_refs(spec):
        refs[user_ref.component], value = await read_secret_ref(
            kube, namespace, user_ref.ref.name, user_ref.ref.key
        )
        values[f"{user_ref.ref.name}/{user_ref.ref.key}"] = value
    return refs, values


async def reconcile(
    kube: Kube,
    children: Children,
    cr: Mapping[str, Any],
    *,
    capabilities: frozenset[str],
    rollouts: Rollouts,
    connections: Connections,
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

    # ---- read. The user's Secrets the spec points at. Generated Secrets: what exists, generated
    # only where missing; the JWT key ring rotated once per request. One that is someone else's,
    # or unreadable, stops the pass before anything is built from it.
    refs, user_values = await read_user_secrets(kube, namespace, spec)
    reads: Reads = {}
    try:
        secrets = await read_or_generate_secrets(
            _Confirming(children),
            SecretOwner(namespace, name, meta["uid"]),
            reads,
            jwt_rotation(cr, spec),
            mongo_in_cluster=spec.mongo.mode == "InCluster",
            redis_in_cluster=spec.redis.mode == "InCluster",
        )
    except SecretProblem as problem:
        stopped = stopped_by_secret(
            cr, spec, children, refs, problem, paused=paused, connections=connections, now=now
        )
        level = logging.WARNING if stopped.warnings else logging.DEBUG
        log.log(level, "%s/%s: %s: %s", namespace, name, problem.reason, problem.message)
        return stopped
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
    live = await read_live(children, components, reads)

    if paused:
        checks = component_checks(spec, live, refs, await pending_mongo_claims(kube, ctx, live))
        return Pass(
            build_status(
                cr,
                checks,
                live,
                paused=True,
                applied_generation=None,
                now=now,
                pod_connections=connections.current(namespace, name, connections_selector(live)),
            ),
            live=live,
        )

    # ---- plan (pure).
    version = rollouts.operator_version
    the_plan = plan_children(components, live, operator_version=version, rollout_allowed=True)
    fleet = any(is_fleet_rollout(w.manifest, w.live, version) for w in the_plan.writes)
    if fleet and not rollouts.try_acquire():
        the_plan = plan_children(components, live, operator_version=version, rollout_allowed=False)
    owned = children.owned_by(namespace, name, meta["uid"])
    desired = [key_of(m) for c in components for m in c.manifests]
    prunable = {k.kind for k in prunable_kinds(capabilities)}
    # Unknown while a cache has not synced: pruning waits for a pass that can see everything.
    prunes = [] if owned is None else prunes_for(desired, owned, prunable)

    # ---- apply.
    result = Pass(status={}, live=dict(the_plan.unchanged))
    blocking = await apply_writes(kube, the_plan.writes, result, children)
    if blocking is None:
        result.changes.extend(await apply_prunes(kube, namespace, prunes, children))
    queued: st.Check | None = None
    if the_plan.queued_rollouts and blocking is None:
        what = ", ".join(f"{w.kind} {w.name}" for w in the_plan.queued_rollouts)
        queued = st.converging(
            st.READY,
            ROLLOUT_QUEUED,
            f"{what}: waiting for a fleet rollout slot (other clusters are rolling out "
            f"operator {version}'s pod template)",
        )
        result.queued_rollout = True

    # ---- status (pure, from the objects as written).
    pending = await pending_mongo_claims(kube, ctx, result.live)
    checks = component_checks(spec, result.live, refs, pending)
    done = blocking is None and queued is None
    result.applied_generation = ctx.generation if done else None
    result.status = build_status(
        cr,
        checks,
        result.live,
        paused=False,
        applied_generation=result.applied_generation,
        blocking=blocking or queued,
        now=now,
        pod_connections=connections.current(namespace, name, connections_selector(result.live)),
    )
    result.ready = result.status.get("phase") == "Ready"
    return result


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"spec.{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


async def write_status(
    kube: Kube, cr: Mapping[str, Any], new_status: Mapping[str, Any]
) -> Obj | None:
    """Patch the CR's status if (and only if) it differs. The CR as written, None when not
    written (or gone)."""
    patch = st.status_patch(cr.get("status") or {}, new_status)
    if not patch:
        return None
    meta = cr["metadata"]
    return await kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], dict(patch))


async def post_events(
    kube: Kube,
    cr: Mapping[str, Any],
    changes: Sequence[Change],
    warnings: Sequence[st.Check] = (),
) -> None:
    """One Event per kind of change in this pass (Created, Updated, Restarted, DriftCorrected,
    Deleted), listing the children it touched; one Warning per problem first reported."""
    involved = {"apiVersion": API_VERSION, "kind": KIND, "metadata": cr["metadata"]}
    by_action: dict[str, list[str]] = {}
    for change in changes:
        by_action.setdefault(change.action, []).append(change.describe())
    for action, what in by_action.items():
        await kube.post_event(involved, "Normal", action, "; ".join(what))
    for problem in warnings:
        await kube.post_event(involved, "Warning", problem.reason, problem.message)


# --------------------------------------------------------------------------- deletion


# Held by clusters with `mongo.deletePolicy: Delete`, so their PVCs go before the CR does.
DATA_FINALIZER = "hypersend.io/delete-data"
# What operators before the watch-fed caches used (kopf's finalizer for its delete handler):
# still honoured, and replaced by DATA_FINALIZER on the next pass.
LEGACY_FINALIZERS = ("kopf.zalando.org/KopfFinalizerMarker",)


def deletes_data(cr: Mapping[str, Any]) -> bool:
    return bool((cr.get("spec") or {}).get("mongo", {}).get("deletePolicy") == "Delete")


def wanted_finalizers(cr: Mapping[str, Any]) -> list[str]:
    """The CR's finalizers as they should be: ours iff the data goes with the CR, no legacy ones,
    everybody else's untouched (in their order)."""
    current = list(cr.get("metadata", {}).get("finalizers") or [])
    out = [f for f in current if f != DATA_FINALIZER and f not in LEGACY_FINALIZERS]
    if deletes_data(cr) and not cr.get("metadata", {}).get("deletionTimestamp"):
        out.append(DATA_FINALIZER)
    return out


def holds_data_finalizer(cr: Mapping[str, Any]) -> bool:
    current = cr.get("metadata", {}).get("finalizers") or []
    return any(f == DATA_FINALIZER or f in LEGACY_FINALIZERS for f in current)


async def set_finalizers(kube: Kube, cr: Mapping[str, Any], finalizers: list[str]) -> Obj | None:
    """Write the CR's finalizer list; the resourceVersion makes a concurrent change a 409 (the
    pass then runs again on fresh data) instead of dropping someone's finalizer."""
    meta = cr["metadata"]
    return await kube.merge_patch(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
                "finalizers": finalizers,
            },
        }
    )


async def finalize(kube: Kube, cr: Mapping[str, Any]) -> list[str]:
    """A CR being deleted: remove its data if it asked for that, then let it go. Returns the
    PVCs removed."""
    if not holds_data_finalizer(cr):
        return []
    deleted = await delete_data(kube, cr) if deletes_data(cr) else []
    await set_finalizers(kube, cr, wanted_finalizers(cr))
    return deleted


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
