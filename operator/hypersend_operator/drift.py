"""Pure comparison of a desired manifest with the live object: should this pass write?

The reconciler applies a child only when (a) the desired manifest changed since it was last applied
(its hash, kept in an annotation on the child, differs) or (b) the live object no longer contains
what we declare (someone edited a field we own: drift). Fields others own (an HPA's replicas,
`kubectl rollout restart`'s annotation, defaults the API server filled in) are extra in the live
object and never count as drift, because containment only looks at what we declare.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hypersend_operator.quantity import parse_quantity

HASH_ANNOTATION = "hypersend.io/desired-hash"
# Field managers: ours, and the one that holds spec.replicas while the HPA takes it over.
FIELD_MANAGER = "hypersend-operator"
HANDOFF_MANAGER = "hypersend-operator-handoff"


def json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): what copy.deepcopy does for
    manifests, at a fraction of its cost (it is on every pass's path, for every child)."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def normalize(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as the server will store it, where that matters for comparison (a copy).

    Secrets: `stringData` is write-only (the server folds it into `data`), so send `data`.
    """
    out: dict[str, Any] = json_copy(dict(manifest))
    if out.get("kind") == "Secret" and out.get("stringData"):
        data = dict(out.get("data") or {})
        for key, value in out.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        out["data"] = data
    return out


def _with_annotations(manifest: Mapping[str, Any], annotations: dict[str, str]) -> dict[str, Any]:
    """`manifest` with other annotations; only the dicts on the way are new, the rest shared."""
    meta = dict(manifest.get("metadata") or {})
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {**manifest, "metadata": meta}


def desired_hash(manifest: Mapping[str, Any]) -> str:
    """A stable hash of what we declare (the hash annotation itself excluded)."""
    annotations = dict((manifest.get("metadata") or {}).get("annotations") or {})
    clean: Mapping[str, Any] = manifest
    if HASH_ANNOTATION in annotations:
        annotations.pop(HASH_ANNOTATION)
        clean = _with_annotations(manifest, annotations)
    raw = json.dumps(clean, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:20]


def with_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` with its hash recorded in the hash annotation (sharing the rest of it)."""
    annotations = dict((manifest.get("metadata") or {}).get("annotations") or {})
    annotations[HASH_ANNOTATION] = desired_hash(manifest)
    return _with_annotations(manifest, annotations)


def _is_empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


def _scalar_equal(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    # Resource quantities come back canonicalised ("1000m" -> "1", "0.5" -> "500m").
    if isinstance(want, str | int | float) and isinstance(have, str | int | float):
        try:
            return abs(parse_quantity(str(want)) - parse_quantity(str(have))) < 1e-9
        except ValueError:
            return False
    return False


def first_difference(want: Any, have: Any, path: str = "") -> str | None:
    """The path of the first declared field the live object does not match, or None."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return path or "."
        for key, sub in want.items():
            if key not in have:
                if _is_empty(sub):
                    continue  # the server drops empty maps, lists and nulls
                return f"{path}.{key}"
            diff = first_difference(sub, have[key], f"{path}.{key}")
            if diff is not None:
                return diff
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return path
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            diff = first_difference(w, h, f"{path}[{i}]")
            if diff is not None:
                return diff
        return None
    if want is None:
        return None
    return None if _scalar_equal(want, have) else path


def declared_view(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a manifest compared with the live object (status is never ours to write)."""
    return {k: v for k, v in manifest.items() if k != "status"}


def drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """Where `live` departs from the hashed `desired`, or None when nothing needs applying."""
    live_hash = (live.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    want_hash = (desired.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if live_hash != want_hash:
        return f"metadata.annotations.{HASH_ANNOTATION}"
    return first_difference(declared_view(desired), live)


def _owns_replicas(live: Mapping[str, Any], manager: str) -> bool:
    return any(
        entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in live.get("metadata", {}).get("managedFields") or []
    )


def replicas_handoff(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The apply that keeps the current replica count when we stop declaring it, else None.

    When autoscaling is switched on, the Deployment we apply no longer sets spec.replicas. Under
    server-side apply, dropping a field only we own deletes it: the Deployment would fall to its
    default of 1 pod (closing most sockets) until the HPA acts. Applying the live value under a
    second manager first leaves the field co-owned, so our apply only gives up our share and the
    HPA's scale writes take it from there (the procedure the Kubernetes SSA docs give).
    """
    if live is None or desired.get("kind") != "Deployment":
        return None
    if "replicas" in desired.get("spec", {}) or "replicas" not in live.get("spec", {}):
        return None
    if not _owns_replicas(live, FIELD_MANAGER):
        return None
    meta = desired["metadata"]
    return {
        "apiVersion": desired["apiVersion"],
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
        "spec": {"replicas": live["spec"]["replicas"]},
    }
