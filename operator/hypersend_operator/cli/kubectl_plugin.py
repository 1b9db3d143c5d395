"""`kubectl hypersend`: status, pause, resume, restart and rotate-jwt for HypersendClusters.

kubectl finds this as the `kubectl-hypersend` executable on PATH (installed with the package's
console scripts). It talks to the API server through kubectl itself (`$KUBECTL` or `kubectl` on
PATH), so every kubeconfig, context and auth plugin kubectl understands works here too.

The formatting and the patches are pure functions; `Kubectl` is the only part doing I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = Mapping[str, Any]

RESOURCE = "hypersendclusters.hypersend.io"
PAUSED_ANNOTATION = "hypersend.io/paused"
# Each new value makes the operator add a JWT signing key (hypersend_operator.builders.jwtring).
ROTATE_JWT_ANNOTATION = "hypersend.io/jwtRotationRequestedAt"
DEFAULT_JWT_ACTIVATION_DELAY_SECONDS = 600
# The annotation `kubectl rollout restart` sets; the operator never reverts it
# (docs/architecture.md, "How a pass is triggered").
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FIELD_MANAGER = "kubectl-hypersend"
SUMMARY_CONDITIONS = ("Ready", "Progressing", "Degraded", "ReconciliationPaused")
COMPONENT_CONDITIONS = ("ChatReady", "RedisReady", "MongoReady", "AutoscalingReady")
# Labels the operator puts on the chat Deployment (hypersend_operator.builders.labels).
CHAT_SELECTOR = "app.kubernetes.io/component=chat,app.kubernetes.io/managed-by=hypersend-operator"
EVENTS_SHOWN = 10


class PluginError(Exception):
    """A problem the user can act on; printed without a traceback."""


# --------------------------------------------------------------------------- pure: formatting


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def age(value: str | None, now: datetime) -> str:
    """kubectl-style short age: 45s, 12m, 3h, 5d."""
    then = parse_time(value)
    if then is None:
        return "-"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]])
        for r in rows
    ]


def event_time(event: Obj) -> str | None:
    found: str | None = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
    )
    return found


def related_events(events: Iterable[Obj], uids: set[str], limit: int = EVENTS_SHOWN) -> list[Obj]:
    """Events about the cluster or its chat Deployment, newest last."""
    mine = [e for e in events if e.get("involvedObject", {}).get("uid") in uids]
    mine.sort(key=lambda e: parse_time(event_time(e)) or datetime.min.replace(tzinfo=UTC))
    return mine[-limit:]


def format_status(cluster: Obj, chat: Obj | None, events: Sequence[Obj], now: datetime) -> str:
    meta = cluster.get("metadata", {})
    status = cluster.get("status") or {}
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    current = observed is not None and generation is not None and observed >= generation
    lines = [
        f"HypersendCluster {meta.get('namespace')}/{meta.get('name')}",
        f"  Phase:       {status.get('phase') or 'Unknown (no status yet)'}",
        f"  Generation:  {generation} (observed {observed if observed is not None else 'none'}"
        f"{'' if current else ', operator has not caught up'})",
    ]
    if meta.get("annotations", {}).get(PAUSED_ANNOTATION) == "true":
        lines.append(f"  Paused:      yes ({PAUSED_ANNOTATION}=true; `kubectl hypersend resume`)")
    chat_status = status.get("chat") or {}
    ready = chat_status.get("readyReplicas", 0)
    desired = chat_status.get("replicas", 0)
    connections = chat_status.get("connections")
    lines.append(
        f"  Chat pods:   {ready}/{desired} ready"
        + (f", {connections} open connections" if connections is not None else "")
    )
    if chat is not None:
        lines.append(f"  Deployment:  {chat.get('metadata', {}).get('name')}")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}

    def rows(types: Sequence[str]) -> list[list[str]]:
        return [
            [
                t,
                str(conditions[t].get("status", "")),
                str(conditions[t].get("reason", "")),
                age(conditions[t].get("lastTransitionTime"), now),
                str(conditions[t].get("message", "")),
            ]
            for t in types
            if t in conditions
        ]

    header = ("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
    for title, types in (
        ("Conditions:", SUMMARY_CONDITIONS),
        ("Components:", COMPONENT_CONDITIONS),
    ):
        found = rows(types)
        lines += ["", title]
        lines += ["  " + line for line in table(header, found)] if found else ["  (none reported)"]
    lines += ["", "Events:"]
    if events:
        event_rows = [
            [
                age(event_time(e), now),
                str(e.get("type", "")),
                str(e.get("reason", "")),
                f"{e.get('involvedObject', {}).get('kind', '')}/"
                f"{e.get('involvedObject', {}).get('name', '')}",
                str(e.get("message", "")).strip(),
            ]
            for e in events
        ]
        lines += [
            "  " + line
            for line in table(("AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"), event_rows)
        ]
    else:
        lines.append("  (none)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- pure: patches


def pause_patch(paused: bool) -> dict[str, Any]:
    """Merge patch for the pause annotation; resuming removes it (null deletes in a merge patch)."""
    return {"metadata": {"annotations": {PAUSED_ANNOTATION: "true" if paused else None}}}


def restart_patch(now: datetime) -> dict[str, Any]:
    """What `kubectl rollout restart` changes: a pod-template annotation, so the pods roll."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def rotate_jwt_patch(now: datetime) -> dict[str, Any]:
    """A new rotation request: the time, to the microsecond, so two requests never look alike."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"annotations": {ROTATE_JWT_ANNOTATION: stamp}}}


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))


def chat_deployment(cluster: Obj, deployments: Iterable[Obj]) -> Obj | None:
    uid = cluster.get("metadata", {}).get("uid", "")
    owned = [d for d in deployments if owned_by(d, uid)]
    return owned[0] if len(owned) == 1 else None


# --------------------------------------------------------------------------- I/O: kubectl


@dataclass(frozen=True)
class Kubectl:
    """Runs kubectl with the user's connection flags."""

    binary: str
    global_args: tuple[str, ...]

    def run(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            [self.binary, *self.global_args, *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise PluginError(proc.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def cluster(self, name: str, namespace: str | None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        try:
            found: dict[str, Any] = self.json("get", RESOURCE, name, *ns)
        except PluginError as exc:
            if "NotFound" in str(exc) or "not found" in str(exc):
                where = f" in namespace {namespace}" if namespace else ""
                raise PluginError(f'HypersendCluster "{name}" not found{where}') from exc
            raise
        return found

    def chat(self, cluster: Obj) -> dict[str, Any] | None:
        meta = cluster["metadata"]
        selector = f"app.kubernetes.io/instance={meta['name']},{CHAT_SELECTOR}"
        listed = self.json("get", "deployments", "-n", meta["namespace"], "-l", selector)
        found = chat_deployment(cluster, listed.get("items", []))
        return dict(found) if found is not None else None

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.json("get", "events", "-n", namespace).get("items", []))

    def merge_patch(self, kind: str, name: str, namespace: str, patch: Obj) -> None:
        self.run(
            "patch", kind, name, "-n", namespace, "--type=merge",
            f"--field-manager={FIELD_MANAGER}", "-p", json.dumps(patch),
        )  # fmt: skip


# --------------------------------------------------------------------------- commands


def cmd_status(k: Kubectl, name: str, namespace: str | None) -> str:
    cluster = k.cluster(name, namespace)
    chat = k.chat(cluster)
    uids = {cluster["metadata"]["uid"]}
    if chat is not None:
        uids.add(chat["metadata"]["uid"])
    events = related_events(k.events(cluster["metadata"]["namespace"]), uids)
    return format_status(cluster, chat, events, datetime.now(UTC))


def cmd_pause(k: Kubectl, name: str, namespace: str | None, paused: bool) -> str:
    cluster = k.cluster(name, namespace)
    meta = cluster["metadata"]
    k.merge_patch(RESOURCE, meta["name"], meta["namespace"], pause_patch(paused))
    what = f"hypersendcluster {meta['namespace']}/{meta['name']}"
    return f"{what} paused: the operator applies no changes\n" if paused else f"{what} resumed\n"


def cmd_restart(k: Kubectl, name: str, namespace: str | None) -> str:
    cluster = k.cluster(name, namespace)
    chat = k.chat(cluster)
    meta = cluster["metadata"]
    if chat is None:
        raise PluginError(
            f"HypersendCluster {meta['namespace']}/{meta['name']} has no chat Deployment yet; "
            "check `kubectl hypersend status` for why"
        )
    deployment = chat["metadata"]["name"]
    k.merge_patch("deployment", deployment, meta["namespace"], restart_patch(datetime.now(UTC)))
    return f"deployment {meta['namespace']}/{deployment} restarted (chat pods roll one by one)\n"


def cmd_rotate_jwt(k: Kubectl, name: str, namespace: str | None) -> str:
    cluster = k.cluster(name, namespace)
    meta = cluster["metadata"]
    k.merge_patch(RESOURCE, meta["name"], meta["namespace"], rotate_jwt_patch(datetime.now(UTC)))
    chat = (cluster.get("spec") or {}).get("chat") or {}
    delay = chat.get("jwtKeyActivationDelaySeconds", DEFAULT_JWT_ACTIVATION_DELAY_SECONDS)
    return (
        f"hypersendcluster {meta['namespace']}/{meta['name']}: JWT key rotation requested. "
        f"The operator adds a new key now (the chat pods roll to learn it); it signs {delay} s "
        "later, and the old key keeps verifying until every token it signed has expired.\n"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl hypersend", description="Inspect and operate HypersendClusters."
    )
    p.add_argument("--kubeconfig", help="path to the kubeconfig file to use")
    p.add_argument("--context", help="kubeconfig context to use")
    p.add_argument("-n", "--namespace", help="namespace of the HypersendCluster")
    sub = p.add_subparsers(dest="command", required=True)
    for command, text in (
        ("status", "conditions, components, connections and the last events"),
        ("pause", f"stop reconciliation ({PAUSED_ANNOTATION}=true)"),
        ("resume", "resume reconciliation"),
        ("restart", "roll the chat pods, like `kubectl rollout restart`"),
        ("rotate-jwt", "add a new JWT signing key; the old one verifies until its tokens expire"),
    ):
        sp = sub.add_parser(command, help=text, description=text)
        sp.add_argument("name", help="HypersendCluster name")
        sp.add_argument("-n", "--namespace", dest="sub_namespace", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    namespace = args.sub_namespace or args.namespace
    global_args: list[str] = []
    if args.kubeconfig:
        global_args += ["--kubeconfig", args.kubeconfig]
    if args.context:
        global_args += ["--context", args.context]
    k = Kubectl(os.environ.get("KUBECTL", "kubectl"), tuple(global_args))
    try:
        if args.command == "status":
            out = cmd_status(k, args.name, namespace)
        elif args.command in ("pause", "resume"):
            out = cmd_pause(k, args.name, namespace, paused=args.command == "pause")
        elif args.command == "rotate-jwt":
            out = cmd_rotate_jwt(k, args.name, namespace)
        else:
            out = cmd_restart(k, args.name, namespace)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError:
        print("error: kubectl not found (set KUBECTL or put kubectl on PATH)", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
